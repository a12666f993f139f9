"""GET an http(s) URL under the address policy: pinned to the checked address, capped, and on a deadline.

The host is resolved once and every address must pass the policy; the connection then goes to the address
that was checked (Host header and TLS SNI keep the name), so DNS cannot change between check and connect.
Redirects are followed by hand, each hop checked again; no proxies from the environment.
"""

from __future__ import annotations

import ipaddress
import time

import httpx

from deployments.media.addresses import PUBLIC_ONLY, AddressPolicy
from deployments.media.limits import DEFAULT_LIMITS, MediaError, MediaLimits

_REDIRECTS = {301, 302, 303, 307, 308}


def fetch(
    url: str,
    *,
    max_bytes: int,
    limits: MediaLimits = DEFAULT_LIMITS,
    policy: AddressPolicy = PUBLIC_ONLY,
    deadline: float | None = None,
) -> bytes:
    """GET an http(s) URL under the policy, following at most `limits.max_redirects` redirects."""
    deadline = deadline if deadline is not None else time.monotonic() + limits.fetch_deadline_s
    timeout = httpx.Timeout(
        connect=limits.connect_timeout_s, read=limits.read_timeout_s, write=limits.read_timeout_s, pool=1.0
    )
    current = _parse_url(url)
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout, max_redirects=0) as client:
        for _hop in range(limits.max_redirects + 1):
            pinned, headers, extensions = _pin(current, policy, limits)
            try:
                with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise MediaError(f"{_show(current)}: redirect without a Location")
                        current = _parse_url(str(current.join(location)))
                        continue
                    if response.status_code != 200:
                        raise MediaError(f"{_show(current)}: HTTP {response.status_code}")
                    return _read_capped(response, max_bytes, deadline, current)
            except MediaError:
                raise
            except httpx.TimeoutException as exc:
                raise MediaError(f"{_show(current)}: timed out") from exc
            except (httpx.HTTPError, OSError, ValueError) as exc:
                raise MediaError(f"{_show(current)}: fetch failed ({type(exc).__name__})") from exc
    raise MediaError(f"{_show(url)}: more than {limits.max_redirects} redirects")


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


def _pin(url: httpx.URL, policy: AddressPolicy, limits: MediaLimits) -> tuple[httpx.URL, dict, dict]:
    """Check the host and return the URL rewritten to the checked address, with Host / SNI kept."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    policy.check_host(host)
    addresses = policy.resolve(host, port)
    refused = [ip for ip in addresses if not policy.allows(ip, port)]
    if refused:
        raise MediaError(f"refused to fetch from {host!r}: it resolves to a non-public address")
    ip = addresses[0]
    pinned = url.copy_with(host=str(ip))
    host_header = f"[{host}]" if ":" in host else host
    if url.port is not None:
        host_header += f":{url.port}"
    headers = {"Host": host_header, "User-Agent": limits.user_agent, "Accept-Encoding": "identity", "Accept": "*/*"}
    extensions = {"sni_hostname": host} if url.scheme == "https" and not _is_ip(host) else {}
    return pinned, headers, extensions


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _read_capped(response: httpx.Response, max_bytes: int, deadline: float, url: httpx.URL) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaError(f"{_show(url)}: body of {int(declared)} bytes is over the {max_bytes}-byte limit")
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk
        if len(buf) > max_bytes:
            raise MediaError(f"{_show(url)}: body is over the {max_bytes}-byte limit")
        if time.monotonic() > deadline:
            raise MediaError(f"{_show(url)}: download took too long")
    return bytes(buf)


def _show(url: httpx.URL | str) -> str:
    text = str(url)
    return text if len(text) <= 120 else text[:117] + "..."
