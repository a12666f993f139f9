"""The media fetcher and intake against hostile servers and requests: compression bombs, trickled headers,
slow redirect chains, name / port probing, and requests of many slow references (all on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket
import socketserver
import threading
import time
import tracemalloc

import httpcore
import pytest
from helpers.media_samples import gzip_bomb
from PIL import Image

from deployments import media_inputs
from deployments.errors import Cancelled, InvalidRequest
from deployments.media import (
    AddressPolicy,
    MediaBudget,
    MediaError,
    MediaLimits,
    fetch,
    load_image,
    load_video,
)


def png(color=(10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="PNG")
    return buf.getvalue()


PNG = png()
BOMB = gzip_bomb(256 * 2**20)  # a few hundred bytes on the wire


class _Handler(socketserver.BaseRequestHandler):
    """A raw HTTP/1.1 server: each path a behaviour a real client may meet, one response per connection."""

    def handle(self) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            request += chunk
        path = request.split(b" ", 2)[1].decode()
        with contextlib.suppress(OSError):  # the client giving up is what several tests want
            self._route(path)

    def _route(self, path: str) -> None:
        if path == "/trickle":  # headers that never end, one byte every 0.1 s (for 8 s)
            self.request.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(80):
                time.sleep(0.1)
                self.request.sendall(b"a")
        elif path.startswith("/hop/"):  # every hop answers after 0.4 s with a redirect to the next
            time.sleep(0.4)
            self._send(302, b"", [("Location", f"/hop/{int(path[5:]) + 1}")])
        elif path == "/slow-image":
            time.sleep(0.5)
            self._send(200, PNG, [("Content-Type", "image/png")])
        elif path == "/bomb":
            self._send(200, BOMB, [("Content-Type", "image/png"), ("Content-Encoding", "gzip, gzip")])
        elif path == "/gzip":
            self._send(200, gzip_bomb(len(PNG), layers=1), [("Content-Encoding", "gzip")])
        elif path == "/identity":
            self._send(200, PNG, [("Content-Type", "image/png"), ("Content-Encoding", "identity")])
        else:
            self._send(404, b"", [])

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        self.request.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class LoopbackPolicy(AddressPolicy):
    """Tests only: the local test server (its address and its random port) counts as a reachable public host."""

    def __init__(self, port: int) -> None:
        self.port = port

    def allows(self, ip, port):
        return (str(ip), port) == ("127.0.0.1", self.port) or super().allows(ip, port)

    def allows_port(self, port, allowed):
        return port == self.port or super().allows_port(port, allowed)


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def policy(server) -> LoopbackPolicy:
    return LoopbackPolicy(server.server_address[1])


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: refusals must happen before connecting."""

    def refuse(self, host, port, *args, **kwargs):
        raise AssertionError(f"a connection was attempted to {host}:{port}")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", refuse)


# -- 1. compression bombs --------------------------------------------------------------------------------
def test_gzip_of_gzip_bomb_is_refused_without_inflating(server):
    tracemalloc.start()
    try:
        with pytest.raises(MediaError, match=r"compressed body \(Content-Encoding: gzip, gzip\)"):
            load_image(url(server, "/bomb"), policy=policy(server))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # 256 MiB were never inflated


def test_only_identity_bodies_are_accepted(server):
    with pytest.raises(MediaError, match="compressed body"):
        load_image(url(server, "/gzip"), policy=policy(server))
    assert load_image(url(server, "/identity"), policy=policy(server)).size == (8, 6)


# -- 5. one deadline for the whole fetch -----------------------------------------------------------------
def test_trickled_headers_end_at_the_deadline(server):
    limits = MediaLimits(fetch_deadline_s=1.5, read_timeout_s=10.0)
    started = time.monotonic()
    with pytest.raises(MediaError, match="timed out"):
        fetch(url(server, "/trickle"), max_bytes=2**20, limits=limits, policy=policy(server))
    assert time.monotonic() - started < 4.0


def test_slow_redirect_chain_ends_at_the_deadline(server):
    limits = MediaLimits(fetch_deadline_s=1.5, read_timeout_s=10.0, max_redirects=20)
    started = time.monotonic()
    with pytest.raises(MediaError, match="timed out"):
        load_image(url(server, "/hop/0"), limits=limits, policy=policy(server))
    assert time.monotonic() - started < 4.0


def test_an_explicit_deadline_bounds_the_fetch(server):
    started = time.monotonic()
    with pytest.raises(MediaError, match="timed out"):
        fetch(url(server, "/trickle"), max_bytes=2**20, policy=policy(server), deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 3.0


# -- 8. no name prober, no port scanner ------------------------------------------------------------------
def _refusal(host: str) -> str:
    return f"refused to fetch from {host!r}: not a reachable public host"


def test_every_refused_host_gets_the_same_answer(monkeypatch, no_network):
    real = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host == "no-such-host.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host == "internal.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]
        if host == "public.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    cases = [
        ("http://no-such-host.example/a.png", "no-such-host.example"),  # does not resolve
        ("http://internal.example/a.png", "internal.example"),  # resolves to a private address
        ("http://localhost/a.png", "localhost"),  # a blocked name
        ("http://metadata.google.internal/x", "metadata.google.internal"),
        ("http://10.1.2.3/a.png", "10.1.2.3"),  # a private address
        ("http://public.example:22/a.png", "public.example"),  # a public host, a port other than 80 / 443
        ("https://93.184.216.34:6379/", "93.184.216.34"),
        ("http://93.184.216.34:443/", "93.184.216.34"),  # allowed port, allowed host: reaches no_network ...
    ]
    for ref, host in cases[:-1]:
        with pytest.raises(MediaError) as info:
            load_image(ref)
        assert str(info.value) == _refusal(host), ref
    with pytest.raises(AssertionError, match="connection was attempted"):
        load_image(cases[-1][0])  # ... so it is let through


def test_allowed_ports_are_configurable(monkeypatch):
    attempts = []

    def refuse(self, host, port, *args, **kwargs):
        attempts.append((host, port))
        raise httpcore.ConnectError("no network in unit tests")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", refuse)
    with pytest.raises(MediaError, match="reachable public host"):
        load_image("http://93.184.216.34:8080/a.png")
    assert attempts == []
    for allowed in (None, (), (8080,)):
        with pytest.raises(MediaError, match="fetch failed"):
            load_image("http://93.184.216.34:8080/a.png", limits=MediaLimits(allowed_ports=allowed))
    assert attempts == [("93.184.216.34", 8080)] * 3


# -- 6. one budget for all the media of one request ------------------------------------------------------
def test_request_deadline_covers_all_items(server):
    """Ten references of 0.5 s each, each within its own fetch deadline: the request's 1.5 s ends them."""
    limits = MediaLimits(request_media_deadline_s=1.5)
    budget = MediaBudget(limits)
    started = time.monotonic()
    with pytest.raises(MediaError, match=r"budget|timed out"):
        for _ in range(10):
            load_image(url(server, "/slow-image"), limits=limits, policy=policy(server), budget=budget)
    assert time.monotonic() - started < 3.0


def test_request_deadline_covers_frame_lists(server):
    limits = MediaLimits(request_media_deadline_s=1.0)
    frames = [url(server, "/slow-image")] * 8
    started = time.monotonic()
    with pytest.raises(MediaError, match=r"budget|timed out"):
        load_video(frames, limits=limits, policy=policy(server), budget=MediaBudget(limits))
    assert time.monotonic() - started < 2.5


def _items(count: int, kind: str = "image") -> list[dict]:
    uri = "data:image/png;base64," + __import__("base64").b64encode(PNG).decode()
    return [{kind: uri, "text": f"item {i}"} for i in range(count)]


class _Engine:
    def video_sampling(self):
        from deployments.media import VideoSampling

        return VideoSampling()


def test_too_many_media_items_are_refused_before_any_work(monkeypatch):
    decoded = []
    real = media_inputs.media.load_image
    monkeypatch.setattr(media_inputs.media, "load_image", lambda *a, **k: decoded.append(1) or real(*a, **k))
    with pytest.raises(InvalidRequest) as info:
        media_inputs.decode_items(_items(65), None, _Engine(), param="input")
    assert info.value.param == "input[64].image" and info.value.code == "too_many_media"
    assert info.value.message.startswith("input[64].image: ")
    assert decoded == []
    assert len(media_inputs.decode_items(_items(64), None, _Engine(), param="input")) == 64


def test_request_byte_cap_names_the_input():
    limits = MediaLimits(max_request_media_bytes=len(PNG) * 3 + 10)
    contents = [(f"documents[{i}]", item) for i, item in enumerate(_items(5))]
    with pytest.raises(InvalidRequest) as info:
        media_inputs.decode_contents(contents, _Engine().video_sampling(), limits=limits)
    assert info.value.param == "documents[3].image" and "byte limit" in info.value.message


def test_a_gone_caller_stops_the_work_between_items():
    gone = threading.Event()
    gone.set()
    with pytest.raises(Cancelled):
        media_inputs.decode_items(_items(3), None, _Engine(), param="input", cancelled=gone)
    checks = []

    def cancelled_after_two() -> bool:
        checks.append(1)
        return len(checks) > 2

    with pytest.raises(Cancelled):
        media_inputs.decode_items(_items(10), None, _Engine(), param="input", cancelled=cancelled_after_two)
    assert len(checks) < 10


def test_a_past_call_deadline_ends_the_media_work():
    with pytest.raises(InvalidRequest) as info:
        media_inputs.decode_items(_items(2), None, _Engine(), param="input", deadline=time.time() - 1)
    assert info.value.param == "input[0].image" and "budget" in info.value.message


def test_public_only_is_unchanged_for_the_test_policy():
    """The loopback policy above widens exactly one address and port; the default policy allows neither."""
    assert not AddressPolicy().allows(ipaddress.ip_address("127.0.0.1"), 80)
    assert not AddressPolicy().allows_port(8080, MediaLimits().allowed_ports)
    assert AddressPolicy().allows_port(8080, None) and AddressPolicy().allows_port(443, (80, 443))
