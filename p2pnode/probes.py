"""Run the job selection probes the policy asks for (`protocols.selection`).

Both functions turn every failure — a program that will not start, a probe that
hangs, a refused connection — into a declining verdict with a reason the
operator can act on. They never raise: a broken probe must not break the node.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import trio

from p2pnode.lazy import lazy_import
from protocols.events import ProbeVerdict
from protocols.selection import exec_probe_verdict, parse_http_probe_reply

httpx = lazy_import("httpx")  # the first http probe loads it, not an idle peer

MAX_REPLY = 64 * 1024  # bytes of a probe's output or reply body that we read


async def run_exec_probe(command: str, document: dict[str, Any], *, timeout: float = 10.0) -> ProbeVerdict:
    """Run `command` (split like a shell would, but run without one) with the
    document as JSON on standard input; exit status 0 takes the job."""
    try:
        argv = shlex.split(command)
        payload = json.dumps(document).encode()
    except (ValueError, TypeError) as error:
        return ProbeVerdict(bid=False, reason=f"the exec probe {command!r} cannot be run: {error}")
    if not argv:
        return ProbeVerdict(bid=False, reason="the exec probe command is empty; set a program to run")
    with trio.move_on_after(timeout):
        try:
            process = await trio.run_process(
                argv,
                stdin=payload,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                deliver_cancel=_kill,
            )
        except OSError as error:
            reason = f"the exec probe {argv[0]!r} could not start: {error.strerror or error}"
            return ProbeVerdict(bid=False, reason=reason)
        output = (process.stdout[:MAX_REPLY] + b"\n" + process.stderr[:MAX_REPLY]).decode("utf-8", errors="replace")
        return exec_probe_verdict(process.returncode, output)
    return ProbeVerdict(bid=False, reason=f"the exec probe {argv[0]!r} did not finish within {timeout:g} s")


async def _kill(process: trio.Process) -> None:
    process.kill()


async def run_http_probe(url: str, document: dict[str, Any], *, timeout: float = 10.0) -> ProbeVerdict:
    """POST the document as JSON to `url`; the reply decides
    (`protocols.selection.parse_http_probe_reply`)."""
    with trio.move_on_after(timeout):
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                async with client.stream("POST", url, json=document) as response:
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) >= MAX_REPLY:
                            break
            return parse_http_probe_reply(response.status_code, body[:MAX_REPLY])
        except httpx.TimeoutException:
            pass  # reported below, as the overall deadline is
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            return ProbeVerdict(bid=False, reason=f"the http probe at {url} could not be reached: {_describe(error)}")
        except (TypeError, ValueError) as error:
            return ProbeVerdict(bid=False, reason=f"the http probe at {url} cannot be asked: {error}")
    return ProbeVerdict(bid=False, reason=f"the http probe at {url} did not answer within {timeout:g} s")


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__
