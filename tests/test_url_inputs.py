"""`url` inputs: non-public addresses refused unless allow-listed (also after
redirects, and by the address actually resolved and connected to), size cap,
time-out and checksum from the node's config, streamed to disk. Servers are
real, on loopback; the addresses refused are never connected to."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from p2pnode.storage.url import UrlError, UrlPolicy, download, refusal
from tests.integration_support import data_url, wasm_job
from tests.test_integration import Network, network  # noqa: F401 - the fixture
from tests.wasm_fixtures import COPY

DATA = b"a file on a loopback server\n" * 100


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fc00::1",
                                     "::ffff:127.0.0.1", "::ffff:169.254.169.254"])
def test_non_public_addresses_are_refused_with_the_way_to_allow_them(address: str) -> None:
    why = refusal(address, ())
    assert why is not None and "--url-allow-networks" in why


def test_public_and_allow_listed_addresses_pass() -> None:
    import ipaddress

    assert refusal("93.184.216.34", ()) is None  # only classified: nothing is sent there
    assert refusal("127.0.0.5", (ipaddress.ip_network("127.0.0.0/8"),)) is None
    assert refusal("::ffff:10.0.0.1", (ipaddress.ip_network("10.0.0.0/8"),)) is None


class _Server(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        type(self).hits.append(self.path)
        if self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect-to/"))
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(3)
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[type[_Server], str]]:
    handler = type("Server", (_Server,), {"hits": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


ALLOW_ONE = UrlPolicy(allow_networks=("127.0.0.1/32",), max_bytes=1 << 20, timeout=10)


async def test_a_loopback_url_is_refused_by_default_and_never_contacted(server: Any, tmp_path: Path) -> None:
    handler, host = server
    for url in (f"http://{host}/data", f"http://localhost:{host.split(':')[1]}/data"):  # by its resolved address too
        with pytest.raises(UrlError, match="loopback, link-local, private"):
            await download(url, tmp_path / "data", UrlPolicy())
    assert handler.hits == [] and not list(tmp_path.iterdir())


async def test_an_allow_listed_url_is_streamed_to_disk_and_checked(server: Any, tmp_path: Path) -> None:
    _, host = server
    digest = hashlib.sha256(DATA).hexdigest()
    assert await download(f"http://{host}/data", tmp_path / "data", ALLOW_ONE, digest) == len(DATA)
    assert (tmp_path / "data").read_bytes() == DATA
    with pytest.raises(UrlError, match="checksum mismatch"):
        await download(f"http://{host}/data", tmp_path / "bad", ALLOW_ONE, "1" * 64)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.part").exists()


async def test_a_redirect_to_an_address_not_allowed_is_refused(server: Any, tmp_path: Path) -> None:
    handler, host = server
    port = host.split(":")[1]
    with pytest.raises(UrlError, match="127.0.0.2 is a loopback"):
        await download(f"http://{host}/redirect-to/http://127.0.0.2:{port}/data", tmp_path / "data", ALLOW_ONE)
    assert handler.hits == [f"/redirect-to/http://127.0.0.2:{port}/data"]  # 127.0.0.2 never asked


async def test_size_cap_and_time_out_come_from_the_node(server: Any, tmp_path: Path) -> None:
    _, host = server
    with pytest.raises(UrlError, match="over this node's cap"):
        await download(f"http://{host}/data", tmp_path / "a", UrlPolicy(("127.0.0.1/32",), max_bytes=100, timeout=10))
    with pytest.raises(UrlError, match="longer than this node's 0.5 s"):
        await download(f"http://{host}/slow", tmp_path / "b", UrlPolicy(("127.0.0.1/32",), timeout=0.5))
    assert not list(tmp_path.iterdir())


@pytest.mark.timeout(240)
def test_a_peer_fetches_an_allow_listed_url_and_fails_a_job_for_one_it_may_not(
    network: Network, server: Any, tmp_path: Path  # noqa: F811
) -> None:
    _, host = server
    network.start(0, "--url-allow-networks", "127.0.0.1/32")
    network.converge(1)

    def job(url: str) -> dict[str, Any]:
        spec = wasm_job(data_url(COPY))
        params = {"URL": url, "ChecksumSHA256": hashlib.sha256(DATA).hexdigest()}
        spec["Tasks"][0]["InputSources"] = [{"Target": "/inputs/data.txt", "Source": {"Type": "url", "Params": params}}]
        return spec

    with network.client(0) as client:
        good = client.wait(client.submit(job(f"http://{host}/data"))["JobID"], timeout=90)
        assert good["Job"]["State"]["StateType"] == "Completed", good["Job"]["State"]
        (copy,) = [p for p in client.download(good["Job"]["ID"], tmp_path) if p.name == "copy.txt"]
        assert copy.read_bytes() == DATA[:4096]  # COPY copies one 4 KiB read
        port = host.split(":")[1]
        bad = client.wait(client.submit(job(f"http://{host}/redirect-to/http://127.0.0.2:{port}/data"))["JobID"], timeout=90)
    assert bad["Job"]["State"]["StateType"] == "Failed"
    assert any("127.0.0.2 is a loopback" in e["ComputeState"]["Message"] for e in bad["Executions"]["Items"])
