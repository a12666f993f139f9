"""Which hosts a fetch may connect to: public unicast addresses only, never loopback, private or metadata.

The check is on resolved addresses (the fetch then connects to the address that passed), so a name that
resolves to an internal address is refused like the address itself. Every refusal (a blocked name, a name that
does not resolve, an internal address, a port not allowed) says the same words, so that the fetcher cannot be
used to tell which internal names exist or which ports are open.
"""

from __future__ import annotations

import ipaddress
import socket

from deployments.media.limits import MediaError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS / GCP / Azure / OpenStack / Oracle instance metadata
        "169.254.170.2/32",  # AWS ECS task metadata
        "168.63.129.16/32",  # Azure wire server (a public address)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud legacy metadata
        "fd00:ec2::254/128",  # AWS IPv6 metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_BLOCKED_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")


def refusal(host: str) -> MediaError:
    """The one answer for every host the fetcher will not use, whatever the reason (no oracle)."""
    return MediaError(f"refused to fetch from {host!r}: not a reachable public host")


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses that are not cloud metadata endpoints."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        embedded = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _NAT64_LOCAL:
            return False
        if embedded and not all(is_public_address(e) for e in embedded):
            return False
        if ip.is_site_local:
            return False
    if any(ip in net for net in _METADATA_NETS):
        return False
    bad = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
    return ip.is_global and not bad and not ip.is_unspecified


class AddressPolicy:
    """Which hosts a fetch may connect to. Subclass (tests only) to allow a local test server."""

    def check_host(self, host: str) -> None:
        """Refuse names that are internal by definition, before any lookup."""
        name = host.rstrip(".").lower()
        if name in _BLOCKED_NAMES or name.endswith(".localhost"):
            raise refusal(host)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` resolves to (an IP literal is itself); a name that does not resolve is refused."""
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise refusal(host) from exc
        out = []
        for info in infos:
            addr = info[4][0]
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            if ip not in out:
                out.append(ip)
        if not out:
            raise refusal(host)
        return out

    def allows(self, ip: IPAddress, port: int) -> bool:
        """May a fetch connect to this address (the port is checked apart, by `allows_port`)?"""
        return is_public_address(ip)

    def allows_port(self, port: int, allowed: tuple[int, ...] | None) -> bool:
        """May a URL name this port? `allowed` is MediaLimits.allowed_ports (None or empty: any port)."""
        return not allowed or port in allowed


PUBLIC_ONLY = AddressPolicy()
