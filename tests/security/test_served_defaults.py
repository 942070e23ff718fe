"""A real server with the repository's settings: it listens on loopback only, and its WebSocket refuses a Host name
outside server.allowedHosts (a DNS-rebinding page) while localhost gets a session."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("e2e_server", ROOT / "tests" / "e2e" / "conftest.py")
e2e_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e_server)


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _handshake(port: int, host: str) -> int:
    """The HTTP status of a WebSocket upgrade to the app's stream sent with this Host header (101: a session)."""
    import base64
    import http.client
    import os

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", "/_stcore/stream", skip_host=True)
        for name, value in (("Host", f"{host}:{port}"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                            ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
                            ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Protocol", "streamlit")):
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    studio = e2e_server.StudioServer(tmp_path_factory.mktemp("fw-home"))
    try:
        studio.start()
        yield studio
    finally:
        studio.stop()


def test_websocket_refuses_a_rebound_host_name(server):
    """Host: localhost opens a session; Host: rebound.example (a page whose name now points at 127.0.0.1) does not."""
    port = int(server.url.rsplit(":", 1)[1])
    local, rebound = _handshake(port, "localhost"), _handshake(port, "rebound.example")
    print(f"WebSocket upgrade: Host localhost -> {local}, Host rebound.example -> {rebound}")
    assert local == 101
    assert rebound in (400, 403)


def test_server_listens_on_loopback_only(server):
    """The port answers on 127.0.0.1 and is closed on the machine's outward address."""
    port = int(server.url.rsplit(":", 1)[1])
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    outward = _outward_address()
    if outward is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with pytest.raises(OSError):
        socket.create_connection((outward, port), timeout=5).close()
