"""Multiaddrs from users and peers, checked before libp2p sees them."""

from __future__ import annotations

import socket

from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.utils.address_validation import expand_wildcard_address
from multiaddr import Multiaddr

from p2pnode.transport._errors import InvalidAddress, ListenFailed


def peer_address(address: str) -> PeerInfo:
    """A dialable peer address: /ip4|ip6|dns.../tcp/PORT/p2p/ID."""
    try:
        return info_from_p2p_addr(Multiaddr(address))
    except Exception as error:  # multiaddr raises several types for bad text
        raise InvalidAddress(
            f"{address!r} is not a peer address: {error}; "
            "expected something like /ip4/10.0.0.5/tcp/4001/p2p/12D3KooW..."
        ) from error


def listen_address(address: str) -> Multiaddr:
    """A TCP listen address: /ip4|ip6/IP/tcp/PORT (port 0: any free one)."""
    try:
        parsed = Multiaddr(address)
    except Exception as error:
        raise InvalidAddress(f"{address!r} is not a multiaddr: {error}") from error
    names = [protocol.name for protocol in parsed.protocols()]
    if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
        raise InvalidAddress(f"{address!r} is not a TCP listen address like /ip4/0.0.0.0/tcp/4001")
    return parsed


def check_can_listen(address: Multiaddr) -> None:
    """Trap 14: libp2p listens with SO_REUSEPORT, so a second node on a taken
    port starts happily and the kernel splits connections between the two;
    and a listen that fails is printed, not raised. A plain bind finds both."""
    ip_version = address.protocols()[0].name
    family = socket.AF_INET6 if ip_version == "ip6" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        try:
            probe.bind((address.value_for_protocol(ip_version), int(address.value_for_protocol("tcp"))))
        except OSError as error:
            raise ListenFailed(
                f"cannot listen on {address}: {error.strerror}; "
                "is another node using this port, or is the IP not on this machine?"
            ) from error


def dialable(bound: Multiaddr) -> list[Multiaddr]:
    """What others can dial for a bound address: 0.0.0.0 becomes this machine's IPs."""
    return expand_wildcard_address(bound)
