"""`job get` never writes outside --output-dir, whatever a peer sends, and a
cut transfer resumes where it stopped.

The hostile peers here are real: a libp2p peer answering result requests
with crafted manifests and chunks, and an HTTP server on loopback answering
the client as a hostile or flaky node's API would."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
from libp2p.crypto.secp256k1 import create_new_key_pair

from p2pnode.client import ApiClient, ApiClientError
from p2pnode.results import ResultChunk, ResultFetcher, ResultManifest, ResultsUnavailable
from p2pnode.storage.local import FileEntry
from p2pnode.transport import Transport
from protocols import wire

SHA = "0" * 64


async def _hostile_peer(answer: Callable[[object], object], check: Callable[[ResultFetcher, str], Any]) -> Any:
    """Run `check(fetcher, hostile peer id)` against a peer answering with `answer`."""
    me, hostile = Transport(create_new_key_pair(), topics=[]), Transport(create_new_key_pair(), topics=[])

    async def handler(sender: str, data: bytes) -> bytes:
        return wire.encode(answer(wire.decode(data).message), hostile.peer_id)

    hostile.on_request(handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(me.run)
        await nursery.start(hostile.run)
        await me.connect(hostile.listen_addrs[0])

        async def request(peer: str, data: bytes, timeout: float) -> bytes:
            return await me.request(peer, data, timeout=timeout)

        fetcher = ResultFetcher(me.peer_id, request, server=None)  # type: ignore[arg-type]
        try:
            return await check(fetcher, hostile.peer_id)
        finally:
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("name", ["../../evil", "/etc/passwd", "outputs/../../x", "C:\\evil", "a\x00b"])
async def test_a_peer_sending_hostile_file_names_gets_refused(name: str) -> None:
    async def check(fetcher: ResultFetcher, peer: str) -> None:
        found = await fetcher.manifest(peer, "e-1")
        assert found.files == () and "unsafe file name" in found.error

    await _hostile_peer(lambda ask: ResultManifest("e-1", ((name, 1, SHA),)), check)


async def test_a_peer_sending_more_than_the_file_holds_is_refused() -> None:
    async def check(fetcher: ResultFetcher, peer: str) -> None:
        with pytest.raises(ResultsUnavailable, match="bad chunk"):
            async for _ in fetcher.stream(peer, "e-1", FileEntry("outputs/a", 4, SHA)):
                pass

    await _hostile_peer(lambda ask: ResultChunk("e-1", "outputs/a", 0, b"x" * 100), check)


async def test_a_node_that_is_gone_gets_a_clear_error_after_some_patience() -> None:
    me = Transport(create_new_key_pair(), topics=[])
    async with trio.open_nursery() as nursery:
        await nursery.start(me.run)

        async def request(peer: str, data: bytes, timeout: float) -> bytes:
            return await me.request(peer, data, timeout=timeout)

        fetcher = ResultFetcher(me.peer_id, request, server=None, patience=2.0)  # type: ignore[arg-type]
        gone = Transport(create_new_key_pair(), topics=[]).peer_id  # never started: nobody answers for it
        found = await fetcher.manifest(gone, "e-1")
        assert found.files == ()
        assert f"the node {gone} that holds these results cannot be reached" in found.error
        assert "did not answer for 2 s" in found.error and "publish to s3 or ipfs" in found.error
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- the client against an HTTP node


class _Node(BaseHTTPRequestHandler):
    """A node's API as a test wants it: `manifest`, `files`, and how many
    bytes of a file's first answer to send before cutting the connection."""

    manifest: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    cut_first_after: int | None = None
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        parts = urlsplit(self.path)
        type(self).requests.append(self.path)
        if parts.path.endswith("/results/files"):
            body = json.dumps(self.manifest).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        name = parts.path.split("/results/files/", 1)[1].split("/", 1)[1]
        offset = int(parse_qs(parts.query).get("offset", ["0"])[0])
        data = self.files[name][offset:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if type(self).cut_first_after is not None and name.endswith("big.bin"):
            self.wfile.write(data[: type(self).cut_first_after])
            type(self).cut_first_after = None
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def node() -> Iterator[tuple[type[_Node], str]]:
    handler = type("Node", (_Node,), {"manifest": {}, "files": {}, "cut_first_after": None, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _item(execution_id: str, files: dict[str, bytes]) -> dict[str, Any]:
    return {"ExecutionID": execution_id, "NodeID": "n", "Error": "",
            "Files": [{"Path": p, "Size": len(d), "SHA256": hashlib.sha256(d).hexdigest()} for p, d in files.items()]}


def _everything_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("execution_id", "path"),
    [("e-1", "../../escape"), ("e-1", "/tmp/escape"), ("..", "escape"), ("a/b", "x"), ("e-1", "outputs/../../../x"),
     ("e-1", "C:\\escape"), ("/abs", "x")],
)
def test_job_get_refuses_hostile_names_and_writes_nothing(
    node: tuple[type[_Node], str], tmp_path: Path, execution_id: str, path: str
) -> None:
    handler, url = node
    handler.manifest = {"Items": [_item("e-0", {"stdout": b"fine"}), _item(execution_id, {path: b"pwned"})]}
    handler.files = {"stdout": b"fine", path: b"pwned"}
    output = tmp_path / "out"
    with ApiClient(url) as client, pytest.raises(ApiClientError, match="outside the output directory"):
        client.download("job", output)
    assert _everything_under(tmp_path) <= {output}  # nothing at all was written, not even the good file
    assert not any("/results/files/" in r for r in handler.requests)


def test_job_get_refuses_to_write_through_a_symlink_in_the_output_dir(node: tuple[type[_Node], str], tmp_path: Path) -> None:
    handler, url = node
    handler.manifest = {"Items": [_item("e-1", {"outputs/x": b"pwned"})]}
    handler.files = {"outputs/x": b"pwned"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out" / "e-1").mkdir(parents=True)
    (tmp_path / "out" / "e-1" / "outputs").symlink_to(elsewhere)
    with ApiClient(url) as client, pytest.raises(ApiClientError, match="outside the output directory"):
        client.download("job", tmp_path / "out")
    assert list(elsewhere.iterdir()) == []


def test_a_cut_download_resumes_at_its_offset_and_is_checked(node: tuple[type[_Node], str], tmp_path: Path) -> None:
    handler, url = node
    payload = os.urandom(3 << 20)
    handler.manifest = {"Items": [_item("e-1", {"stdout": b"hi\n", "outputs/big.bin": payload})]}
    handler.files = {"stdout": b"hi\n", "outputs/big.bin": payload}
    handler.cut_first_after = 1 << 20
    with ApiClient(url) as client:
        written = client.download("job", tmp_path)
    assert (tmp_path / "e-1" / "outputs" / "big.bin").read_bytes() == payload
    assert sorted(p.name for p in written) == ["big.bin", "stdout"]
    asked = [r.rsplit("offset=", 1)[1] for r in handler.requests if "big.bin" in r]
    assert asked == ["0", str(1 << 20)]  # once from the start, then from where the cut left it
    with ApiClient(url) as client:
        client.download("job", tmp_path)  # again: files already there and whole are not fetched again
    assert len([r for r in handler.requests if "big.bin" in r]) == 2


def test_a_corrupted_download_is_refused_and_not_kept(node: tuple[type[_Node], str], tmp_path: Path) -> None:
    handler, url = node
    handler.manifest = {"Items": [_item("e-1", {"outputs/a": b"the real bytes"})]}
    handler.files = {"outputs/a": b"not the bytes!"}
    with ApiClient(url) as client, pytest.raises(ApiClientError, match="sha256"):
        client.download("job", tmp_path)
    assert not (tmp_path / "e-1" / "outputs" / "a").exists()
