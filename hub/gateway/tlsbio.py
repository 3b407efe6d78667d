"""TLS for the device listener, terminated with pyOpenSSL memory BIOs so devices can log in with X.509 certificates.

Azure IoT Hub lets a device authenticate with a TLS client certificate that is either
self-signed (the hub compares its SHA-1/SHA-256 thumbprint with the registered one) or
issued by a CA the operator registers at run time (the hub checks the chain itself with
``cryptography``). Python 3.11's ``ssl`` module cannot serve that: with ``CERT_OPTIONAL``
a client certificate that does not chain to a CA loaded into the context aborts the
handshake, there is no verify callback, and only the leaf certificate is exposed
(``get_unverified_chain`` arrives in 3.13). So the MQTT-over-TLS listener terminates TLS
with pyOpenSSL (PyCA's ``OpenSSL.SSL``) in memory-BIO mode, the way Twisted's
``TLSMemoryBIOProtocol`` does, under asyncio (default loop or uvloop):

    TCP transport <-> _TLSProtocol (SSL.Connection + memory BIOs) <-> _TLSTransport <-> StreamReaderProtocol

``server_context`` builds the listener's ``SSL.Context``: TLS 1.2 or later, a client
certificate asked for but not required, every certificate accepted during the handshake
(the application judges it afterwards) and no CA names in the CertificateRequest, so
devices send self-signed certificates too. ``start_tls_server`` is
``asyncio.start_server(cb, sock=..., ssl=..., ssl_handshake_timeout=...)`` for such a
context: the callback runs once the handshake has succeeded, and
``writer.get_extra_info`` answers ``peercert_chain`` (DER, leaf first, as the client sent
it), ``peercert`` (DER of the leaf, not the dict stdlib returns), ``cipher``,
``tls_version`` and ``ssl_object`` (the ``SSL.Connection``) besides the TCP transport's
``peername``, ``sockname`` and ``socket``.

Sessions are not resumed: every connection makes a full handshake and sends its whole
certificate chain again. A resumed ticket session would carry only the leaf certificate,
and OpenSSL's server-side session cache costs about 11 KB per session with a
two-certificate chain (up to 20,480 of them, 225 MB), which a hub holding tens of
thousands of devices cannot spend for the rare reconnect within minutes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto

from hub.tls import TlsError

__all__ = ["server_context", "start_tls_server"]

logger = logging.getLogger(__name__)

# SSL_read hands out at most one record (16 KiB) per call, so this only bounds one call;
# bio_read returns everything buffered up to the size asked for.
_RECV_SIZE: Final = 256 * 1024
_BIO_READ_SIZE: Final = 256 * 1024
# Large writes are encrypted and passed on in pieces so OpenSSL's output BIO stays small.
_SEND_CHUNK: Final = 256 * 1024
_SESSION_ID_CONTEXT: Final = b"fleethub-mqtts"
# The TLS 1.2 suites the stdlib offers (Python 3.11's default server context), so devices
# that reached the old listener still find a common cipher; TLS 1.3 suites are OpenSSL's.
_TLS12_CIPHERS: Final = b"@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"


def server_context(cert_file: Path, key_file: Path) -> SSL.Context:
    """A listener context: TLS 1.2+, the server chain from ``cert_file``, client certificates asked for, never required.

    Raises TlsError (``path`` set) when a file is unreadable, the key is encrypted or the
    key does not belong to the certificate.
    """
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    no_renegotiation: int = getattr(SSL, "OP_NO_RENEGOTIATION", 0)  # OpenSSL >= 1.1.0h
    context.set_options(
        SSL.OP_NO_COMPRESSION
        | no_renegotiation
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        # Resumption through tickets would drop the intermediates (see module docstring).
        | SSL.OP_NO_TICKET
    )
    context.set_cipher_list(_TLS12_CIPHERS)
    try:
        context.use_certificate_chain_file(cert_file)
    except SSL.Error as exc:
        raise TlsError(f"{cert_file} is not a readable PEM certificate chain: {exc}", path=cert_file) from exc
    # Loaded through cryptography: OpenSSL would prompt on the terminal for an encrypted key.
    key = _load_private_key(key_file)
    try:
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error as exc:
        raise TlsError(f"{key_file} is not the key of {cert_file}", path=key_file) from exc
    # VERIFY_PEER without VERIFY_FAIL_IF_NO_PEER_CERT: a certificate is asked for, devices
    # that log in with SAS tokens send none. No client CA list is set, so the request names
    # no CAs and clients send self-signed certificates as well.
    context.set_verify(SSL.VERIFY_PEER, _accept_any_certificate)
    # Needed with VERIFY_PEER: without it OpenSSL fails handshakes that try to resume.
    context.set_session_id(_SESSION_ID_CONTEXT)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)  # see the module docstring
    return context


def _load_private_key(
    path: Path,
) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsError(f"{path} is not a readable unencrypted PEM private key: {exc}", path=path) from exc
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    ):
        raise TlsError(f"{path} holds a {type(key).__name__}, which cannot sign a TLS handshake", path=path)
    return key


def _accept_any_certificate(
    connection: SSL.Connection, certificate: crypto.X509, error_number: int, depth: int, ok: int
) -> bool:
    # The hub judges the certificate after the handshake (thumbprint or registered CA);
    # refusing here would only end the handshake with an alert and no reason to report.
    return True


async def start_tls_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    *,
    sock: socket.socket,
    context: SSL.Context,
    handshake_timeout: float,
    backlog: int = 100,
    limit: int = 2**16,
) -> asyncio.Server:
    """Serve TLS on ``sock``; ``client_connected_cb(reader, writer)`` runs for each completed handshake.

    Connections whose handshake fails or does not finish within ``handshake_timeout``
    seconds are closed without reaching the callback (logged at DEBUG).
    """
    if handshake_timeout <= 0:
        raise ValueError(f"handshake_timeout must be positive, not {handshake_timeout}")
    loop = asyncio.get_running_loop()

    def stream_protocol() -> asyncio.Protocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    def tls_protocol() -> _TLSProtocol:
        return _TLSProtocol(context, stream_protocol, handshake_timeout, loop)

    return await loop.create_server(tls_protocol, sock=sock, backlog=backlog)


class _State(enum.Enum):
    HANDSHAKING = enum.auto()
    OPEN = enum.auto()
    CLOSING = enum.auto()  # the TCP transport was told to close or abort
    CLOSED = enum.auto()  # the TCP transport reported connection_lost


class _TLSProtocol(asyncio.Protocol):
    """The TCP side: feeds ciphertext into OpenSSL and hands plaintext to the application protocol."""

    __slots__ = (
        "_app",
        "_app_factory",
        "_app_lost",
        "_chain",
        "_conn",
        "_failure",
        "_handshake_timeout",
        "_loop",
        "_peername",
        "_state",
        "_tcp",
        "_timer",
        "_transport",
        "_writing_paused",
    )

    def __init__(
        self,
        context: SSL.Context,
        app_factory: Callable[[], asyncio.Protocol],
        handshake_timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._app_factory = app_factory
        self._handshake_timeout = handshake_timeout
        self._loop = loop
        self._state = _State.HANDSHAKING
        self._conn = SSL.Connection(context, None)
        self._conn.set_accept_state()
        self._tcp: asyncio.Transport | None = None
        self._peername: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._app: asyncio.Protocol | None = None
        self._app_lost = False
        self._transport: _TLSTransport | None = None
        self._writing_paused = False
        self._failure: Exception | None = None
        self._chain: tuple[bytes, ...] | None = None

    # -- TCP transport callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = cast(asyncio.Transport, transport)
        self._peername = transport.get_extra_info("peername")
        self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._state is _State.HANDSHAKING:
            self._conn.bio_write(data)  # a memory BIO takes everything
            self._continue_handshake()
        elif self._state is _State.OPEN:
            self._conn.bio_write(data)
            self._read_records()
        # CLOSING: nothing more is read once we close; late bytes are dropped.

    def eof_received(self) -> bool:
        if self._state is _State.HANDSHAKING:
            logger.debug("TLS client %s closed the connection during the handshake", self._peername)
            self._end_handshake()
            self._state = _State.CLOSING
            self.tcp_transport().close()
        elif self._state is _State.OPEN:
            # A FIN without close_notify: every complete record has been delivered already and
            # MQTT frames its own packets, so this reads as a plain end of stream (sslproto agrees).
            self._app_eof()
            self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_handshake()
        was_open = self._app is not None
        self._state = _State.CLOSED
        if not was_open:
            if exc is not None:
                logger.debug("TLS client %s went away during the handshake: %s", self._peername, exc)
            return
        if not self._app_lost:
            self._app_lost = True
            app = self._app
            assert app is not None
            try:
                app.connection_lost(exc if exc is not None else self._failure)
            except Exception:
                logger.exception("TLS application protocol for %s failed in connection_lost", self._peername)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._app is not None and not self._app_lost:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._app is not None and not self._app_lost:
            self._app.resume_writing()

    # -- handshake ---------------------------------------------------------------------

    def _continue_handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except SSL.Error as exc:
            self._flush()  # the alert tells the client why
            logger.debug("TLS handshake with %s failed: %s", self._peername, exc)
            self._end_handshake()
            self._state = _State.CLOSING
            self.tcp_transport().close()
            return
        self._end_handshake()
        self._flush()  # Finished (TLS 1.2) or the session ticket (TLS 1.3)
        self._state = _State.OPEN
        self._start_app()
        if self._state is _State.OPEN:
            # The client's first records (MQTT CONNECT) often come with its Finished.
            self._read_records()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state is _State.HANDSHAKING:
            logger.debug("TLS handshake with %s timed out after %s s", self._peername, self._handshake_timeout)
            self._state = _State.CLOSING
            self.tcp_transport().abort()

    def _end_handshake(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start_app(self) -> None:
        self._transport = _TLSTransport(self)
        app = self._app = self._app_factory()
        try:
            app.connection_made(self._transport)
            if self._writing_paused:
                app.pause_writing()
        except Exception as exc:
            self._app_failed("connection_made", exc)

    # -- incoming ----------------------------------------------------------------------

    def _read_records(self) -> None:
        conn = self._conn
        chunks: list[bytes] = []
        eof = False
        failure: SSL.Error | None = None
        while True:
            try:
                chunks.append(conn.recv(_RECV_SIZE))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify
                eof = True
                break
            except SSL.Error as exc:
                failure = exc
                break
        app = self._app
        assert app is not None
        if chunks:
            try:
                app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception as exc:
                self._app_failed("data_received", exc)
                return
        if self._state is not _State.OPEN:  # the application closed in data_received
            return
        if failure is not None:
            logger.debug("TLS connection with %s failed: %s", self._peername, failure)
            self._flush()  # the alert, if OpenSSL made one
            self._abort(ConnectionResetError(f"TLS error: {failure}"))
        elif eof:
            self._app_eof()
            self.close()
        else:
            self._flush()  # e.g. the answer to a TLS 1.3 KeyUpdate

    def _app_eof(self) -> None:
        app = self._app
        assert app is not None
        try:
            app.eof_received()  # the answer does not matter: TLS has no half-close
        except Exception as exc:
            self._app_failed("eof_received", exc)

    def _app_failed(self, method: str, exc: Exception) -> None:
        logger.error("TLS application protocol for %s failed in %s", self._peername, method, exc_info=exc)
        self._abort(exc)

    # -- outgoing ----------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state is not _State.OPEN or not data:
            return  # like sslproto, writes after close are dropped
        conn = self._conn
        try:
            if len(data) <= _SEND_CHUNK:
                sent = conn.send(data)
                if sent < len(data):
                    self._send_rest(memoryview(data).cast("B")[sent:])
            else:
                self._send_rest(memoryview(data).cast("B"))
        except SSL.Error as exc:
            logger.debug("TLS connection with %s failed while sending: %s", self._peername, exc)
            self._abort(ConnectionResetError(f"TLS error: {exc}"))
            return
        self._flush()

    def _send_rest(self, view: memoryview) -> None:
        while view:
            sent = self._conn.send(view[:_SEND_CHUNK])
            view = view[sent:]
            if view:
                self._flush()

    def _flush(self) -> None:
        """Pass everything OpenSSL has encrypted to the TCP transport in one write."""
        conn = self._conn
        try:
            data = conn.bio_read(_BIO_READ_SIZE)
        except SSL.WantReadError:
            return
        if len(data) < _BIO_READ_SIZE:  # a memory BIO gives all it has, so it is empty now
            self.tcp_transport().write(data)
            return
        chunks = [data]
        while True:
            try:
                data = conn.bio_read(_BIO_READ_SIZE)
            except SSL.WantReadError:
                break
            chunks.append(data)
            if len(data) < _BIO_READ_SIZE:
                break
        self.tcp_transport().writelines(chunks)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """close_notify (best effort), then close TCP once its buffer is flushed; no wait for the peer's."""
        if self._state is not _State.OPEN:
            return
        self._state = _State.CLOSING
        try:
            self._conn.shutdown()
        except SSL.Error as exc:
            logger.debug("TLS close_notify to %s failed: %s", self._peername, exc)
        else:
            self._flush()
        self.tcp_transport().close()

    def _abort(self, failure: Exception | None) -> None:
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        self._state = _State.CLOSING
        self._failure = failure
        self.tcp_transport().abort()

    def abort(self) -> None:
        self._abort(None)

    # -- for _TLSTransport -------------------------------------------------------------

    def tcp_transport(self) -> asyncio.Transport:
        assert self._tcp is not None, "connection_made has not run"
        return self._tcp

    def extra_info(self, name: str, default: Any) -> Any:
        if name == "peercert_chain":
            return list(self._peer_chain())
        if name == "peercert":
            chain = self._peer_chain()
            return chain[0] if chain else None
        if name == "cipher":
            cipher = self._conn.get_cipher_name()
            return None if cipher is None else (cipher, self._conn.get_cipher_version(), self._conn.get_cipher_bits())
        if name == "tls_version":
            return self._conn.get_protocol_version_name()
        if name == "ssl_object":
            return self._conn
        return self.tcp_transport().get_extra_info(name, default)

    def _peer_chain(self) -> tuple[bytes, ...]:
        if self._chain is None:
            # On the server side OpenSSL keeps the leaf apart from the rest of what was sent.
            leaf = self._conn.get_peer_certificate(as_cryptography=True)
            rest = self._conn.get_peer_cert_chain(as_cryptography=True) or []
            certs = [] if leaf is None else [leaf, *rest]
            self._chain = tuple(cert.public_bytes(serialization.Encoding.DER) for cert in certs)
        return self._chain

    def is_closing(self) -> bool:
        return self._state is not _State.OPEN

    def is_closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def app(self) -> asyncio.Protocol | None:
        return self._app

    @app.setter
    def app(self, protocol: asyncio.Protocol) -> None:
        self._app = protocol


class _TLSTransport(asyncio.Transport):
    """What the application protocol sees: plaintext in and out, flow control from the TCP transport."""

    __slots__ = ("_tls",)

    def __init__(self, tls: _TLSProtocol) -> None:
        super().__init__()
        self._tls = tls

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._tls.extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._tls.app = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        app = self._tls.app
        assert app is not None
        return app

    def is_closing(self) -> bool:
        return self._tls.is_closing()

    def close(self) -> None:
        self._tls.close()

    def abort(self) -> None:
        self._tls.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        self._tls.write(data.cast("B") if isinstance(data, memoryview) else data)

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot be half-closed")

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        # Everything written is encrypted and handed to TCP at once; only TCP buffers.
        return self._tls.tcp_transport().get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._tls.tcp_transport().get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tls.tcp_transport().set_write_buffer_limits(high, low)

    def is_reading(self) -> bool:
        return not self._tls.is_closing() and self._tls.tcp_transport().is_reading()

    def pause_reading(self) -> None:
        if not self._tls.is_closed():
            self._tls.tcp_transport().pause_reading()

    def resume_reading(self) -> None:
        if not self._tls.is_closed():
            self._tls.tcp_transport().resume_reading()
