"""Listening sockets: real binds on loopback, and the errors an operator sees."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from hub.netbind import BindError, PortInUseError, PortPermissionError, bind_listener, free_port

MQTT = {"flag": "--mqtt-port", "env": "FLEETHUB_MQTT_PORT", "what": "MQTT"}


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = bind_listener("127.0.0.1", 0, **MQTT)
    try:
        yield sock
    finally:
        sock.close()


def test_port_zero_gives_a_real_listening_port(listener: socket.socket) -> None:
    host, port = listener.getsockname()[:2]
    assert host == "127.0.0.1"
    assert 0 < port < 65536
    assert listener.family == socket.AF_INET
    assert listener.type == socket.SOCK_STREAM
    assert listener.getblocking() is False
    assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


@pytest.mark.skipif(os.name != "posix", reason="SO_REUSEADDR is left off on Windows on purpose")
def test_reuse_address_is_set_on_posix(listener: socket.socket) -> None:
    assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0


def test_port_in_use_names_the_flag_and_variable(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with pytest.raises(PortInUseError) as info:
        bind_listener("127.0.0.1", port, **MQTT)
    error = info.value
    assert (error.port, error.flag, error.env, error.what, error.host) == (
        port,
        "--mqtt-port",
        "FLEETHUB_MQTT_PORT",
        "MQTT",
        "127.0.0.1",
    )
    assert str(error) == (
        f"port {port} for MQTT is already in use on 127.0.0.1; choose another with "
        "--mqtt-port (or FLEETHUB_MQTT_PORT), or 0 for any free port"
    )
    assert isinstance(error.__cause__, OSError)
    assert isinstance(error, BindError)


def test_port_in_use_on_all_interfaces(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with pytest.raises(
        PortInUseError,
        match=f"port {port} for HTTP is already in use on 0.0.0.0; "
        r"choose another with --http-port \(or FLEETHUB_HTTP_PORT\)",
    ):
        bind_listener("0.0.0.0", port, flag="--http-port", env="FLEETHUB_HTTP_PORT", what="HTTP")


def test_the_port_is_free_again_after_close() -> None:
    sock = bind_listener("127.0.0.1", 0, **MQTT)
    port = sock.getsockname()[1]
    sock.close()
    again = bind_listener("127.0.0.1", port, **MQTT)
    again.close()


def test_permission_error_for_privileged_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    # Root may bind port 80, so the kernel's refusal is simulated rather than provoked.
    class DeniedSocket(socket.socket):
        def bind(self, address: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket, "socket", DeniedSocket)
    with pytest.raises(PortPermissionError) as info:
        bind_listener("0.0.0.0", 80, flag="--http-port", env="FLEETHUB_HTTP_PORT", what="HTTP")
    error = info.value
    assert isinstance(error, PermissionError)  # callers catching PermissionError still do
    assert error.port == 80
    assert error.flag == "--http-port"
    assert "port 80 for HTTP" in str(error)
    assert "below 1024" in str(error)
    assert "--http-port (or FLEETHUB_HTTP_PORT)" in str(error)


def test_real_privileged_port_when_not_root() -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 1))
        except PermissionError:
            pass
        except OSError:
            pytest.skip("port 1 is taken here")
        else:
            pytest.skip("this user may bind privileged ports")
    with pytest.raises(PortPermissionError, match="port 1 for MQTT"):
        bind_listener("127.0.0.1", 1, **MQTT)


def test_address_not_on_this_machine() -> None:
    with pytest.raises(BindError, match="no such address") as info:
        bind_listener("192.0.2.1", 0, **MQTT)  # TEST-NET-1, never local
    assert not isinstance(info.value, PortInUseError)


def test_unresolvable_host() -> None:
    with pytest.raises(BindError, match="check the bind address"):
        bind_listener("no-such-host.invalid", 0, **MQTT)


def test_hostname_is_resolved() -> None:
    sock = bind_listener("localhost", 0, **MQTT)
    try:
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6(host: str) -> None:
    sock = bind_listener(host, 0, **MQTT)
    try:
        assert sock.family == socket.AF_INET6
        port = sock.getsockname()[1]
        with socket.create_connection(("::1", port), timeout=5):
            pass
        with pytest.raises(PortInUseError, match=r"already in use on \[::1\]"):
            bind_listener(host, port, **MQTT)
    finally:
        sock.close()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    sock = bind_listener("127.0.0.1", port, **MQTT)
    sock.close()


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_free_port_ipv6() -> None:
    assert free_port("::1") > 0
