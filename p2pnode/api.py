"""The client API: HTTP + JSON on the node's own trio loop (hypercorn).

Routes and shapes follow the reference network's v1 API, so its clients work.
Every error is JSON: {"error": what went wrong, "hint": what to do, "code"}.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from p2pnode.api_guard import ApiGuard
from p2pnode.runtime import AmbiguousJobRef, JobNotFound, Runtime
from p2pnode.views import execution_view, history_view, job_view, node_view
from protocols.events import ProbeVerdict
from protocols.jobspec import MAX_SPEC_BYTES, JobSpecError, job_spec_from_data
from protocols.node import VERSION

PREFIX = "/api/v1"


class ApiError(Exception):
    def __init__(self, status: int, error: str, hint: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.hint = status, error, hint


def build_app(runtime: Runtime) -> Starlette:
    """The ASGI app of one node."""

    async def put_job(request: Request) -> Response:
        """
        summary: 'Submit a job'
        description: 'Body {"Job": {...}} in the job file''s shape; answers {"JobID", "EvaluationID", "Warnings"}.'
        """
        body = await _json(request)
        if not isinstance(body, dict) or "Job" not in body:
            raise ApiError(400, 'the body must be {"Job": {...}}', "send the job document under the key Job")
        try:
            parsed = job_spec_from_data(body["Job"])
        except JobSpecError as error:
            raise ApiError(400, str(error), "fix the job document; `p2pnode job validate FILE` shows every error")
        spec = parsed.spec.with_node_defaults(runtime.settings.job_defaults)
        size = len(json.dumps(spec.to_document()))
        if size > MAX_SPEC_BYTES:
            raise ApiError(413, f"the job is {size} bytes as JSON; a job may hold at most {MAX_SPEC_BYTES}",
                           "put large data in an input source (ipfs, s3, url) rather than inline in the job")
        job_id = f"j-{uuid.uuid4()}"
        await runtime.submit(job_id, spec)
        return JSONResponse({"JobID": job_id, "EvaluationID": f"ev-{uuid.uuid4()}", "Warnings": list(parsed.warnings)})

    async def list_jobs(request: Request) -> Response:
        """
        summary: 'List jobs'
        description: 'Query limit, next_token, order_by (created_at|modified_at|id|name), reverse, namespace, labels (k=v,...).'
        """
        query = request.query_params
        jobs = runtime.kept_jobs()
        namespace = query.get("namespace", "")
        if namespace and namespace != "*":
            jobs = [j for j in jobs if j.header.spec.namespace == namespace]
        for selector in filter(None, query.get("labels", "").split(",")):
            key, _, value = selector.partition("=")
            jobs = [j for j in jobs if key.strip() in j.header.spec.labels and (not value or j.header.spec.labels[key.strip()] == value.strip())]
        order = query.get("order_by", "created_at")
        keys: dict[str, Callable[[Any], Any]] = {
            "created_at": lambda j: (j.header.create_time, j.id),
            "modified_at": lambda j: (j.header.modify_time, j.id),
            "id": lambda j: j.id,
            "name": lambda j: (j.header.name, j.id),
        }
        if order not in keys:
            raise ApiError(400, f"cannot order by {order!r}", f"use one of {', '.join(keys)}")
        reverse = query.get("reverse", "false").lower() in ("1", "true", "yes")
        jobs.sort(key=keys[order], reverse=not reverse)  # newest first by default
        items, token = _page(jobs, query)
        return JSONResponse({"Items": [job_view(j) for j in items], "NextToken": token})

    async def get_job(request: Request) -> Response:
        """
        summary: 'Describe a job'
        description: 'The id or a unique prefix; include=executions,history adds those.'
        """
        replica = await _job(request)
        include = set(filter(None, request.query_params.get("include", "").split(",")))
        answer: dict[str, Any] = {"Job": job_view(replica)}
        if "executions" in include:
            answer["Executions"] = {"Items": _executions(replica), "NextToken": ""}
        if "history" in include:
            answer["History"] = {"Items": [history_view(replica.id, e) for e in replica.history], "NextToken": ""}
        return JSONResponse(answer)

    async def stop_job(request: Request) -> Response:
        """
        summary: 'Stop a job'
        description: 'Cancels all its executions; query reason.'
        """
        replica = await _job(request)
        if replica.header.state.terminal:
            raise ApiError(409, f"job {replica.id} is already {replica.header.state}", "nothing to stop")
        await runtime.stop_job(replica.id, request.query_params.get("reason", "stopped by user"))
        return JSONResponse({"EvaluationID": f"ev-{uuid.uuid4()}"})

    async def executions(request: Request) -> Response:
        """
        summary: 'A job''s executions'
        """
        items, token = _page(_executions(await _job(request)), request.query_params)
        return JSONResponse({"Items": items, "NextToken": token})

    async def history(request: Request) -> Response:
        """
        summary: 'A job''s history of state changes'
        """
        replica = await _job(request)
        events = [history_view(replica.id, e) for e in replica.history]
        items, token = _page(events, request.query_params)
        return JSONResponse({"Items": items, "NextToken": token})

    async def results(request: Request) -> Response:
        """
        summary: 'Where a job''s results are published'
        """
        replica = await _job(request)
        items = [
            {"Type": e.result.publisher or "local", "Params": {"Location": e.result.location, "ExecutionID": e.id}}
            for e in replica.executions.values()
            if e.result is not None and e.result.location and str(e.state) == "Completed"
        ]
        return JSONResponse({"Items": items, "NextToken": ""})

    async def result_files(request: Request) -> Response:
        """
        summary: 'The result files themselves, fetched from the peers that ran the job'
        description: 'Base64 contents, by execution; what `job get` writes to disk.'
        """
        replica = await _job(request)
        try:
            fetched = await runtime.fetch_results(replica.id)
        except Exception as error:  # noqa: BLE001 - the peer's failure becomes the client's error
            raise ApiError(502, f"could not fetch results: {error}", "the node that ran it may be down; try again")
        return JSONResponse(
            {
                "Items": [
                    {
                        "ExecutionID": f.execution_id,
                        "Error": f.error,
                        "Files": [{"Path": p, "Data": base64.b64encode(d).decode()} for p, d in f.files],
                    }
                    for f in fetched
                ]
            }
        )

    async def logs(request: Request) -> Response:
        """
        summary: 'A job''s output, as newline-delimited JSON'
        description: 'follow=true keeps the stream open until the job ends.'
        """
        replica = await _job(request)
        follow = request.query_params.get("follow", "false").lower() in ("1", "true", "yes")
        return StreamingResponse(_log_lines(runtime, replica.id, follow), media_type="application/x-ndjson")

    async def nodes(request: Request) -> Response:
        """
        summary: 'List the nodes this node knows of'
        """
        members = _members(runtime)
        items, token = _page(members, request.query_params)
        return JSONResponse({"Items": items, "NextToken": token})

    async def get_node(request: Request) -> Response:
        """
        summary: 'Describe a node (id or unique prefix)'
        """
        ref = request.path_params["node_id"]
        found = [m for m in _members(runtime) if m["Info"]["NodeID"].startswith(ref)]
        if not found:
            raise ApiError(404, f"no node {ref!r} is known here", "`p2pnode node list` shows the nodes")
        if len(found) > 1:
            raise ApiError(400, f"{len(found)} nodes start with {ref!r}", "give more of the id")
        return JSONResponse(found[0])

    async def alive(request: Request) -> Response:
        """
        summary: 'Liveness'
        """
        return JSONResponse({"Status": "OK"})

    async def version(request: Request) -> Response:
        """
        summary: 'Software version'
        """
        return JSONResponse({"BuildVersionInfo": {"GitVersion": f"v{VERSION}", "Major": "0", "Minor": "1"}})

    async def agent_node(request: Request) -> Response:
        """
        summary: 'This node'
        """
        node = _node(runtime)
        return JSONResponse(node_view(node.membership.local, node.membership.status(node.node_id)))

    async def decide_bid(request: Request) -> Response:
        """
        summary: 'Decide a bid a probe held with shouldWait'
        description: 'Body {"Accept": bool, "Reason": str}.'
        """
        body = await _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("Accept"), bool):
            raise ApiError(400, 'the body must be {"Accept": true|false, "Reason": "..."}')
        verdict = ProbeVerdict(bid=body["Accept"], reason=str(body.get("Reason", "decided through the API")))
        await runtime.answer_probe(request.path_params["execution_id"], verdict)
        return JSONResponse({"Status": "OK"})

    async def _job(request: Request) -> Any:
        try:
            return await runtime.lookup_job(request.path_params["job_id"])
        except JobNotFound as error:
            raise ApiError(404, str(error), "`p2pnode job list` shows the jobs this node keeps; give a whole id to ask the network") from error
        except AmbiguousJobRef as error:
            raise ApiError(400, str(error), "give more characters of the job id") from error

    schemas = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "p2pnode API", "version": VERSION}})

    async def openapi(request: Request) -> Response:
        """
        summary: 'This API''s OpenAPI description'
        """
        return JSONResponse(schemas.get_schema(routes=app.routes))

    jobs = f"{PREFIX}/orchestrator/jobs"
    routes = [
        Route(jobs, put_job, methods=["PUT", "POST"]),
        Route(jobs, list_jobs, methods=["GET"]),
        Route(jobs + "/{job_id}", get_job, methods=["GET"]),
        Route(jobs + "/{job_id}", stop_job, methods=["DELETE"]),
        Route(jobs + "/{job_id}/executions", executions, methods=["GET"]),
        Route(jobs + "/{job_id}/history", history, methods=["GET"]),
        Route(jobs + "/{job_id}/results", results, methods=["GET"]),
        Route(jobs + "/{job_id}/results/files", result_files, methods=["GET"]),
        Route(jobs + "/{job_id}/logs", logs, methods=["GET"]),
        Route(f"{PREFIX}/orchestrator/nodes", nodes, methods=["GET"]),
        Route(f"{PREFIX}/orchestrator/nodes/{{node_id}}", get_node, methods=["GET"]),
        Route(f"{PREFIX}/agent/alive", alive, methods=["GET"]),
        Route(f"{PREFIX}/agent/version", version, methods=["GET"]),
        Route(f"{PREFIX}/agent/node", agent_node, methods=["GET"]),
        Route(f"{PREFIX}/compute/bids/{{execution_id}}", decide_bid, methods=["POST"]),
        Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    ]

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return JSONResponse({"error": error.error, "hint": error.hint, "code": error.status}, status_code=error.status)

    async def not_found(request: Request, error: Exception) -> Response:
        status = getattr(error, "status_code", 404)
        return JSONResponse(
            {"error": f"{request.method} {request.url.path}: {getattr(error, 'detail', 'not found')}",
             "hint": f"see {PREFIX}/openapi.json for the routes", "code": status},
            status_code=status,
        )

    app = Starlette(routes=routes, exception_handlers={ApiError: api_error, 404: not_found, 405: not_found})
    return app


async def serve_api(
    runtime: Runtime, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the API until cancelled."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    app = ApiGuard(build_app(runtime), max_body=runtime.settings.api_max_body, token=runtime.settings.api_token)
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]


MAX_JSON_DEPTH = 64  # no job nests deeper; deeper documents only cost the node


async def _json(request: Request) -> Any:
    try:
        document = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not JSON: {error}", "send a JSON document") from error
    except RecursionError as error:
        raise ApiError(400, "the body nests too deeply", f"a document may nest {MAX_JSON_DEPTH} levels") from error
    if _depth(document) > MAX_JSON_DEPTH:
        raise ApiError(400, "the body nests too deeply", f"a document may nest {MAX_JSON_DEPTH} levels")
    return document


def _depth(document: Any) -> int:
    """How deeply lists and mappings nest in a JSON document (without recursion)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def _page(items: list[Any], query: Any) -> tuple[list[Any], str]:
    try:
        limit = int(query.get("limit", "0") or 0)
        start = int(query.get("next_token", "0") or 0)
    except ValueError as error:
        raise ApiError(400, "limit and next_token must be whole numbers", "use the NextToken of the previous page") from error
    if limit < 0 or start < 0:
        raise ApiError(400, "limit and next_token cannot be negative")
    end = start + limit if limit else len(items)
    return items[start:end], (str(end) if end < len(items) else "")


def _executions(replica: Any) -> list[dict[str, Any]]:
    ordered = sorted(replica.executions.values(), key=lambda e: (e.create_time, e.id))
    return [execution_view(e) for e in ordered]


def _node(runtime: Runtime) -> Any:
    if runtime.node is None:
        raise ApiError(503, "the node is still starting", "try again in a moment")
    return runtime.node


def _members(runtime: Runtime) -> list[dict[str, Any]]:
    node = _node(runtime)
    members = node.membership.all_members()
    return [node_view(info, status) for info, status in sorted(members, key=lambda m: m[0].node_id)]


async def _log_lines(runtime: Runtime, job_id: str, follow: bool) -> AsyncIterator[bytes]:
    """Each execution's output once it is known; with follow, until the job ends."""
    sent: set[str] = set()
    while True:
        replica = await runtime.lookup_job(job_id)
        for execution in sorted(replica.executions.values(), key=lambda e: e.create_time):
            if execution.result is None or execution.id in sent:
                continue
            sent.add(execution.id)
            for stream, text in (("stdout", execution.result.stdout), ("stderr", execution.result.stderr)):
                if text:
                    line = {"ExecutionID": execution.id, "NodeID": execution.node_id, "Type": stream, "Line": text}
                    yield (json.dumps(line) + "\n").encode()
        if not follow or replica.header.state.terminal:
            return
        await runtime.wait_for_change(1.0)
