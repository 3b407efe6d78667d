"""The pyOpenSSL TLS listener on real sockets: client certificates, flow control, closing and hostile peers.

Each scenario runs on a fresh loop of its own, once on asyncio's and once on uvloop's
(``run`` below): pytest-asyncio 1.x only chooses loops through a conftest hook, and the
loop is the thing under test here. The loop's exception handler records every
"Exception in callback" / "Task exception was never retrieved" and the test fails on any.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from hub.gateway import tlsbio
from hub.gateway.tlsbio import server_context, start_tls_server
from hub.tls import TlsError

try:
    import uvloop
except ImportError:  # Windows
    uvloop = None  # type: ignore[assignment]

HOST = "127.0.0.1"
SCENARIO_TIMEOUT = 30.0
WAIT = 10.0  # generous bound for anything that should happen "soon"
BIG = 4 * 2**20
T = TypeVar("T")

# -- certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    server_cert: Path
    server_key: Path
    self_signed_cert: Path
    self_signed_key: Path
    self_signed_der: bytes
    chain_cert: Path  # leaf, then intermediate; the root is known to nobody
    chain_key: Path
    leaf_der: bytes
    intermediate_der: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, *items: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    blobs = [
        item.public_bytes(serialization.Encoding.PEM)
        if isinstance(item, x509.Certificate)
        else item.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for item in items
    ]
    path.write_bytes(b"".join(blobs))
    return path


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("localhost", server_key, server=True)
    device_key = ec.generate_private_key(ec.SECP256R1())
    device = _certificate("self-signed-device", device_key)
    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("unknown root", root_key, ca=True)
    inter = _certificate("intermediate", inter_key, issuer=root, issuer_key=root_key, ca=True)
    leaf = _certificate("chained-device", leaf_key, issuer=inter, issuer_key=inter_key)
    return Pki(
        server_cert=_write(folder / "server.pem", server),
        server_key=_write(folder / "server-key.pem", server_key),
        self_signed_cert=_write(folder / "device.pem", device),
        self_signed_key=_write(folder / "device-key.pem", device_key),
        self_signed_der=_der(device),
        chain_cert=_write(folder / "chain.pem", leaf, inter),
        chain_key=_write(folder / "chain-key.pem", leaf_key),
        leaf_der=_der(leaf),
        intermediate_der=_der(inter),
    )


@pytest.fixture(scope="module")
def context(pki: Pki) -> SSL.Context:
    return server_context(pki.server_cert, pki.server_key)


def client_context(
    pki: Pki, cert: Path | None = None, key: Path | None = None, version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.server_cert))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


# -- loops -----------------------------------------------------------------------------

LOOPS = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(
        uvloop.new_event_loop if uvloop else None,
        id="uvloop",
        marks=pytest.mark.skipif(uvloop is None, reason="uvloop is not installed"),
    ),
]
TLS_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="tls12"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="tls13"),
]

Run = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Run[Any]:
    """Run a scenario on a new loop of the parametrised kind; fail on anything sent to its exception handler."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = request.param

    def run_scenario(scenario: Coroutine[Any, Any, T]) -> T:
        problems: list[dict[str, Any]] = []

        async def guarded() -> T:
            asyncio.get_running_loop().set_exception_handler(lambda _loop, context: problems.append(context))
            async with asyncio.timeout(SCENARIO_TIMEOUT):
                return await scenario

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(guarded())
        assert problems == []
        return result

    return run_scenario


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"not within {WAIT} s: {what}")


# -- the server under test -------------------------------------------------------------


@dataclass
class Connection:
    """One accepted connection as the application saw it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lost: list[Exception | None] = field(default_factory=list)  # connection_lost calls
    pauses: int = 0  # pause_writing calls
    notes: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Connection], Awaitable[None]]


async def echo(conn: Connection) -> None:
    while data := await conn.reader.read(65536):
        conn.writer.write(data)
        await conn.writer.drain()
    conn.writer.close()
    await conn.writer.wait_closed()


class TlsServer:
    """start_tls_server on 127.0.0.1:0; records every connection and waits for its handler at exit."""

    def __init__(self, context: SSL.Context, handler: Handler = echo, *, handshake_timeout: float = WAIT) -> None:
        self.context = context
        self.handler = handler
        self.handshake_timeout = handshake_timeout
        self.connections: asyncio.Queue[Connection] = asyncio.Queue()
        self.accepted = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failures: list[BaseException] = []

    async def __aenter__(self) -> TlsServer:
        sock = socket.create_server((HOST, 0))
        self.port = sock.getsockname()[1]
        self._server = await start_tls_server(
            self._connected, sock=sock, context=self.context, handshake_timeout=self.handshake_timeout
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=WAIT)
        for failure in self._failures:
            raise failure

    async def next_connection(self) -> Connection:
        async with asyncio.timeout(WAIT):
            return await self.connections.get()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        conn = Connection(reader, writer)
        protocol: Any = writer.transport.get_protocol()
        connection_lost, pause_writing = protocol.connection_lost, protocol.pause_writing

        def count_lost(exc: Exception | None) -> None:
            conn.lost.append(exc)
            connection_lost(exc)

        def count_pause() -> None:
            conn.pauses += 1
            pause_writing()

        protocol.connection_lost, protocol.pause_writing = count_lost, count_pause
        self.connections.put_nowait(conn)
        try:
            await self.handler(conn)
        except BaseException as exc:
            self._failures.append(exc)
            writer.transport.abort()


@contextlib.asynccontextmanager
async def tls_client(
    port: int, ctx: ssl.SSLContext, sock: socket.socket | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    if sock is None:
        reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname="localhost")
    else:
        reader, writer = await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="localhost")
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the connection ends, whether by EOF or by a reset."""
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def raw_client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def blocking_round_trip(
    port: int, ctx: ssl.SSLContext, payload: bytes, session: ssl.SSLSession | None = None
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """A plain blocking stdlib client: send, read the echo, end with close_notify both ways."""
    with (
        socket.create_connection((HOST, port), timeout=WAIT) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            chunk = tls.recv(65536)
            assert chunk, "EOF before the echo"
            echoed += chunk
        result = echoed, tls.session, tls.session_reused
        tls.unwrap().close()
    return result


# -- the module's surface --------------------------------------------------------------


def test_public_names() -> None:
    assert sorted(tlsbio.__all__) == ["server_context", "start_tls_server"]


def test_server_context_refuses_an_encrypted_key(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsError, match="unencrypted") as caught:
        server_context(pki.server_cert, encrypted)
    assert caught.value.path == encrypted


def test_server_context_refuses_a_key_of_another_certificate(pki: Pki) -> None:
    with pytest.raises(TlsError, match="is not the key of") as caught:
        server_context(pki.server_cert, pki.self_signed_key)
    assert caught.value.path == pki.self_signed_key


def test_server_context_refuses_a_missing_certificate(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TlsError) as caught:
        server_context(tmp_path / "absent.pem", pki.server_key)
    assert caught.value.path == tmp_path / "absent.pem"


# -- handshakes and client certificates ------------------------------------------------


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_echo_without_client_certificate(
    run: Run[None], context: SSL.Context, pki: Pki, version: ssl.TLSVersion
) -> None:
    async def scenario() -> None:
        async with (
            TlsServer(context) as server,
            tls_client(server.port, client_context(pki, version=version)) as (
                reader,
                writer,
            ),
        ):
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            conn = await server.next_connection()
            info = conn.writer.get_extra_info
            assert info("peercert_chain") == []
            assert info("peercert") is None
            expected_version = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            assert info("tls_version") == expected_version
            name, cipher_version, bits = info("cipher")
            assert (name, cipher_version) == (writer.get_extra_info("cipher")[0], expected_version)
            assert bits >= 128
            assert isinstance(info("ssl_object"), SSL.Connection)
            assert info("peername") == writer.get_extra_info("sockname")
            assert info("sockname") == (HOST, server.port)
            assert info("socket") is not None
            assert info("no such thing", "fallback") == "fallback"
            assert conn.writer.can_write_eof() is False
            with pytest.raises(NotImplementedError):
                conn.writer.write_eof()
            with pytest.raises(TypeError):
                conn.writer.write("text")  # type: ignore[arg-type]

    run(scenario())


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_a_self_signed_client_certificate_arrives(
    run: Run[None], context: SSL.Context, pki: Pki, version: ssl.TLSVersion
) -> None:
    async def scenario() -> None:
        ctx = client_context(pki, pki.self_signed_cert, pki.self_signed_key, version)
        async with TlsServer(context) as server, tls_client(server.port, ctx) as (reader, writer):
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            conn = await server.next_connection()
            assert conn.writer.get_extra_info("peercert_chain") == [pki.self_signed_der]
            assert conn.writer.get_extra_info("peercert") == pki.self_signed_der

    run(scenario())


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_a_client_chain_arrives_leaf_first(
    run: Run[None], context: SSL.Context, pki: Pki, version: ssl.TLSVersion
) -> None:
    async def scenario() -> None:
        ctx = client_context(pki, pki.chain_cert, pki.chain_key, version)
        async with TlsServer(context) as server, tls_client(server.port, ctx) as (reader, writer):
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            conn = await server.next_connection()
            assert conn.writer.get_extra_info("peercert_chain") == [pki.leaf_der, pki.intermediate_der]
            assert conn.writer.get_extra_info("peercert") == pki.leaf_der

    run(scenario())


@pytest.mark.parametrize("version", TLS_VERSIONS)
def test_sessions_are_not_resumed_and_every_connection_shows_the_whole_chain(
    run: Run[None], context: SSL.Context, pki: Pki, version: ssl.TLSVersion
) -> None:
    async def scenario() -> None:
        ctx = client_context(pki, pki.chain_cert, pki.chain_key, version)
        async with TlsServer(context) as server:
            _, session, reused = await asyncio.to_thread(blocking_round_trip, server.port, ctx, b"first")
            assert not reused
            echoed, _, reused = await asyncio.to_thread(blocking_round_trip, server.port, ctx, b"again", session)
            assert (echoed, reused) == (b"again", False)
            for _ in range(2):
                conn = await server.next_connection()
                assert conn.writer.get_extra_info("peercert_chain") == [pki.leaf_der, pki.intermediate_der]

    run(scenario())


def test_records_that_come_with_the_client_finished_reach_the_application(
    run: Run[None], context: SSL.Context, pki: Pki
) -> None:
    """TLS 1.3 clients may send their first record (MQTT CONNECT) in the segment that ends the handshake."""

    async def scenario() -> None:
        async with TlsServer(context) as server, raw_client(server.port) as (reader, writer):
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            ctx = client_context(pki, pki.self_signed_cert, pki.self_signed_key, ssl.TLSVersion.TLSv1_3)
            tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")

            async def receive() -> None:
                chunk = await reader.read(65536)
                assert chunk, "the server closed the connection"
                incoming.write(chunk)

            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
                    await receive()
            tls.write(b"ping")
            writer.write(outgoing.read())  # certificate, Finished and "ping" in one write
            echoed = b""
            while len(echoed) < 4:
                try:
                    echoed += tls.read(4 - len(echoed))
                except ssl.SSLWantReadError:
                    await receive()
            assert echoed == b"ping"
            conn = await server.next_connection()
            assert conn.writer.get_extra_info("peercert_chain") == [pki.self_signed_der]

    run(scenario())


def test_a_pyopenssl_client_sends_its_self_signed_certificate(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    def talk(port: int) -> bytes:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.use_certificate_chain_file(pki.self_signed_cert)
        ctx.use_privatekey_file(pki.self_signed_key)
        with socket.create_connection((HOST, port)) as raw:
            conn = SSL.Connection(ctx, raw)
            conn.set_connect_state()
            conn.set_tlsext_host_name(b"localhost")
            conn.do_handshake()
            # The CertificateRequest names no CA, so nothing tells a client to hold back a self-signed certificate.
            assert conn.get_client_ca_list(as_cryptography=True) == []
            conn.sendall(b"ping")
            echoed = conn.recv(4)
            conn.shutdown()
        return echoed

    async def scenario() -> None:
        async with TlsServer(context) as server:
            assert await asyncio.to_thread(talk, server.port) == b"ping"
            conn = await server.next_connection()
            assert conn.writer.get_extra_info("peercert_chain") == [pki.self_signed_der]

    run(scenario())


def test_a_paho_client_sends_its_certificate(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    """paho wraps its socket with stdlib ssl; the CONNECT packet it sends first comes through decrypted."""

    def connect(port: int) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tlsbio-paho")
        client.tls_set(
            ca_certs=str(pki.server_cert), certfile=str(pki.self_signed_cert), keyfile=str(pki.self_signed_key)
        )
        client.connect(HOST, port)  # TCP, TLS handshake and CONNECT, all before it returns
        return client

    async def first_packet(conn: Connection) -> None:
        conn.notes["first byte"] = await conn.reader.readexactly(1)
        conn.writer.close()
        await conn.writer.wait_closed()

    async def scenario() -> None:
        async with TlsServer(context, first_packet) as server:
            client = await asyncio.to_thread(connect, server.port)
            try:
                conn = await server.next_connection()
                await eventually(lambda: bool(conn.lost), "the server closed the connection")
            finally:
                client.socket().close()
        assert conn.notes["first byte"] == b"\x10"  # MQTT CONNECT
        assert conn.writer.get_extra_info("peercert_chain") == [pki.self_signed_der]

    run(scenario())


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_a_node_tls_client_sends_its_certificate(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    script = """
    const tls = require("tls"), fs = require("fs"), env = process.env;
    const socket = tls.connect({
        host: env.HOST, port: Number(env.PORT), servername: "localhost",
        ca: fs.readFileSync(env.CA), cert: fs.readFileSync(env.CERT), key: fs.readFileSync(env.KEY),
    }, () => socket.write("ping"));
    socket.on("data", (data) => { process.stdout.write(data); socket.end(); });
    socket.on("error", (error) => { console.error(error); process.exit(1); });
    """

    async def scenario() -> None:
        async with TlsServer(context) as server:
            env = {
                **os.environ,
                "HOST": HOST,
                "PORT": str(server.port),
                "CA": str(pki.server_cert),
                "CERT": str(pki.self_signed_cert),
                "KEY": str(pki.self_signed_key),
            }
            node = await asyncio.create_subprocess_exec(
                "node", "-e", script, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await node.communicate()
            assert (node.returncode, out) == (0, b"ping"), err.decode()
            conn = await server.next_connection()
            assert conn.writer.get_extra_info("peercert_chain") == [pki.self_signed_der]

    run(scenario())


# -- flow control ----------------------------------------------------------------------


def test_server_writes_wait_for_a_slow_client(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    payload = os.urandom(BIG)

    async def send_everything(conn: Connection) -> None:
        assert await conn.reader.readexactly(2) == b"go"
        # Small kernel buffers on both ends, so the 4 MiB cannot hide in them.
        conn.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        transport = conn.writer.transport
        most = 0
        for start in range(0, BIG, 65536):
            conn.writer.write(payload[start : start + 65536])
            await conn.writer.drain()
            most = max(most, transport.get_write_buffer_size())
        conn.notes["most buffered after drain"] = most
        conn.notes["high water"] = transport.get_write_buffer_limits()[1]
        conn.writer.close()
        await conn.writer.wait_closed()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with TlsServer(context, send_everything) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            sock.setblocking(False)
            await loop.sock_connect(sock, (HOST, server.port))
            async with tls_client(server.port, client_context(pki), sock=sock) as (reader, writer):
                writer.write(b"go")
                conn = await server.next_connection()
                # Not reading yet: the server's transport fills up and must hold the handler back.
                await eventually(lambda: conn.pauses > 0, "the server's writer was paused")
                received = await reader.read()  # to EOF: the handler closes when done
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert conn.notes["most buffered after drain"] <= conn.notes["high water"]
        assert conn.lost == [None]

    run(scenario())


def test_client_writes_wait_for_a_slow_server(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    payload = os.urandom(BIG)

    async def read_late(conn: Connection) -> None:
        assert await conn.reader.readexactly(2) == b"go"
        # The reader's buffer passes its limit and the TCP transport stops reading.
        await eventually(lambda: not conn.writer.transport.is_reading(), "the server stopped reading")
        data = await conn.reader.readexactly(BIG)
        conn.writer.write(hashlib.sha256(data).digest())
        await conn.writer.drain()
        conn.writer.close()
        await conn.writer.wait_closed()

    async def scenario() -> None:
        async with (
            TlsServer(context, read_late) as server,
            tls_client(server.port, client_context(pki)) as (
                reader,
                writer,
            ),
        ):
            writer.write(b"go" + payload)
            assert await reader.readexactly(32) == hashlib.sha256(payload).digest()
            assert await reader.read() == b""

    run(scenario())


def test_many_small_messages_keep_their_order(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    async def scenario() -> None:
        messages = [f"{n:08d}".encode() * 8 for n in range(2000)]  # 64 bytes each
        async with TlsServer(context) as server, tls_client(server.port, client_context(pki)) as (reader, writer):
            for message in messages:
                writer.write(message)
            await writer.drain()
            assert await reader.readexactly(64 * len(messages)) == b"".join(messages)

    run(scenario())


# -- closing -----------------------------------------------------------------------------


def test_server_close_gives_the_client_eof(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    async def say_bye(conn: Connection) -> None:
        conn.writer.write(b"bye")
        conn.writer.close()
        assert conn.writer.is_closing()
        conn.writer.write(b"dropped")  # after close: ignored, as on any transport
        await conn.writer.wait_closed()

    async def scenario() -> None:
        async with TlsServer(context, say_bye) as server, tls_client(server.port, client_context(pki)) as (reader, _):
            assert await reader.read() == b"bye"
            assert await reader.read() == b""
            conn = await server.next_connection()
            await eventually(lambda: bool(conn.lost), "connection_lost")
        assert conn.lost == [None]

    run(scenario())


def test_abort_ends_the_connection_at_once(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    async def hang_up(conn: Connection) -> None:
        conn.writer.transport.abort()
        assert conn.writer.is_closing()
        await conn.writer.wait_closed()

    async def scenario() -> None:
        async with TlsServer(context, hang_up) as server, tls_client(server.port, client_context(pki)) as (reader, _):
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                assert await reader.read() == b""
            conn = await server.next_connection()
        assert conn.lost == [None]

    run(scenario())


def test_client_close_notify_gives_the_server_eof(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    async def read_all(conn: Connection) -> None:
        conn.notes["data"] = await conn.reader.read(-1)
        conn.notes["closing"] = conn.writer.is_closing()
        await conn.writer.wait_closed()

    async def scenario() -> None:
        async with TlsServer(context, read_all) as server:
            async with tls_client(server.port, client_context(pki)) as (_, writer):
                writer.write(b"last words")
                await writer.drain()
            conn = await server.next_connection()
            await eventually(lambda: bool(conn.lost), "connection_lost")
        assert conn.notes == {"data": b"last words", "closing": True}
        assert conn.lost == [None]

    run(scenario())


def test_a_client_that_drops_tcp_gives_the_server_eof(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    """No close_notify, just a FIN, as many devices do after DISCONNECT."""

    def talk_and_drop(port: int) -> None:
        with socket.create_connection((HOST, port), timeout=WAIT) as raw:
            tls = client_context(pki).wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"ping")
            # Read everything the server sent (TLS 1.3 session tickets too): closing with
            # unread bytes would make the kernel send a reset instead of a FIN.
            assert tls.recv(4) == b"pong"
            tls.sendall(b"last words")
            tls.close()  # closes the socket without a TLS shutdown

    async def read_all(conn: Connection) -> None:
        assert await conn.reader.readexactly(4) == b"ping"
        conn.writer.write(b"pong")
        conn.notes["data"] = await conn.reader.read(-1)
        await conn.writer.wait_closed()

    async def scenario() -> None:
        async with TlsServer(context, read_all) as server:
            await asyncio.to_thread(talk_and_drop, server.port)
            conn = await server.next_connection()
            await eventually(lambda: bool(conn.lost), "connection_lost")
        assert conn.notes == {"data": b"last words"}
        assert conn.lost == [None]

    run(scenario())


def test_a_vanished_client_is_an_error_for_the_server(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    """A reset after the handshake: connection_lost once, with the error; the reader raises it."""

    async def read_all(conn: Connection) -> None:
        with pytest.raises(ConnectionError):
            await conn.reader.read(-1)

    async def scenario() -> None:
        async with TlsServer(context, read_all) as server:
            _, writer = await asyncio.open_connection(
                HOST, server.port, ssl=client_context(pki), server_hostname="localhost"
            )
            conn = await server.next_connection()
            raw = writer.get_extra_info("socket")
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
            writer.transport.abort()
            await eventually(lambda: bool(conn.lost), "connection_lost")
        assert len(conn.lost) == 1
        assert isinstance(conn.lost[0], ConnectionError)

    run(scenario())


def test_a_corrupt_record_ends_the_connection_with_an_error(run: Run[None], context: SSL.Context, pki: Pki) -> None:
    def handshake_then_garbage(port: int) -> None:
        with (
            socket.create_connection((HOST, port), timeout=WAIT) as raw,
            client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"fine")
            assert tls.recv(4) == b"fine"
            os.write(tls.fileno(), b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # application data nobody encrypted
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                while tls.recv(65536):
                    pass

    async def scenario() -> None:
        async with TlsServer(context, echo_until_error) as server:
            await asyncio.to_thread(handshake_then_garbage, server.port)
            conn = await server.next_connection()
            await eventually(lambda: bool(conn.lost), "connection_lost")
        assert len(conn.lost) == 1
        assert isinstance(conn.lost[0], ConnectionError)
        assert isinstance(conn.notes["error"], ConnectionError)

    async def echo_until_error(conn: Connection) -> None:
        try:
            await echo(conn)
        except ConnectionError as exc:
            conn.notes["error"] = exc

    run(scenario())


# -- hostile or broken peers -------------------------------------------------------------


@pytest.fixture
def tls_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="hub.gateway.tlsbio")
    yield caplog
    loud = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert loud == []


def _messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records if record.name == "hub.gateway.tlsbio")


def test_garbage_closes_that_connection_and_the_server_serves_on(
    run: Run[None], context: SSL.Context, pki: Pki, tls_log: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with TlsServer(context) as server:
            async with raw_client(server.port) as (reader, writer):
                writer.write(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
                await read_to_end(reader)
            async with tls_client(server.port, client_context(pki)) as (reader, writer):
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
            assert server.accepted == 1

    run(scenario())
    assert "TLS handshake with" in _messages(tls_log)
    assert "failed" in _messages(tls_log)


def test_a_client_that_rejects_the_server_certificate_costs_nothing_else(
    run: Run[None], context: SSL.Context, pki: Pki, tls_log: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with TlsServer(context) as server:
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(HOST, server.port, ssl=ssl.create_default_context())
            async with tls_client(server.port, client_context(pki)) as (reader, writer):
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
            assert server.accepted == 1

    run(scenario())


def test_a_silent_client_is_closed_after_the_handshake_timeout(
    run: Run[None], context: SSL.Context, tls_log: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with TlsServer(context, handshake_timeout=0.2) as server, raw_client(server.port) as (reader, _):
            assert await read_to_end(reader) == b""
            assert server.accepted == 0

    run(scenario())
    assert "timed out" in _messages(tls_log)


def test_half_a_client_hello_is_closed_after_the_handshake_timeout(
    run: Run[None], context: SSL.Context, pki: Pki, tls_log: pytest.LogCaptureFixture
) -> None:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    with pytest.raises(ssl.SSLWantReadError):
        client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost").do_handshake()
    hello = outgoing.read()

    async def scenario() -> None:
        async with TlsServer(context, handshake_timeout=0.2) as server, raw_client(server.port) as (reader, writer):
            writer.write(hello[: len(hello) // 2])
            assert await read_to_end(reader) == b""
            assert server.accepted == 0

    run(scenario())
    assert "timed out" in _messages(tls_log)


def test_tls_1_1_is_refused(run: Run[None], context: SSL.Context, tls_log: pytest.LogCaptureFixture) -> None:
    def old_client(port: int) -> None:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
        ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # so the client offers TLS 1.1 at all
        with socket.create_connection((HOST, port)) as raw:
            conn = SSL.Connection(ctx, raw)
            conn.set_connect_state()
            with pytest.raises(SSL.Error):
                conn.do_handshake()

    async def scenario() -> None:
        async with TlsServer(context) as server:
            await asyncio.to_thread(old_client, server.port)
            assert server.accepted == 0

    run(scenario())
    assert "unsupported protocol" in _messages(tls_log)
