"""Listening sockets for the hub's ports, with errors that tell the operator what to change.

The hub binds every port itself before starting uvicorn or the broker, so a busy or
privileged port fails at start-up with the flag and variable that choose it, not with a
bare ``[Errno 98]`` from deep inside a server library.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

__all__ = [
    "BindError",
    "PortInUseError",
    "PortPermissionError",
    "bind_listener",
    "free_port",
]

BACKLOG = 1024
_IN_USE = {errno.EADDRINUSE, 10048}  # 10048: WSAEADDRINUSE on Windows
_DENIED = {errno.EACCES, errno.EPERM, 10013}  # 10013: WSAEACCES


class BindError(Exception):
    """A port the hub could not listen on; the attributes say which and how it is chosen."""

    def __init__(self, message: str, *, host: str, port: int, flag: str, env: str, what: str) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.flag = flag
        self.env = env
        self.what = what

    def __str__(self) -> str:
        return str(self.args[0])


class PortInUseError(BindError):
    """Another process (or another hub) already listens on the port."""


class PortPermissionError(BindError, PermissionError):
    """The port is privileged (below 1024 on most systems) and the hub may not bind it."""


def _choice(flag: str, env: str) -> str:
    return f"choose another with {flag} (or {env}), or 0 for any free port"


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]:
    """The socket family and bind address for ``host``: literal IPs directly, names resolved."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        if ip.version == 6:
            return socket.AF_INET6, (literal, port, 0, 0)
        return socket.AF_INET, (literal, port)
    # A name such as "localhost" or "" (all interfaces): take the first passive address.
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr  # type: ignore[return-value]


def bind_listener(host: str, port: int, *, flag: str, env: str, what: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``host:port`` and listening (backlog 1024).

    ``flag``/``env`` name the CLI option and variable that choose this port and ``what``
    names the service (``"MQTT"``), for the error message. Raises PortInUseError,
    PortPermissionError, BindError (address not on this machine), or OSError otherwise.
    """
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host or "all interfaces"
    try:
        family, address = _address(host, port)
    except socket.gaierror as exc:
        raise BindError(
            f"cannot listen for {what} on {host!r}: {exc.strerror}; check the bind address",
            host=host,
            port=port,
            flag=flag,
            env=env,
            what=what,
        ) from exc
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # POSIX: lets a restarted hub reuse the port while old connections sit in TIME_WAIT.
        # Not on Windows, where SO_REUSEADDR would let two processes share a listening port.
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in _IN_USE:
            raise PortInUseError(
                f"port {port} for {what} is already in use on {shown}; {_choice(flag, env)}",
                host=host,
                port=port,
                flag=flag,
                env=env,
                what=what,
            ) from exc
        if exc.errno in _DENIED:
            raise PortPermissionError(
                f"not allowed to listen on port {port} for {what} on {shown}: ports below 1024 need "
                f"administrator rights (or CAP_NET_BIND_SERVICE); {_choice(flag, env)}",
                host=host,
                port=port,
                flag=flag,
                env=env,
                what=what,
            ) from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BindError(
                f"cannot listen for {what} on {shown}: no such address on this machine; check the bind address",
                host=host,
                port=port,
                flag=flag,
                env=env,
                what=what,
            ) from exc
        raise
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (another process may take it before you bind it)."""
    family, address = _address(host, 0)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind(address)
        port: int = sock.getsockname()[1]
        return port
