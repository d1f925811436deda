"""`ipfs` inputs and the `ipfs` publisher, on the node's embedded IPFS.

An input is exported from its CID (fetched over bitswap from whichever peer
holds it, every block verified) into the execution's folder and mounted
read-only. The publisher adds the execution's outputs as one UnixFS
directory, the layout the reference network uses:

    stdout, stderr, exitCode, and one folder per ResultPath name

and returns `ipfs://CID`; the blocks stay pinned in this node's store for
its `ipfs_results_pin` seconds, where any peer fetches them. A fetched input
stays as cache under the node's `ipfs_cache_quota`. Nothing is followed through symlinks a task may leave:
they are published as symlinks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2pnode.ipfs.cid import CID, CIDError
from p2pnode.ipfs.exporter import ExportError
from p2pnode.ipfs.importer import Added, Options, add_bytes, add_directory_entries, add_path
from p2pnode.lazy import lazy_import

trio = lazy_import("trio")  # the CLI imports this module for `location_cid` alone

if TYPE_CHECKING:  # the CLI reads locations without loading libp2p
    from p2pnode.ipfs.service import IpfsService

SCHEME = "ipfs://"
OPTIONS = Options(hidden=True)  # a result keeps every file the task wrote


class IpfsStorageError(Exception):
    """An ipfs input could not be fetched, or results could not be published."""


def cid_of(params: dict[str, Any]) -> CID:
    try:
        return CID.parse(str(params.get("CID", "")))
    except CIDError as error:
        raise IpfsStorageError(f"ipfs input: {error}") from None


async def fetch_input(ipfs: IpfsService | None, params: dict[str, Any], dest: Path) -> Path:
    """Write the input's file or directory at `dest` (which must not exist yet)."""
    if ipfs is None:
        raise IpfsStorageError("this node runs no IPFS")
    cid = cid_of(params)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        await ipfs.get(cid, dest)
    except (ExportError, LookupError) as error:
        raise IpfsStorageError(f"could not fetch {cid}: {error}") from None
    await ipfs.fetched(cid)
    return dest


async def publish(ipfs: IpfsService | None, workdir: Path, exit_code: int, result_names: list[str]) -> str:
    """Add stdout, stderr, exitCode and each results/NAME folder as one directory; `ipfs://CID`."""
    if ipfs is None:
        raise IpfsStorageError("this node runs no IPFS")

    def build() -> Added:
        with ipfs.store.batch() as put:
            entries: list[tuple[str, Added]] = []
            for name in ("stdout", "stderr"):
                path = workdir / name
                entries.append((name, add_path(path, put, OPTIONS) if path.is_file() else add_bytes(b"", put, OPTIONS)))
            entries.append(("exitCode", add_bytes(f"{exit_code}".encode(), put, OPTIONS)))
            for name in sorted(set(result_names)):
                folder = workdir / "results" / name
                if folder.is_dir():
                    entries.append((name, add_path(folder, put, OPTIONS)))
            return add_directory_entries(entries, put, OPTIONS)

    try:
        added = await trio.to_thread.run_sync(build)
    except (OSError, ValueError) as error:
        raise IpfsStorageError(f"could not add the results to IPFS: {error}") from None
    await ipfs.pin(added.cid, ipfs.results_pin)  # kept (and announced) for the node's ipfs_results_pin
    return SCHEME + str(added.cid)


def location_cid(location: str) -> CID | None:
    """The CID of an `ipfs://CID` result location, else None."""
    if not location.startswith(SCHEME):
        return None
    try:
        return CID.parse(location[len(SCHEME):])
    except CIDError:
        return None
