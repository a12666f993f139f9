"""serve_app.loadgen against a tiny asyncio HTTP/1.1 server on 127.0.0.1 (no Ray): bounds, keep-alive,
chunked and read-until-close bodies, status counting, reconnects, timeouts, httpx, the background runner."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter

import pytest

from serve_app.loadgen import BackgroundLoad, LoadGenerator, PreparedRequest, percentiles_ms, run_load


class TinyServer:
    """Answers by path: /echo (the body back, Content-Length), /chunked (the body in 3 chunks), /until-close
    (no length: the body ends with the connection), /status/N, /slow (50 ms), /hang (never), /bye (answers,
    then closes the connection without saying so: what an idle keep-alive timeout does)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: Counter[str] = Counter()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                _, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                self.requests[path] += 1
                if not await self._answer(writer, path, body):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, path: str, body: bytes) -> bool:
        """Write the answer; False when the connection ends here."""
        status = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
        if path == "/hang":
            await asyncio.sleep(30)
        if path == "/slow":
            await asyncio.sleep(0.05)
        if path == "/chunked":
            parts = [body[:3], body[3:5], body[5:]]
            chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts if p)
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\nx-trailer: 1\r\n\r\n"
            )
        elif path == "/until-close":
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body)
            await writer.drain()
            return False
        elif status == 204:  # no body, no length
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
        await writer.drain()
        return path != "/bye"


@pytest.fixture(scope="module")
def server():
    s = TinyServer()
    yield s
    s.close()


def _reset(server: TinyServer) -> None:
    server.connections = 0
    server.requests.clear()


def test_bounded_count_reuses_one_connection_per_worker(server):
    _reset(server)
    bodies = [b'{"n": 0}', b'{"n": 1}']

    async def go():
        async with LoadGenerator(server.url + "/echo", concurrency=3) as gen:
            first = await gen.run(bodies, max_requests=25, duration_s=30, inspect=lambda s, body: body)
            second = await gen.run(bodies, max_requests=5, duration_s=30)
            return first, second, gen.connects

    first, second, connects = asyncio.run(go())
    assert first.sent == first.ok == 25 and first.failed == 0 and second.ok == 5
    assert sorted(s.index for s in first.samples) == list(range(25))
    assert all(s.detail == bodies[s.item] and s.item == s.index % 2 for s in first.samples)
    assert {s.worker for s in first.samples} == {0, 1, 2}
    assert server.requests["/echo"] == 30
    assert connects == server.connections == 3  # keep-alive: one connection per worker, across both runs
    assert all(s.latency >= 0 for s in first.samples) and first.cpu_seconds >= 0


def test_bounded_time(server):
    start = time.monotonic()
    result = asyncio.run(run_load(server.url + "/slow", [b"x"], concurrency=2, max_requests=1_000_000, duration_s=0.5))
    assert time.monotonic() - start < 3 and result.seconds < 2
    assert 2 <= result.sent < 100 and result.failed == 0
    p50, p100 = percentiles_ms(result.latencies(), (50, 100))
    assert 40 <= p50 <= p100


def test_chunked_and_read_until_close_bodies(server):
    _reset(server)
    requests = [PreparedRequest(b"hello world", path="/chunked"), PreparedRequest(b"to the end", path="/until-close")]
    result = asyncio.run(
        run_load(server.url, requests, concurrency=1, max_requests=6, duration_s=30, inspect=lambda s, body: body)
    )
    assert result.ok == 6
    assert [s.detail for s in result.samples] == [b"hello world", b"to the end"] * 3
    assert server.connections == 3  # a new connection after each read-until-close answer


def test_status_counting_and_max_errors(server):
    paths = ["/status/200", "/status/404", "/status/503", "/status/204"]
    requests = [PreparedRequest(b"{}", path=p) for p in paths]
    result = asyncio.run(run_load(server.url, requests, concurrency=1, max_requests=8, duration_s=30))
    assert result.status_counts() == {200: 2, 404: 2, 503: 2, 204: 2}
    assert (result.ok, result.failed) == (4, 4) and result.first_failure().status == 404

    stopped = asyncio.run(
        run_load(server.url + "/status/500", [b"{}"], concurrency=2, max_requests=100, duration_s=30, max_errors=3)
    )
    assert 3 <= stopped.sent <= 4 and stopped.ok == 0


def test_inspect_marks_wrong_answers(server):
    def check(sample, body):
        if body != b"right":
            sample.error = f"wrong answer {body!r}"
        return len(body)

    result = asyncio.run(
        run_load(
            server.url + "/echo", [b"right", b"wrong"], concurrency=1, max_requests=4, duration_s=30, inspect=check
        )
    )
    assert [s.ok for s in result.samples] == [True, False, True, False]
    assert result.samples[1].status == 200 and "wrong answer" in result.samples[1].error


def test_server_closing_the_connection_means_reconnect(server):
    _reset(server)

    async def go():
        async with LoadGenerator(server.url + "/bye", concurrency=1) as gen:
            result = await gen.run([b"{}"], max_requests=5, duration_s=30)
            return result, gen.connects

    result, connects = asyncio.run(go())
    assert result.ok == 5
    assert server.requests["/bye"] == 5 and connects == server.connections == 5


def test_no_server_and_no_answer_are_failures(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = asyncio.run(
        run_load(f"http://127.0.0.1:{closed}/x", [b"{}"], concurrency=1, max_requests=3, duration_s=30)
    )
    assert refused.sent == 3 and refused.ok == 0 and refused.status_counts() == {None: 3}
    assert all("ConnectionRefusedError" in s.error for s in refused.samples)

    start = time.monotonic()
    hung = asyncio.run(
        run_load(server.url + "/hang", [b"{}"], concurrency=2, max_requests=2, duration_s=30, timeout_s=0.2)
    )
    assert time.monotonic() - start < 3
    assert hung.failed == 2 and all(s.error == "no answer within 0.2 s" for s in hung.samples)


def test_httpx_transport(server):
    requests = [PreparedRequest(b"abcdefg", path="/chunked"), PreparedRequest(b"{}", path="/status/503")]
    result = asyncio.run(
        run_load(
            server.url,
            requests,
            concurrency=2,
            max_requests=6,
            duration_s=30,
            transport="httpx",
            inspect=lambda s, body: body,
        )
    )
    assert result.status_counts() == {200: 3, 503: 3}
    assert all(s.detail == b"abcdefg" for s in result.samples if s.status == 200)


def test_background_load_starts_and_stops(server):
    with BackgroundLoad(server.url + "/slow", [b"{}"], concurrency=2, max_requests=10_000, duration_s=60) as load:
        deadline = time.monotonic() + 10
        while load.ok < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        load.stop()
    assert load.failure is None and load.result is not None
    assert load.ok == load.result.ok >= 5 and load.failed == 0
    assert load.result.seconds < 10  # stopped when asked, far before its bounds
