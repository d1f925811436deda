"""IPFS between real peers: `p2pnode serve` processes on loopback, driven by
the real `p2pnode ipfs` commands. A file added on one peer comes back whole
through another (bitswap), directories too; corrupted blocks are refused."""

from __future__ import annotations

import filecmp
import hashlib
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from p2pnode.cli import main
from p2pnode.devstack import Peer, devstack, start_peer, stop_peer
from p2pnode.ipfs.blockstore import BlockStore, CorruptBlock
from p2pnode.ipfs.cid import CID, read_varint
from p2pnode.ipfs.dagpb import decode_node
from p2pnode.ipfs.cli import UPLOAD_BATCH, _frames, _Uploader
from p2pnode.ipfs.frames import upload_frame
from p2pnode.ipfs.importer import Options, add_bytes, add_path, discard
from tests.test_ipfs_importer import write_random

pytestmark = pytest.mark.timeout(240)


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def cli_fails(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code != 0
    return result.output


@pytest.fixture(scope="module")
def two_peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Peer]]:
    with devstack(2, tmp_path_factory.mktemp("net")) as peers:
        yield peers


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src") / "tree"
    (root / "sub").mkdir(parents=True)
    write_random(root / "big.bin", 3_000_000, 7)  # over 1 MiB: `ipfs add` streams it to the node
    (root / "sub" / "deeper").mkdir()
    write_random(root / "sub" / "deeper" / "nested.bin", 1_400_000, 8)
    (root / "sub" / "note.txt").write_bytes(b"a note\n")
    (root / "empty").write_bytes(b"")
    return root


@pytest.mark.parametrize("version", ["0", "1"])
def test_a_directory_added_on_one_peer_comes_back_through_the_other(two_peers: list[Peer], tree: Path,
                                                                     tmp_path: Path, version: str) -> None:
    a, b = two_peers
    lines = cli("ipfs", "add", "--cid-version", version, str(tree), "--api", a.api).splitlines()
    root = lines[-1]
    assert root == cli("ipfs", "add", "--only-hash", "--cid-version", version, str(tree)).splitlines()[-1]
    assert root == str(add_path(tree, discard, Options(cid_version=int(version))).cid)
    out = tmp_path / "copy"
    cli("ipfs", "get", root, "-o", str(out), "--api", b.api)
    assert filecmp.dircmp(tree, out).diff_files == [] and not filecmp.dircmp(tree, out).left_only
    assert (out / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    assert (out / "sub" / "note.txt").read_bytes() == b"a note\n"
    held = BlockStore(b.data_dir / "ipfs" / "blocks")
    assert held.has(CID.parse(root))  # B now holds the blocks it fetched


def test_a_peer_pulls_a_whole_dag_from_another_as_one_stream(two_peers: list[Peer], tmp_path: Path) -> None:
    a, b = two_peers
    source = tmp_path / "pulled.bin"
    write_random(source, 1_500_000, 21)
    cid = cli("ipfs", "add", str(source), "--api", a.api).splitlines()[-1].split()[-1]
    blocks = len(source.read_bytes()) // (256 << 10) + 2  # the chunks and the root
    pulled = httpx.post(b.api + "/api/v1/ipfs/pull", json={"Cid": cid, "Provider": a.node_id}, timeout=60)
    assert pulled.status_code == 200, pulled.text
    assert pulled.json()["Blocks"] == blocks and pulled.json()["Bytes"] > 1_500_000
    again = httpx.post(b.api + "/api/v1/ipfs/pull", json={"Cid": cid}, timeout=60).json()
    assert again["Held"] is True and again["Blocks"] == 0
    cli("ipfs", "get", cid, "-o", str(tmp_path / "out.bin"), "--api", b.api)
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()
    nobody = httpx.post(b.api + "/api/v1/ipfs/pull", json={"Cid": str(CID.of(b"held by nobody"))}, timeout=60)
    assert nobody.status_code == 404 and "fetch its blocks instead" in nobody.text


def test_a_block_nobody_holds_fails_fast_with_a_hint(two_peers: list[Peer], tmp_path: Path) -> None:
    unknown = CID.of(b"nobody has this block", version=1, codec=0x55)
    output = cli_fails("ipfs", "get", str(unknown), "-o", str(tmp_path / "x"), "--api", two_peers[1].api)
    assert "no connected peer has block" in output and not (tmp_path / "x").exists()


def test_a_block_corrupted_on_disk_is_never_served(two_peers: list[Peer], tmp_path: Path) -> None:
    a, b = two_peers
    source = tmp_path / "small.txt"
    source.write_bytes(b"these bytes will rot on disk\n")
    root = cli("ipfs", "add", str(source), "--api", a.api).splitlines()[-1]
    cid = CID.parse(root)
    store = BlockStore(a.data_dir / "ipfs" / "blocks")
    pack, offset, length = store.location(cid)
    with pack.open("r+b") as file:  # the bytes rot inside the pack, beside other blocks
        file.seek(offset)
        rotten = file.read(length).replace(b"rot", b"ROT")
        file.seek(offset)
        file.write(rotten)
    with pytest.raises(CorruptBlock):
        store.get(cid)
    assert not store.has(cid)  # dropped, to be fetched again
    output = cli_fails("ipfs", "get", root, "-o", str(tmp_path / "out"), "--api", b.api)
    assert "no connected peer has block" in output


def test_the_api_refuses_a_block_that_does_not_match_its_cid(two_peers: list[Peer]) -> None:
    cid = CID.of(b"the real bytes")
    answer = httpx.put(f"{two_peers[0].api}/api/v1/ipfs/blocks/{cid}", content=b"other bytes")
    assert answer.status_code == 400 and "do not hash" in answer.json()["error"]
    bad = httpx.get(f"{two_peers[0].api}/api/v1/ipfs/blocks/not-a-cid")
    assert bad.status_code == 400


def test_the_batch_route_answers_blocks_in_order_and_bounds_a_request(two_peers: list[Peer], tree: Path) -> None:
    a, b = two_peers
    cli("ipfs", "add", str(tree / "big.bin"), "--api", a.api)
    store: dict[CID, bytes] = {}
    add_path(tree / "big.bin", lambda cid, block: store.__setitem__(cid, block))
    cids = list(store)[::-1]  # any order: the answer follows the question
    answer = httpx.post(f"{b.api}/api/v1/ipfs/blocks", json={"Cids": [str(c) for c in cids]}, timeout=60)
    assert answer.status_code == 200
    assert _frames(answer.content, len(cids)) == [store[c] for c in cids]  # fetched from A by B, in order
    too_many = httpx.post(f"{b.api}/api/v1/ipfs/blocks", json={"Cids": [str(cids[0])] * 65})
    assert too_many.status_code == 400
    with pytest.raises(LookupError):
        _frames(answer.content[:-1], len(cids))  # a cut answer is refused, not half used


def test_a_batched_add_stores_every_block_under_the_cids_the_importer_made(two_peers: list[Peer],
                                                                          tmp_path: Path) -> None:
    """`ipfs add` uploads in batches; the root CID (Kubo's, checked in
    test_ipfs_importer) and every block the node stores are the importer's."""
    a = two_peers[0]
    source = tmp_path / "batched.bin"
    write_random(source, 3 * UPLOAD_BATCH + 12345, 11)  # several batches and a short last one
    made: dict[CID, bytes] = {}
    expected = add_path(source, lambda cid, block: made.__setitem__(cid, block), Options(cid_version=1))
    uploader = _Uploader(a.api)
    added = add_path(source, uploader, Options(cid_version=1))
    uploader.finish()
    assert added.cid == expected.cid
    store = BlockStore(a.data_dir / "ipfs" / "blocks")
    assert all(store.get(cid) == block for cid, block in made.items())


def test_the_batch_upload_refuses_a_wrong_block_and_a_cut_body(two_peers: list[Peer]) -> None:
    api = f"{two_peers[0].api}/api/v1/ipfs/blocks"
    good, bad = CID.of(b"good bytes"), CID.of(b"the real bytes")
    body = b"".join(upload_frame(good, b"good bytes") + upload_frame(bad, b"other bytes"))
    answer = httpx.put(api, content=body)
    assert answer.status_code == 400 and "do not hash" in answer.json()["error"]
    cut = b"".join(upload_frame(good, b"good bytes"))[:-1]
    assert httpx.put(api, content=cut).status_code == 400
    assert httpx.put(api, content=b"\xff" * 20).status_code == 400
    assert httpx.put(api, content=b"".join(upload_frame(good, b"good bytes"))).json() == {"Stored": 1}


def test_id_lists_the_peer_and_its_addresses(two_peers: list[Peer]) -> None:
    lines = cli("ipfs", "id", "--api", two_peers[0].api).splitlines()
    assert lines[0] == two_peers[0].node_id and all(line.endswith(two_peers[0].node_id) for line in lines[1:])


def test_blockstore_refuses_wrong_bytes_and_keys_by_digest(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    data = b"same bytes"
    raw, dag = CID.of(data, version=1, codec=0x55), CID.of(data)
    store.put(raw, data)
    assert store.has(dag) and store.get(dag) == data  # the digest names the file
    with pytest.raises(CorruptBlock):
        store.put(CID.of(b"x"), b"y")
    assert hashlib.sha256(store.get(raw)).digest() == raw.digest


def test_the_ipfs_commands_send_the_api_token(tmp_path: Path) -> None:
    peer = start_peer(0, tmp_path / "node", [], ["--api-token", "s3cret"])
    try:
        source = tmp_path / "f.txt"
        source.write_bytes(b"behind a token\n")
        assert "needs a token" in cli_fails("ipfs", "add", str(source), "--api", peer.api)
        root = cli("--token", "s3cret", "ipfs", "add", str(source), "--api", peer.api).splitlines()[-1]
        cli("--token", "s3cret", "ipfs", "get", root, "-o", str(tmp_path / "back.txt"), "--api", peer.api)
        assert (tmp_path / "back.txt").read_bytes() == b"behind a token\n"
        big = tmp_path / "big.bin"  # streamed to the node (`POST /ipfs/add`), the token beside it
        write_random(big, 1_200_000, 41)
        assert "needs a token" in cli_fails("ipfs", "add", str(big), "--api", peer.api)
        root = cli("--token", "s3cret", "ipfs", "add", str(big), "--api", peer.api).splitlines()[-1]
        assert root == cli("ipfs", "add", "--only-hash", str(big)).splitlines()[-1]
    finally:
        stop_peer(peer)


def test_a_node_whose_block_index_was_damaged_rebuilds_it_and_serves_what_it_held(tmp_path: Path) -> None:
    """The index is the only map in use; the key file beside each pack lets
    a node that finds it damaged (or gone) make it again at start."""
    data_dir = tmp_path / "node"
    source = tmp_path / "big.bin"
    write_random(source, 3_000_000, 43)
    peer = start_peer(0, data_dir, [])
    try:
        root = cli("ipfs", "add", str(source), "--api", peer.api).splitlines()[-1]
    finally:
        stop_peer(peer)
    index = data_dir / "ipfs" / "blocks" / "index.sqlite"
    for leftover in index.parent.glob("index.sqlite-*"):
        leftover.unlink()
    index.write_bytes(b"not a database " * 1000)
    peer = start_peer(0, data_dir, [])
    try:
        cli("ipfs", "get", root, "-o", str(tmp_path / "back.bin"), "--api", peer.api)
    finally:
        stop_peer(peer)
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert list(index.parent.glob("index.sqlite.damaged-*"))  # kept aside for a look
    assert "rebuilt the block index" in (data_dir / "node.log").read_text()


def raw_post(api: str, head: str, body: bytes = b"") -> bytes:
    """Send a request's head and some body on a socket of our own, then hang
    up; what the node answered before that (b"" if nothing)."""
    url = urlsplit(api)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while not body:  # the whole answer: the node closes the connection after it
            try:
                part = sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not part:
                break
            answer += part
    return answer


ADD_OPTIONS = [({}, Options()), ({"cid-version": "1"}, Options(cid_version=1)),
               ({"raw-leaves": "true"}, Options(raw_leaves=True)),
               ({"cid-version": "1", "raw-leaves": "false"}, Options(cid_version=1, raw_leaves=False))]


@pytest.mark.parametrize("query,options", ADD_OPTIONS)
def test_the_add_route_stores_the_dag_the_importer_makes(two_peers: list[Peer], query: dict[str, str],
                                                        options: Options) -> None:
    """`POST /ipfs/add`: the node makes the DAG of the body (the one `--only-hash`
    makes, Kubo's: test_ipfs_importer) and holds every block of it."""
    a = two_peers[0]
    data = random.Random(str(query)).randbytes(2 * (1 << 20) + 12_000)  # 9 chunks, the last one short
    made: dict[CID, bytes] = {}
    expected = add_bytes(data, lambda cid, block: made.__setitem__(cid, block), options)
    url = f"{a.api}/api/v1/ipfs/add"
    sized = httpx.post(url, params=query, content=data, timeout=60)
    chunked = httpx.post(url, params=query, content=iter([data[:100_000], data[100_000:]]), timeout=60)
    for answer in (sized, chunked):
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"Cid": str(expected.cid), "Size": expected.tsize, "FileSize": len(data)}
    store = BlockStore(a.data_dir / "ipfs" / "blocks")
    assert len(made) > 9 and all(store.get(cid) == block for cid, block in made.items())


def test_ipfs_add_through_a_proxy_setting_streams_with_httpx(two_peers: list[Peer], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With a proxy set, the file goes through httpx (which honours it) rather than `socket.sendfile`."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: only NO_PROXY gets through
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    source = tmp_path / "proxied.bin"
    write_random(source, 1_700_000, 31)
    root = cli("ipfs", "add", str(source), "--api", two_peers[0].api).splitlines()[-1]
    assert root == cli("ipfs", "add", "--only-hash", str(source)).splitlines()[-1]


def test_the_add_route_refuses_bad_options_and_a_body_over_its_cap(two_peers: list[Peer]) -> None:
    url = f"{two_peers[0].api}/api/v1/ipfs/add"
    for query, word in [({"cid-version": "2"}, "cid-version"), ({"raw-leaves": "yes"}, "raw-leaves")]:
        answer = httpx.post(url, params=query, content=b"some bytes", timeout=30)
        assert answer.status_code == 400 and word in answer.json()["error"]
    empty = httpx.post(url, content=b"", timeout=30)  # an empty file is one empty leaf, as in Kubo
    assert empty.json() == {"Cid": "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", "Size": 6, "FileSize": 0}
    huge = raw_post(two_peers[0].api, f"POST /api/v1/ipfs/add HTTP/1.1\nHost: x\nContent-Length: {1 << 40}\n")
    assert huge.startswith(b"HTTP/1.1 413") and b"Node.IPFS.MaxAddSize" in huge  # before any byte of it came


@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_a_file_cut_short_is_not_added_and_the_node_goes_on(two_peers: list[Peer], framing: str) -> None:
    a = two_peers[0]
    data = random.Random(framing).randbytes(3 << 20)
    root = add_bytes(data, discard).cid
    half = data[:len(data) // 2]
    if framing == "chunked":
        head, body = "Transfer-Encoding: chunked\n", f"{len(half):x}\r\n".encode() + half + b"\r\n"
    else:
        head, body = f"Content-Length: {len(data)}\n", half
    raw_post(a.api, f"POST /api/v1/ipfs/add HTTP/1.1\nHost: x\n{head}", body)  # and the client is gone
    pin = httpx.post(f"{a.api}/api/v1/ipfs/pins", json={"Cid": str(root)}, timeout=30)
    assert pin.status_code == 404 and not BlockStore(a.data_dir / "ipfs" / "blocks").has(root)
    whole = httpx.post(f"{a.api}/api/v1/ipfs/add", content=data, timeout=60)  # the node goes on
    assert whole.status_code == 200 and whole.json()["Cid"] == str(root)


def test_a_held_dag_streams_to_the_client_in_writing_order_and_a_partial_one_is_refused(
        two_peers: list[Peer], tree: Path, tmp_path: Path) -> None:
    a, _ = two_peers
    root = cli("ipfs", "add", str(tree), "--api", a.api).splitlines()[-1]  # added and pinned: held whole
    with httpx.stream("POST", f"{a.api}/api/v1/ipfs/dag", json={"Cid": root}, timeout=60) as answer:
        assert answer.status_code == 200
        body = answer.read()
    blocks: dict[bytes, bytes] = {}
    add_path(tree, lambda cid, block: blocks.__setitem__(cid.digest, block))
    expected: list[bytes] = []

    def visit(cid: CID) -> None:
        expected.append(blocks[cid.digest])
        if cid.codec == 0x70:
            for link in decode_node(blocks[cid.digest]).links:
                visit(link.cid)

    visit(CID.parse(root))
    got, at = [], 0
    while at < len(body):
        length, at = read_varint(body, at)
        got.append(body[at:at + length - 1])
        at += length - 1
    assert got == expected

    lone = CID.of(b"a block held, but no DAG pinned under it", version=1, codec=0x55)
    httpx.put(f"{a.api}/api/v1/ipfs/blocks/{lone}", content=b"a block held, but no DAG pinned under it")
    partial = httpx.post(f"{a.api}/api/v1/ipfs/dag", json={"Cid": str(lone)})
    assert partial.status_code == 404 and "pull it first" in partial.text
    assert httpx.post(f"{a.api}/api/v1/ipfs/dag", json={"Cid": "Qm-not-a-cid"}).status_code == 400
    cli("ipfs", "get", str(lone), "-o", str(tmp_path / "lone"), "--api", a.api)  # block by block instead
    assert (tmp_path / "lone").read_bytes() == b"a block held, but no DAG pinned under it"


def test_a_held_dag_with_a_block_rotten_on_disk_ends_its_stream_with_why(two_peers: list[Peer],
                                                                          tmp_path: Path) -> None:
    a, _ = two_peers
    source = tmp_path / "rots.bin"
    write_random(source, 700_000, 5)
    root = cli("ipfs", "add", "--cid-version", "1", str(source), "--api", a.api).splitlines()[-1]
    store = BlockStore(a.data_dir / "ipfs" / "blocks")
    leaf = decode_node(store.get(CID.parse(root))).links[1].cid
    pack, offset, _ = store.location(leaf)
    with pack.open("r+b") as file:
        file.seek(offset)
        file.write(b"rotten")
    output = cli_fails("ipfs", "get", root, "-o", str(tmp_path / "out.bin"), "--api", a.api)
    assert f"block {leaf}" in output and "no connected peer has" in output
