"""The network of a `Network: HTTP` docker run: a holder container and the egress proxy in it.

The holder is a container with no network whose only process sleeps; the
node opens the egress proxy's listener inside its network namespace
(`egress_proxy.listen_in_namespace`) and the job's container joins that
namespace, so the proxy is up before the task's first instruction and is the
only thing it can reach. The holder's image is built here from the host's
static busybox (Debian's `busybox-static`), since no registry may be
reachable; it carries the run's labels, so a node killed mid-run removes it
at its next start like any container it owns.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode.engines.egress_proxy import PROXY_PORT, EgressPolicy, EgressProxy, listen_in_namespace

HOLDER_IMAGE = "p2pnode/holder:1"
BUSYBOX = Path("/bin/busybox")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")


class EgressUnavailable(RuntimeError):
    """This node cannot hold a container to its Domains; the message says what to install or change."""


@dataclass(frozen=True)
class Egress:
    """What the job's container is given: the namespace to join and the proxy's address."""

    network_mode: str
    environment: Mapping[str, str]
    proxy: EgressProxy


def proxy_environment(port: int = PROXY_PORT) -> dict[str, str]:
    """Proxy variables for both letter cases; NO_PROXY emptied so an image's own cannot bypass it."""
    address = f"http://127.0.0.1:{port}"
    return {**{name: address for name in PROXY_VARIABLES}, **{name: "" for name in NO_PROXY_VARIABLES}}


@contextmanager
def http_egress(client: Any, labels: Mapping[str, str], domains: tuple[str, ...],
                policy: EgressPolicy) -> Iterator[Egress]:
    """A holder container with the egress proxy listening inside it, for one run; both go at the end."""
    import docker

    _ensure_holder_image(client)
    holder = client.containers.create(
        HOLDER_IMAGE, ["/bin/busybox", "sleep", "2147483647"], labels=dict(labels),
        network_mode="none", detach=True,
    )
    proxy: EgressProxy | None = None
    try:
        holder.start()
        holder.reload()
        pid = int(holder.attrs.get("State", {}).get("Pid") or 0)
        if pid <= 0:
            raise EgressUnavailable("the egress holder container did not start")
        proxy = EgressProxy(listen_in_namespace(pid), domains, policy).start()
        yield Egress(f"container:{holder.id}", proxy_environment(), proxy)
    finally:
        if proxy is not None:
            proxy.close()
        try:
            holder.remove(force=True)
        except docker.errors.NotFound:
            pass


def _ensure_holder_image(client: Any) -> None:
    import docker

    try:
        client.images.get(HOLDER_IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    if not _static_busybox():
        raise EgressUnavailable(
            "this node needs a static /bin/busybox to build the container that holds an HTTP network; "
            "install it (apt-get install busybox-static) or decline Network Type HTTP"
        )
    repository, tag = HOLDER_IMAGE.split(":")
    client.api.import_image_from_data(_holder_rootfs(), repository=repository, tag=tag)


def _static_busybox() -> bool:
    try:
        header = BUSYBOX.read_bytes()[:4096]
    except OSError:
        return False
    return header.startswith(b"\x7fELF") and b"/ld-linux" not in header and b"ld.so" not in header


def _holder_rootfs() -> bytes:
    import tarfile  # here: only a peer that starts a networked Docker job builds this image

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
    return buffer.getvalue()
