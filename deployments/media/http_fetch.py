"""GET an http(s) URL under the address policy: pinned to the checked address, capped, and on a deadline.

The host is resolved once and every address must pass the policy; the connection then goes to the address
that was checked (Host header and TLS SNI keep the name), so DNS cannot change between check and connect.
Only the ports in `MediaLimits.allowed_ports` are used. Redirects are followed by hand, each hop checked
again; no proxies from the environment.

The deadline bounds the whole fetch: the requests go through httpcore with a network backend whose every
connect, TLS handshake, read and write is given at most the time left (recomputed for each operation), so
headers trickled a byte at a time or a chain of slow redirects end at the deadline too. Bodies are read raw
(never decompressed) and must be uncompressed: we ask for `identity`, and a compressed answer is refused,
so a few hundred bytes of nested gzip can never inflate past the byte cap.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import typing

import httpcore
import httpx

from deployments.http_helpers import unasked_encoding
from deployments.media.addresses import PUBLIC_ONLY, AddressPolicy, IPAddress, refusal
from deployments.media.limits import DEFAULT_LIMITS, MediaError, MediaLimits

_REDIRECTS = {301, 302, 303, 307, 308}
_HTTPCORE_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
)


def fetch(
    url: str,
    *,
    max_bytes: int,
    limits: MediaLimits = DEFAULT_LIMITS,
    policy: AddressPolicy = PUBLIC_ONLY,
    deadline: float | None = None,
) -> bytes:
    """GET an http(s) URL under the policy, following at most `limits.max_redirects` redirects.

    `deadline` (time.monotonic() seconds) ends the whole fetch; without one, `limits.fetch_deadline_s` from now.
    """
    deadline = deadline if deadline is not None else time.monotonic() + limits.fetch_deadline_s
    current = _parse_url(url)
    backend = DeadlineBackend(deadline)
    with httpcore.ConnectionPool(network_backend=backend, retries=0, http1=True, http2=False) as pool:
        for _hop in range(limits.max_redirects + 1):
            if time.monotonic() >= deadline:
                raise MediaError(f"{_show(current)}: timed out")
            try:
                location = _get(pool, current, max_bytes, limits, policy, deadline)
            except MediaError:
                raise
            except httpcore.TimeoutException as exc:
                raise MediaError(f"{_show(current)}: timed out") from exc
            except (*_HTTPCORE_ERRORS, OSError, ValueError) as exc:
                raise MediaError(f"{_show(current)}: fetch failed ({type(exc).__name__})") from exc
            if isinstance(location, bytes):
                return location
            current = location
    raise MediaError(f"{_show(url)}: more than {limits.max_redirects} redirects")


def _get(
    pool: httpcore.ConnectionPool,
    url: httpx.URL,
    max_bytes: int,
    limits: MediaLimits,
    policy: AddressPolicy,
    deadline: float,
) -> bytes | httpx.URL:
    """One hop: the body of a 200, or the URL a redirect points to."""
    target, headers, extensions = _pin(url, policy, limits, deadline)
    with pool.stream("GET", target, headers=headers, extensions=extensions) as response:
        found = _headers(response)
        if response.status in _REDIRECTS:
            location = found.get("location")
            if not location:
                raise MediaError(f"{_show(url)}: redirect without a Location")
            return _parse_url(str(url.join(location)))
        if response.status != 200:
            raise MediaError(f"{_show(url)}: HTTP {response.status}")
        _refuse_encoded(found, url)
        return _read_capped(response, found, max_bytes, url)


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise MediaError("invalid URL") from exc
    if parsed.scheme not in ("http", "https"):
        raise MediaError(f"unsupported URL scheme {parsed.scheme!r}: only https and http URLs are fetched")
    if not parsed.raw_host:
        raise MediaError("URL has no host")
    if parsed.userinfo:
        raise MediaError("URLs with credentials are not fetched")
    return parsed


def _pin(
    url: httpx.URL, policy: AddressPolicy, limits: MediaLimits, deadline: float
) -> tuple[httpcore.URL, list[tuple[bytes, bytes]], dict[str, typing.Any]]:
    """Check the host and port; return the request aimed at the checked address, with Host / SNI kept."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    if not policy.allows_port(port, limits.allowed_ports):
        raise refusal(host)
    policy.check_host(host)
    addresses = _resolve_before(policy, host, port, deadline, url)
    if not addresses or any(not policy.allows(ip, port) for ip in addresses):
        raise refusal(host)
    ip = addresses[0]
    target = httpcore.URL(scheme=url.scheme, host=str(ip), port=port, target=url.raw_path)
    host_header = f"[{host}]" if ":" in host else host
    if url.port is not None:
        host_header += f":{url.port}"
    headers = [
        (b"Host", host_header.encode("ascii")),
        (b"User-Agent", limits.user_agent.encode("ascii")),
        (b"Accept-Encoding", b"identity"),
        (b"Accept", b"*/*"),
    ]
    timeouts = {
        "connect": limits.connect_timeout_s,
        "read": limits.read_timeout_s,
        "write": limits.read_timeout_s,
        "pool": limits.connect_timeout_s,
    }
    extensions: dict[str, typing.Any] = {"timeout": timeouts}
    if url.scheme == "https" and not _is_ip(host):
        extensions["sni_hostname"] = host
    return target, headers, extensions


def _resolve_before(policy: AddressPolicy, host: str, port: int, deadline: float, url: httpx.URL) -> list[IPAddress]:
    """policy.resolve, given no longer than the deadline: the system resolver has no timeout of its own.

    A lookup that outlives the deadline is left to finish in its (daemon) thread; the fetch ends on time.
    """
    if _is_ip(host):
        return policy.resolve(host, port)
    outcome: dict[str, typing.Any] = {}

    def lookup() -> None:
        try:
            outcome["addresses"] = policy.resolve(host, port)
        except Exception as exc:  # handed to the fetching thread below
            outcome["error"] = exc

    worker = threading.Thread(target=lookup, name="media-resolve", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise MediaError(f"{_show(url)}: timed out")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["addresses"]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _headers(response: httpcore.Response) -> dict[str, str]:
    """Response headers by lower-case name; repeated headers joined with commas, as HTTP allows."""
    out: dict[str, str] = {}
    for raw_name, raw_value in response.headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _refuse_encoded(headers: dict[str, str], url: httpx.URL) -> None:
    """We asked for identity: a compressed body could inflate far past the byte cap, so it is not read."""
    encoding = unasked_encoding(headers.get("content-encoding"))
    if encoding is not None:
        raise MediaError(
            f"{_show(url)}: the server sent a compressed body (Content-Encoding: {encoding}); "
            "only uncompressed bodies are accepted"
        )


def _read_capped(response: httpcore.Response, headers: dict[str, str], max_bytes: int, url: httpx.URL) -> bytes:
    """The raw body, refused as soon as it is over `max_bytes` (the backend enforces the deadline per read)."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise MediaError(f"{_show(url)}: body of {int(declared)} bytes is over the {max_bytes}-byte limit")
    buf = bytearray()
    for chunk in response.iter_stream():
        buf += chunk
        if len(buf) > max_bytes:
            raise MediaError(f"{_show(url)}: body is over the {max_bytes}-byte limit")
    return bytes(buf)


def _show(url: httpx.URL | str) -> str:
    text = str(url)
    return text if len(text) <= 120 else text[:117] + "..."


# -- the network backend: every operation capped to the time left ----------------------------------------
def _time_left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    """The timeout for one network operation: its own, but never past the deadline; none left raises `error`."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the fetch deadline has passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = _time_left(self._deadline, timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left), self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking socket backend, with every connect and stream operation bounded by one deadline."""

    def __init__(self, deadline: float, inner: httpcore.NetworkBackend | None = None) -> None:
        self._deadline = deadline
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _time_left(self._deadline, timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, left, local_address, socket_options)
        return DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never used for media")

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self._deadline - time.monotonic())))
