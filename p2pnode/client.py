"""A small synchronous client of a node's API, for the CLI and scripts."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from p2pnode.lazy import lazy_import

httpx = lazy_import("httpx")  # loaded by the first request, not by `p2pnode --help`

from p2pnode.storage.paths import UnsafePath, inside

DEFAULT_API = "http://127.0.0.1:1234"
API_ENV = "P2PNODE_API"
TOKEN_ENV = "P2PNODE_API_TOKEN"
TERMINAL = ("Completed", "Failed", "Stopped")
LONG_POLL = 30.0  # seconds one wait for a job's change may take


class ApiClientError(Exception):
    """The node answered with an error, or could not be reached."""

    def __init__(self, message: str, hint: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.message, self.hint, self.status = message, hint, status

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ApiClient:
    def __init__(self, base_url: str = DEFAULT_API, timeout: float = 30.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url + "/api/v1", timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ jobs

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", "/orchestrator/jobs", json={"Job": job})

    def list_jobs(self, **params: Any) -> dict[str, Any]:
        return self._call("GET", "/orchestrator/jobs", params={k: v for k, v in params.items() if v not in (None, "")})

    def get_job(self, ref: str, include: str = "") -> dict[str, Any]:
        return self._call("GET", f"/orchestrator/jobs/{ref}", params={"include": include} if include else None)

    def stop_job(self, ref: str, reason: str = "") -> dict[str, Any]:
        return self._call("DELETE", f"/orchestrator/jobs/{ref}", params={"reason": reason} if reason else None)

    def executions(self, ref: str) -> dict[str, Any]:
        return self._call("GET", f"/orchestrator/jobs/{ref}/executions")

    def history(self, ref: str) -> dict[str, Any]:
        return self._call("GET", f"/orchestrator/jobs/{ref}/history")

    def results(self, ref: str) -> dict[str, Any]:
        return self._call("GET", f"/orchestrator/jobs/{ref}/results")

    def logs(self, ref: str, follow: bool = False) -> Iterator[dict[str, Any]]:
        params = {"follow": "true" if follow else "false"}
        try:
            with self._http.stream("GET", f"/orchestrator/jobs/{ref}/logs", params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error

    def download(self, ref: str, output_dir: Path, attempts: int = 10) -> list[Path]:
        """Write every execution's results under output_dir/<execution id>/
        (stdout, stderr, exitCode, one folder per result path), streamed to
        disk, resumed where a cut connection left off, each file checked
        against its sha256. Nothing is written outside `output_dir`."""
        answer = self._call("GET", f"/orchestrator/jobs/{ref}/results/files", timeout=120)
        plan = []
        for item in answer.get("Items", []):
            if item.get("Error"):
                raise ApiClientError(f"execution {item.get('ExecutionID')}: {item['Error']}")
            folder = _confined(output_dir, str(item.get("ExecutionID", "")), single=True)
            for file in item.get("Files", []):
                _confined(folder, str(file.get("Path", "")))  # refuse before writing anything
                plan.append((item["ExecutionID"], file, folder))
        written = []
        for execution_id, file, folder in plan:
            written.append(self._fetch_file(ref, execution_id, file, folder, attempts))
        return written

    def _fetch_file(self, ref: str, execution_id: str, file: dict[str, Any], folder: Path, attempts: int) -> Path:
        size, expected = int(file["Size"]), str(file["SHA256"])
        _confined(folder, str(file["Path"])).parent.mkdir(parents=True, exist_ok=True)
        target = _confined(folder, str(file["Path"]))  # again: the folders now exist, symlinks included
        partial = target.with_name(target.name + ".part")
        if not target.is_symlink() and target.is_file() and target.stat().st_size == size and _sha256(target) == expected:
            return target  # fetched whole before: a second `job get` resumes, not restarts
        digest = hashlib.sha256()
        if partial.is_symlink():
            partial.unlink()
        if partial.exists() and partial.stat().st_size <= size:
            with partial.open("rb") as done:
                while block := done.read(1 << 20):
                    digest.update(block)
        else:
            partial.write_bytes(b"")
        url = f"/orchestrator/jobs/{ref}/results/files/{execution_id}/{quote(file['Path'])}"
        failures = 0
        while (offset := partial.stat().st_size) < size:
            try:
                with self._http.stream("GET", url, params={"offset": offset}, timeout=120) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._raise(response)
                    with partial.open("ab") as out:
                        for block in response.iter_bytes():
                            out.write(block)
                            digest.update(block)
            except (httpx.TransportError, ApiClientError) as error:
                failures += 1
                if isinstance(error, ApiClientError) and (error.status < 500 or failures >= 3):
                    raise  # the node has waited for the results' node already: say why, now
                if failures >= attempts:
                    raise self._unreachable(error) from error
                time.sleep(min(5.0, 0.5 * failures))  # then resume at the offset reached
        if partial.stat().st_size != size or digest.hexdigest() != expected:
            partial.unlink()
            raise ApiClientError(f"{file['Path']} of execution {execution_id} does not match its sha256",
                                 "the transfer was corrupted; run `job get` again")
        partial.replace(target)
        return target

    def wait(self, ref: str, timeout: float = 600.0, poll: float = 0.2) -> dict[str, Any]:
        """The job's description once it is terminal. Each call asks the node to
        answer when the job changes (long-poll), so the node's answer, not a
        polling interval, sets the pace; `poll` paces only retries (and nodes
        that do not wait)."""
        deadline = time.monotonic() + timeout
        revision = -1
        while True:
            left = deadline - time.monotonic()
            try:
                answer = self._call("GET", f"/orchestrator/jobs/{ref}", timeout=min(max(left, 0), LONG_POLL) + 10,
                                    params={"include": "executions", "wait": f"{min(max(left, 0), LONG_POLL):.1f}",
                                            "since": str(revision), "until": "ended"})
            except ApiClientError as error:
                if error.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(poll)  # the job's announcement has not reached this node yet
                continue
            if answer["Job"]["State"]["StateType"] in TERMINAL:
                return answer
            if time.monotonic() > deadline:
                raise ApiClientError(f"job {ref} is still {answer['Job']['State']['StateType']} after {timeout:.0f} s",
                                     "it goes on running; `p2pnode job describe` shows it later")
            if answer["Job"]["Revision"] == revision:
                time.sleep(poll)  # unchanged: the wait ran out, or the node does not wait
            revision = answer["Job"]["Revision"]

    # ------------------------------------------------------------ nodes and agent

    def nodes(self) -> dict[str, Any]:
        return self._call("GET", "/orchestrator/nodes")

    def node(self, ref: str) -> dict[str, Any]:
        return self._call("GET", f"/orchestrator/nodes/{ref}")

    def alive(self) -> dict[str, Any]:
        return self._call("GET", "/agent/alive")

    def version(self) -> dict[str, Any]:
        return self._call("GET", "/agent/version")

    def agent_node(self) -> dict[str, Any]:
        return self._call("GET", "/agent/node")

    # ------------------------------------------------------------ held bids

    def bids(self, held_only: bool = False) -> dict[str, Any]:
        return self._call("GET", "/compute/bids", params={"all": "false"} if held_only else None)

    def decide_bid(self, execution_id: str, accept: bool, reason: str = "") -> dict[str, Any]:
        return self._call("POST", f"/compute/bids/{execution_id}", json={"Accept": accept, "Reason": reason})

    # ------------------------------------------------------------ plumbing

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    def _raise(self, response: httpx.Response) -> None:
        try:
            body = response.json()
            raise ApiClientError(body.get("error", response.text), body.get("hint", ""), response.status_code)
        except (ValueError, AttributeError):
            raise ApiClientError(f"the node answered {response.status_code}: {response.text[:200]}", status=response.status_code)

    def _unreachable(self, error: Exception) -> ApiClientError:
        return ApiClientError(
            f"cannot reach a node at {self.base_url}: {error}",
            f"start one with `p2pnode serve`, or point --api / ${API_ENV} at a running node",
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _confined(root: Path, name: str, single: bool = False) -> Path:
    """`root/name`, refused if a peer's name would lead outside `root`."""
    try:
        if single and "/" in name:
            raise UnsafePath(f"{name!r} is not a single folder name")
        return inside(root, name)
    except UnsafePath as error:
        raise ApiClientError(f"refusing a result path outside the output directory: {error}",
                             "the node sent a hostile or broken file name; nothing was written for it") from None
