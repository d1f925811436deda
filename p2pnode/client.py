"""A small synchronous client of a node's API, for the CLI and scripts."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:1234"
API_ENV = "P2PNODE_API"
TOKEN_ENV = "P2PNODE_API_TOKEN"
TERMINAL = ("Completed", "Failed", "Stopped")


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

    def download(self, ref: str, output_dir: Path) -> list[Path]:
        """Write every execution's result files under output_dir/<execution id>/."""
        answer = self._call("GET", f"/orchestrator/jobs/{ref}/results/files", timeout=120)
        written = []
        for item in answer["Items"]:
            if item["Error"]:
                raise ApiClientError(f"execution {item['ExecutionID']}: {item['Error']}")
            for file in item["Files"]:
                relative = Path(file["Path"])
                if relative.is_absolute() or ".." in relative.parts:
                    raise ApiClientError(f"refusing a result path outside the output directory: {file['Path']}")
                target = output_dir / item["ExecutionID"] / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(file["Data"]))
                written.append(target)
        return written

    def wait(self, ref: str, timeout: float = 600.0, poll: float = 0.2) -> dict[str, Any]:
        """Poll until the job is terminal; the last description."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = self.get_job(ref, include="executions")
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
            time.sleep(poll)

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
