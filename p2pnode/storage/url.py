"""`url` inputs: an HTTP(S) download streamed to disk, guarded.

A job must not turn the node into a window on its own network: every hop
(the URL and each redirect) is resolved, and any address that is not public
(loopback, link-local, private, shared, multicast, unspecified…) is refused
unless the operator allow-listed its network (`Node.Compute.URL.AllowNetworks`,
`--url-allow-networks 127.0.0.0/8`). The address actually connected to is
checked again before a byte of the body is read, so a name that resolves
differently the second time gains nothing. The download is capped in size
and time by the node's config, and an optional ChecksumSHA256 (hex or
base64) is verified before the file is kept.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import trio

from p2pnode.lazy import lazy_import
from p2pnode.storage.s3 import S3Error, expected_digest

httpx = lazy_import("httpx")  # the first url input loads it, not an idle peer

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlError(Exception):
    """The URL cannot or may not be fetched; the message says why and how to fix it."""


@dataclass(frozen=True)
class UrlPolicy:
    allow_networks: tuple[str, ...] = ()  # CIDRs the operator allows despite not being public
    max_bytes: int = 1 << 30
    timeout: float = 300.0

    def networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(text, strict=False) for text in self.allow_networks)


def refusal(address: str, allowed: tuple[Network, ...]) -> str | None:
    """Why a job may not reach `address`, or None."""
    ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return None
    if ip.is_global and not ip.is_multicast:
        return None
    return (f"{ip} is a loopback, link-local, private or otherwise non-public address; its operator can allow it "
            f"with --url-allow-networks (Node.Compute.URL.AllowNetworks), e.g. {ip}/32")


async def _check_host(host: str, port: int, allowed: tuple[Network, ...]) -> None:
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except OSError as error:
        raise UrlError(f"cannot resolve {host}: {error}") from None
    for *_, sockaddr in infos:
        why = refusal(str(sockaddr[0]), allowed)
        if why is not None:
            raise UrlError(f"{host} resolves to {why}")


async def check_endpoint(url: str, policy: UrlPolicy) -> None:
    """Refuse an endpoint a job names (an S3 Endpoint) on the same terms as
    a url input: the node's credentials sign what is sent there."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlError(f"endpoint {url!r} is not an http(s) URL")
    await _check_host(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), policy.networks())


async def download(url: str, destination: Path, policy: UrlPolicy, checksum: str | None = None) -> int:
    """Fetch `url` into `destination` (a file); the number of bytes."""
    allowed = policy.networks()
    try:
        digest = expected_digest(checksum) if checksum else None
    except S3Error as error:
        raise UrlError(str(error).replace("ChecksumSHA256", "the url's ChecksumSHA256")) from None
    partial = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with trio.fail_after(policy.timeout):
            size, got = await _fetch(url, partial, policy.max_bytes, allowed)
    except trio.TooSlowError:
        partial.unlink(missing_ok=True)
        raise UrlError(f"{url} took longer than this node's {policy.timeout:g} s limit for url inputs") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if digest is not None and got != digest:
        partial.unlink(missing_ok=True)
        raise UrlError(f"checksum mismatch for {url}: ChecksumSHA256 says {digest}, the download's is {got}")
    partial.replace(destination)
    return size


async def _fetch(url: str, partial: Path, max_bytes: int, allowed: tuple[Network, ...]) -> tuple[int, str]:
    async with httpx.AsyncClient(follow_redirects=False, timeout=30, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UrlError(f"{url!r} is not an http(s) URL")
            await _check_host(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allowed)
            try:
                async with client.stream("GET", url) as response:
                    _check_peer(response, url, allowed)
                    if response.status_code in REDIRECTS and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise UrlError(f"GET {url} answered {response.status_code}")
                    return await _save(response, url, partial, max_bytes)
            except httpx.HTTPError as error:
                raise UrlError(f"could not download {url}: {error}") from None
    raise UrlError(f"{url} redirects more than {MAX_REDIRECTS} times")


def _check_peer(response: httpx.Response, url: str, allowed: tuple[Network, ...]) -> None:
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer:
        raise UrlError(f"cannot tell which address {url} connected to; refused")
    why = refusal(str(peer[0]), allowed)
    if why is not None:
        raise UrlError(f"{url} connected to {why}")


async def _save(response: httpx.Response, url: str, partial: Path, max_bytes: int) -> tuple[int, str]:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise UrlError(f"{url} is {declared} bytes, over this node's cap of {max_bytes} for url inputs")
    hasher, size = hashlib.sha256(), 0
    with partial.open("wb") as out:
        async for block in response.aiter_bytes():
            size += len(block)
            if size > max_bytes:
                raise UrlError(f"{url} is over this node's cap of {max_bytes} bytes for url inputs")
            hasher.update(block)
            out.write(block)
    return size, hasher.hexdigest()
