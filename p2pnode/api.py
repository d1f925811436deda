"""The client API: HTTP + JSON on the node's own trio loop (hypercorn).

Routes and shapes follow the reference network's v1 API, so its clients work.
Every error is JSON: {"error": what went wrong, "hint": what to do, "code"}.
"""

from __future__ import annotations

import json
import shutil
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.trio import tcp_server as _hypercorn_tcp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from p2pnode import api_models as models
from p2pnode.api_models import Operation, Query, openapi_document
from p2pnode.api_guard import ApiGuard
from p2pnode.ipfs.api import ADD_PATH, ipfs_routes
from p2pnode.logs import stream_job_logs
from p2pnode.results import ResultsUnavailable
from p2pnode.runtime import AmbiguousJobRef, BidDecided, BidNotHeld, JobNotFound, Runtime
from p2pnode.views import execution_view, history_view, job_view, nanos, node_view
from protocols.events import ProbeVerdict
from protocols.jobid import make_job_id
from protocols.jobspec import MAX_SPEC_BYTES, JobSpecError, job_spec_from_data
from protocols.node import VERSION

PREFIX = "/api/v1"

# hypercorn reads a connection 64 KiB at a time, and each read costs a pass
# through h11 and a trip to the route: bulk uploads (`ipfs add`'s batches)
# spent more there than storing. Reads take what the socket holds, up to 1 MiB.
_hypercorn_tcp.MAX_RECV = 1 << 20


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
        salt = secrets.token_hex(8)
        job_id = make_job_id("j", runtime.node_id, salt, spec)
        await runtime.submit(job_id, spec, salt)
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
        description: 'The id or a unique prefix; include=executions,history adds those. wait=SECONDS&since=REVISION
          answers once the job''s Revision is not REVISION or it has ended, or after SECONDS (at most 60): a client
          waits for a change without polling. until=ended waits for the end only (one answer, not one per change).'
        """
        replica = await _job(request)
        if "wait" in request.query_params:
            replica = await _changed_job(runtime, replica, request.query_params)
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
        summary: 'What each completed execution published: names, sizes, sha256'
        description: 'Asked of the nodes that hold the results; `job get` then streams each file from results/files/{execution_id}/{path}.'
        """
        replica = await _job(request)
        items = [
            {"ExecutionID": found.execution_id, "NodeID": found.node_id, "Error": found.error,
             "Files": [{"Path": f.name, "Size": f.size, "SHA256": f.sha256} for f in found.files]}
            for found in await runtime.result_manifests(replica.id)
        ]
        return JSONResponse({"Items": items})

    async def result_file(request: Request) -> Response:
        """
        summary: 'One result file, streamed from the node that holds it'
        description: 'Query offset resumes a cut transfer; the body is the bytes from there.'
        """
        replica = await _job(request)
        execution = replica.executions.get(request.path_params["execution_id"])
        if execution is None or execution.result is None or not execution.result.location:
            raise ApiError(404, f"job {replica.id} has no published execution {request.path_params['execution_id']}")
        try:
            offset = int(request.query_params.get("offset", "0") or 0)
        except ValueError:
            raise ApiError(400, "offset must be a whole number of bytes") from None
        files = next(iter(await runtime.result_manifests(replica.id, execution.id)), None)
        if files is None or files.error:
            raise ApiError(502, files.error if files else "no results", "the node that ran it may be down; try again")
        path = request.path_params["path"]
        entry = next((f for f in files.files if f.name == path), None)
        if entry is None:
            raise ApiError(404, f"execution {execution.id} published no file {path!r}")
        if not 0 <= offset <= entry.size:
            raise ApiError(416, f"offset {offset} is outside {path} ({entry.size} bytes)")
        chunks = runtime.result_stream(files.node_id, execution.id, entry, offset)
        try:
            first = await anext(chunks, b"")
        except ResultsUnavailable as error:
            raise ApiError(502, str(error), "try again later") from None

        async def body() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for chunk in chunks:  # a failure now cuts the body short: the client resumes at its offset
                yield chunk

        headers = {"Content-Length": str(entry.size - offset), "X-Content-SHA256": entry.sha256}
        return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)

    def _log_pieces(request: Request | WebSocket, job_id: str) -> AsyncIterator[dict[str, Any]]:
        query = request.query_params
        follow = query.get("follow", "false").lower() in ("1", "true", "yes")
        return stream_job_logs(
            lambda: runtime.lookup_job(job_id), runtime.read_log, trio.sleep,
            follow=follow, execution_id=query.get("execution_id", ""),
        )

    async def logs(request: Request) -> Response:
        """
        summary: 'A job''s output as it is written, as newline-delimited JSON'
        description: 'Each line is {"ExecutionID", "NodeID", "Type": "stdout"|"stderr", "Line": text}. Query follow=true keeps the stream open until the job ends; execution_id picks one execution. A websocket on the same path streams the reference''s {"value": {"Type", "Line"}} messages.'
        """
        replica = await _job(request)

        async def lines() -> AsyncIterator[bytes]:
            async for piece in _log_pieces(request, replica.id):
                yield (json.dumps(piece) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def logs_websocket(websocket: WebSocket) -> None:
        """The reference's logs route: one JSON message per piece of output,
        {"value": {"Type": 1 (stdout) | 2 (stderr), "Line": text}}; an error
        comes as {"error": text}; then a normal close."""
        await websocket.accept()
        try:
            replica = await runtime.lookup_job(websocket.path_params["job_id"])
            async for piece in _log_pieces(websocket, replica.id):
                await websocket.send_json({"value": {"Type": 1 if piece["Type"] == "stdout" else 2, "Line": piece["Line"],
                                                     "ExecutionID": piece["ExecutionID"]}})
        except (JobNotFound, AmbiguousJobRef) as error:
            await websocket.send_json({"error": str(error)})
        except WebSocketDisconnect:
            return
        await websocket.close()

    async def nodes(request: Request) -> Response:
        """
        summary: 'List the nodes this node knows of'
        """
        members = _members(runtime)
        items, token = _page(members, request.query_params)
        return JSONResponse({"Nodes": items, "NextToken": token})

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
        return JSONResponse({"Node": found[0]})

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
        info = node_view(*node.own_member())["Info"]
        info["Refused"] = dict(sorted(node.authority.refused.items()))  # peers' messages dropped, by reason
        info["Incarnation"] = node.membership.local.incarnation
        info["Verdicts"] = [  # our own Suspect/Down verdicts, newest last: a chaos run judges them
            {"Time": nanos(time), "Kind": kind, "NodeID": node_id, "Incarnation": incarnation}
            for time, kind, node_id, incarnation in node.membership.verdicts
        ]
        return JSONResponse(info)

    async def healthz(request: Request) -> Response:
        """
        summary: 'Health'
        """
        node = _node(runtime)
        liveness = Counter(str(status) for _, status in node.members())
        usage = shutil.disk_usage(runtime.settings.data_dir)
        return JSONResponse({
            "Status": "OK", "NodeID": node.node_id, "Liveness": dict(sorted(liveness.items())),
            "FreeSpace": {"DataDir": usage.free, "Total": usage.total},
        })

    async def list_bids(request: Request) -> Response:
        """
        summary: 'Bids this node''s probe held for the operator'
        description: 'Held ones (State Held) and the last decided ones; query all=false lists only the held.'
        """
        only_held = request.query_params.get("all", "true").lower() in ("0", "false", "no")
        items = [_bid_view(h) for h in runtime.held_bids() if not (only_held and h.outcome)]
        return JSONResponse({"Items": items, "NextToken": ""})

    async def decide_bid(request: Request) -> Response:
        """
        summary: 'Approve or reject a bid a probe held with shouldWait'
        description: 'Body {"Accept": bool, "Reason": str}; 404 if no such bid is held here, 409 if it was decided already.'
        """
        body = await _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("Accept"), bool):
            raise ApiError(400, 'the body must be {"Accept": true|false, "Reason": "..."}', "send Accept as a JSON boolean")
        reason = body.get("Reason") or ("approved by the operator" if body["Accept"] else "rejected by the operator")
        if not isinstance(reason, str):
            raise ApiError(400, "Reason must be a string")
        execution_id = request.path_params["execution_id"]
        try:
            held = await runtime.decide_bid(execution_id, body["Accept"], reason)
        except BidNotHeld as error:
            raise ApiError(404, str(error), "`p2pnode bid list` shows the bids held on this node") from error
        except BidDecided as error:
            raise ApiError(409, str(error), "a bid is decided once") from error
        return JSONResponse({"ExecutionID": execution_id, "JobID": held.job_id, "Accepted": body["Accept"], "Reason": reason})

    async def _job(request: Request) -> Any:
        try:
            return await runtime.lookup_job(request.path_params["job_id"])
        except JobNotFound as error:
            raise ApiError(404, str(error), "`p2pnode job list` shows the jobs this node keeps; give a whole id to ask the network") from error
        except AmbiguousJobRef as error:
            raise ApiError(400, str(error), "give more characters of the job id") from error

    async def openapi(request: Request) -> Response:
        """
        summary: 'This API''s OpenAPI description'
        """
        return JSONResponse(openapi_document(operations, title="p2pnode API", version=VERSION))

    jobs = f"{PREFIX}/orchestrator/jobs"
    job = jobs + "/{job_id}"
    paging = (Query("limit", "integer", "at most this many"), Query("next_token", "string", "NextToken of the page before"))
    follow = Query("follow", "boolean", "keep the stream open until the job ends")
    operations = [
        Operation("PUT", jobs, "Submit a job", models.PutJobResponse, models.PutJobRequest, errors=(400, 413)),
        Operation("POST", jobs, "Submit a job (as PUT)", models.PutJobResponse, models.PutJobRequest, errors=(400, 413)),
        Operation("GET", jobs, "List the jobs this node keeps", models.ListJobsResponse, query=(
            *paging, Query("order_by", enum=("created_at", "modified_at", "id", "name")),
            Query("reverse", "boolean"), Query("namespace"), Query("labels", description="k=v,k2"),
        ), errors=(400,)),
        Operation("GET", job, "Describe a job (id or unique prefix)", models.GetJobResponse,
                  query=(Query("include", description="executions,history"),), errors=(400, 404)),
        Operation("DELETE", job, "Stop a job", models.StopJobResponse, query=(Query("reason"),), errors=(400, 404, 409)),
        Operation("GET", job + "/executions", "A job's executions", models.ListJobExecutionsResponse, query=paging,
                  errors=(400, 404)),
        Operation("GET", job + "/history", "A job's history", models.ListJobHistoryResponse, query=paging,
                  errors=(400, 404)),
        Operation("GET", job + "/results", "Where a job's results are published", models.ListJobResultsResponse,
                  errors=(400, 404)),
        Operation("GET", job + "/results/files", "A job's result files, fetched from the peers that ran it",
                  models.ResultFilesResponse, errors=(400, 404, 502)),
        Operation("GET", job + "/results/files/{execution_id}/{path}", "One result file, streamed from its node",
                  None, query=(Query("offset", "integer", "resume a cut transfer at this byte"),),
                  errors=(400, 404, 416, 502), media_type="application/octet-stream"),
        Operation("GET", job + "/logs", "A job's output as it is written", models.LogLine,
                  query=(follow, Query("execution_id"), Query("tail", "boolean")), errors=(400, 404),
                  media_type="application/x-ndjson",
                  description="One LogLine per line. A websocket on the same path streams the reference's "
                              '{"value": {"Type": 1|2, "Line": text}} messages.'),
        Operation("GET", f"{PREFIX}/orchestrator/nodes", "The nodes this node knows", models.ListNodesResponse,
                  query=paging, errors=(400, 503)),
        Operation("GET", f"{PREFIX}/orchestrator/nodes/{{node_id}}", "Describe a node (id or unique prefix)",
                  models.GetNodeResponse, errors=(400, 404, 503)),
        Operation("GET", f"{PREFIX}/agent/alive", "Liveness", models.IsAliveResponse),
        Operation("GET", f"{PREFIX}/healthz", "Health: this node, its view of the network, its free disk",
                  models.HealthzResponse, errors=(503,)),
        Operation("GET", f"{PREFIX}/agent/version", "Software version", models.VersionResponse),
        Operation("GET", f"{PREFIX}/agent/node", "This node", models.NodeInfo, errors=(503,)),
        Operation("GET", f"{PREFIX}/compute/bids", "Bids this node's probe held for the operator",
                  models.ListBidsResponse, query=(Query("all", "boolean", "false: only the held ones"),)),
        Operation("POST", f"{PREFIX}/compute/bids/{{execution_id}}", "Approve or reject a held bid",
                  models.DecideBidResponse, models.DecideBidRequest, errors=(400, 404, 409)),
        Operation("GET", f"{PREFIX}/openapi.json", "This document", None),
    ]
    routes = [
        _route(jobs, PUT=put_job, POST=put_job, GET=list_jobs),
        _route(job, GET=get_job, DELETE=stop_job),
        _route(job + "/executions", GET=executions),
        _route(job + "/history", GET=history),
        _route(job + "/results", GET=results),
        _route(job + "/results/files", GET=result_files),
        _route(job + "/results/files/{execution_id}/{path:path}", GET=result_file),
        _route(job + "/logs", GET=logs),
        WebSocketRoute(job + "/logs", logs_websocket),
        _route(f"{PREFIX}/orchestrator/nodes", GET=nodes),
        _route(f"{PREFIX}/orchestrator/nodes/{{node_id}}", GET=get_node),
        _route(f"{PREFIX}/agent/alive", GET=alive),
        _route(f"{PREFIX}/healthz", GET=healthz),
        _route(f"{PREFIX}/agent/version", GET=version),
        _route(f"{PREFIX}/agent/node", GET=agent_node),
        _route(f"{PREFIX}/compute/bids", GET=list_bids),
        _route(f"{PREFIX}/compute/bids/{{execution_id}}", POST=decide_bid),
        _route(f"{PREFIX}/openapi.json", GET=openapi),
        *ipfs_routes(runtime, ApiError),
    ]

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return JSONResponse({"error": error.error, "hint": error.hint, "code": error.status}, status_code=error.status)

    async def not_found(request: Request, error: Exception) -> Response:
        status = getattr(error, "status_code", 404)
        headers = getattr(error, "headers", None)  # a 405 says which methods are allowed (Allow)
        return JSONResponse(
            {"error": f"{request.method} {request.url.path}: {getattr(error, 'detail', 'not found')}",
             "hint": f"see {PREFIX}/openapi.json for the routes", "code": status},
            status_code=status, headers=headers,
        )

    app = Starlette(routes=routes, exception_handlers={ApiError: api_error, 404: not_found, 405: not_found})
    return app


def _route(path: str, **handlers: Callable[[Request], Awaitable[Response]]) -> Route:
    """One route per path with every method it takes, so a 405 lists them all in Allow."""

    async def dispatch(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, dispatch, methods=list(handlers))


async def serve_api(
    runtime: Runtime, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the API until cancelled."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    app = ApiGuard(build_app(runtime), max_body=runtime.settings.api_max_body, token=runtime.settings.api_token,
                   streamed={ADD_PATH: (runtime.settings.ipfs_max_add, "Node.IPFS.MaxAddSize")})
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


MAX_WAIT = 60.0


async def _changed_job(runtime: Runtime, replica: Any, query: Any) -> Any:
    """The job once its revision moves past `since` (with `until=ended`: only
    once it has ended, so a client waiting for the result is answered once,
    not at every change) or it has ended, or as it is after `wait` seconds."""
    try:
        seconds = min(float(query["wait"]), MAX_WAIT)
        since = int(query.get("since", "-1"))
    except ValueError as error:
        raise ApiError(400, "wait must be a number of seconds and since a revision number",
                       "e.g. ?wait=30&since=4 (the Revision of the job as you last saw it)") from error
    job_id = replica.id
    until = query.get("until", "")
    if until not in ("", "changed", "ended"):
        raise ApiError(400, f"until must be changed or ended, not {until[:40]!r}",
                       "until=ended answers once the job has ended; leave it out to hear of every change")
    ended_only = until == "ended"

    def moved() -> bool:
        current = _held(runtime, job_id) or replica
        return current.header.state.terminal or (not ended_only and current.header.revision != since)

    deadline = trio.current_time() + max(seconds, 0.0)
    while not moved() and (left := deadline - trio.current_time()) > 0:
        # A job this node does not keep is asked of its keepers again every second.
        await runtime.wait_until(moved, min(left, 1.0))
        replica = await runtime.lookup_job(job_id)
    return _held(runtime, job_id) or replica


def _held(runtime: Runtime, job_id: str) -> Any:
    return runtime.node.jobs.get(job_id) if runtime.node is not None else None


def _executions(replica: Any) -> list[dict[str, Any]]:
    ordered = sorted(replica.executions.values(), key=lambda e: (e.create_time, e.id))
    return [execution_view(e) for e in ordered]


def _node(runtime: Runtime) -> Any:
    if runtime.node is None:
        raise ApiError(503, "the node is still starting", "try again in a moment")
    return runtime.node


def _bid_view(held: Any) -> dict[str, Any]:
    return {
        "ExecutionID": held.execution_id, "JobID": held.job_id, "JobName": held.job_name, "Reason": held.reason,
        "Since": nanos(held.since), "State": "Held" if not held.outcome else held.outcome.split(":")[0].capitalize(),
        "Outcome": held.outcome,
    }


def _members(runtime: Runtime) -> list[dict[str, Any]]:
    node = _node(runtime)
    members = node.members()
    return [node_view(info, status) for info, status in sorted(members, key=lambda m: m[0].node_id)]
