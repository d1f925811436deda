"""The CLI's commands that talk to nodes or start them (see `p2pnode.cli`)."""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from p2pnode.client import API_ENV, DEFAULT_API, TOKEN_ENV, ApiClient, ApiClientError
from p2pnode.ipfs import cli as ipfs_commands
from p2pnode.lazy import LazyConsole, lazy_import
from p2pnode.tables import Sheet, show

yaml = lazy_import("yaml")
console = LazyConsole()
errors = LazyConsole(stderr=True, soft_wrap=True)  # an error's paths stay whole, on one line

api_option = click.option(
    "--api", default=lambda: os.environ.get(API_ENV, DEFAULT_API), show_default=f"${API_ENV} or {DEFAULT_API}",
    help="URL of the node's API to talk to.",
)
output_option = click.option(
    "--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)
wide_option = click.option("--wide", is_flag=True, help="Whole IDs and cells, also on a terminal.")


def _client(api: str) -> ApiClient:
    """A client for `api`, with the token given to `p2pnode --token` (or $P2PNODE_API_TOKEN)."""
    context = click.get_current_context(silent=True)
    token = context.find_root().params.get("token") if context is not None else None
    return ApiClient(api, token=token or os.environ.get(TOKEN_ENV) or None)


def _fail(error: Exception) -> None:
    errors.print(f"[red]Error:[/red] {error}")
    sys.exit(1)


def _emit(data: Any, output: str, table: Sheet | None = None, wide: bool = False) -> None:
    """The document alone on stdout (json, yaml), or the table."""
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    elif table is not None:
        show(table, wide=wide, console=console)


def _when(nanos: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(nanos / 1e9)) if nanos else ""


def _jobs_table(items: list[dict[str, Any]]) -> Sheet:
    sheet = Sheet(("ID", "NAME", "TYPE", "STATE", "CREATED", "MESSAGE"), short={0: 12})
    for job in items:
        sheet.add(job["ID"], job["Name"], job["Type"], job["State"]["StateType"], _when(job["CreateTime"]),
                  job["State"].get("Message", ""))
    return sheet


def _executions_table(items: list[dict[str, Any]]) -> Sheet:
    sheet = Sheet(("EXECUTION", "NODE", "PARTITION", "STATE", "DESIRED", "MESSAGE"), short={0: 14, 1: 16})
    for execution in items:
        sheet.add(execution["ID"], execution["NodeID"], execution["PartitionIndex"],
                  execution["ComputeState"]["StateType"], execution["DesiredState"]["StateType"],
                  execution["ComputeState"].get("Message", ""))
    return sheet


def _history_table(items: list[dict[str, Any]]) -> Sheet:
    sheet = Sheet(("TIME", "LEVEL", "EXECUTION", "CHANGE", "MESSAGE"), short={2: 14})
    for event in items:
        change = event.get("JobState") or event.get("ExecutionState") or {}
        arrow = f"{change.get('Previous', '')} → {change.get('New', '')}" if change else event["Event"]["Topic"]
        sheet.add(event["Time"], event["Type"], event["ExecutionID"], arrow, event["Event"]["Message"])
    return sheet


# ---------------------------------------------------------------- devstack, demo (serve: p2pnode.serve_command)


@click.command("devstack")
@click.option("--nodes", "-n", type=click.IntRange(1, 64), default=3, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Base directory (default: a temporary one).")
@click.option("--api-port", type=click.IntRange(0, 65535), default=0,
              help="The first peer's API port (1234 is what the CLI talks to by default); 0 picks a free one.")
def devstack_command(nodes: int, data_dir: Path | None, api_port: int) -> None:
    """Start N connected peers on loopback; Ctrl-C stops them all."""
    import tempfile

    from p2pnode.devstack import DevstackError, devstack

    base = data_dir or Path(tempfile.mkdtemp(prefix="p2pnode-devstack-"))
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the peers as Ctrl-C does
    try:
        with devstack(nodes, base, api_port=api_port) as peers:
            sheet = Sheet(("PEER", "NODE ID", "API", "LIBP2P"))
            for peer in peers:
                sheet.add(peer.index, peer.node_id, peer.api, peer.addresses[0] if peer.addresses else "")
            show(sheet, console=console)
            errors.print(f"Talk to peer 0 with: export {API_ENV}={peers[0].api}; then `p2pnode job run FILE`")
            errors.print(f"Their network key is {base / 'network.key'}: start more peers with --network-key and --peer.")
            errors.print("Ctrl-C (or SIGTERM) stops them all.")
            while all(p.process.poll() is None for p in peers):
                time.sleep(0.5)
            errors.print("[red]a peer exited; stopping the rest[/red]")
    except KeyboardInterrupt:
        errors.print("stopping…")
    except DevstackError as error:
        _fail(error)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--nodes", "-n", type=click.IntRange(1, 16), default=3, show_default=True)
def demo(nodes: int) -> None:
    """Start a local network, run the example wasm job end to end, stop."""
    from p2pnode.demo import run_demo
    from p2pnode.devstack import DevstackError

    try:
        sys.exit(run_demo(nodes, console))
    except (ApiClientError, DevstackError) as error:
        _fail(error)


@click.command("version")
@api_option
@click.option("--client-only", is_flag=True, help="Do not ask the node for its version.")
@click.option("--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
def version(api: str, client_only: bool, output: str) -> None:
    """This client's version, and the node's when it answers."""
    from importlib.metadata import version as installed

    answer: dict[str, Any] = {"ClientVersion": f"v{installed('p2pnode')}"}
    if not client_only:
        try:
            with ApiClient(api, timeout=3) as client:
                answer["ServerVersion"] = client.version()["BuildVersionInfo"]["GitVersion"]
        except ApiClientError as error:
            errors.print(f"(no server version: {error.message})")
    sheet = Sheet(("CLIENT", "SERVER"))
    sheet.add(answer["ClientVersion"], answer.get("ServerVersion", ""))
    _emit(answer, output, sheet)


# ---------------------------------------------------------------- jobs


def run_job(
    document: dict[str, Any], api: str, *, wait: bool, id_only: bool, follow: bool, output: str, timeout: float,
    wide: bool = False,
) -> None:
    """Submit; with -o json|yaml only the final document goes to stdout. Exit
    1 when the job did not complete."""
    with _client(api) as client:
        try:
            answer = client.submit(document)
            job_id = answer["JobID"]
            for warning in answer.get("Warnings", []):
                errors.print(f"[yellow]Warning:[/yellow] {warning}")
            if id_only:
                click.echo(job_id)
            else:
                errors.print(f"Job [bold]{job_id}[/bold] submitted")
            if follow:
                _print_logs(client.logs(job_id, follow=True), to_stderr=output != "table" or id_only)
            if not (wait or follow):
                if output != "table" and not id_only:
                    _emit(answer, output)
                return
            with errors.status("waiting for the job…", spinner="dots") if not id_only else _null():
                final = client.wait(job_id, timeout=timeout)
            job = final["Job"]
            if id_only:
                pass
            elif output != "table":
                _emit(final, output)
            else:
                console.print(f"Job {job['State']['StateType']}: {job['State']['Message']}")
                show(_executions_table(final.get("Executions", {}).get("Items", [])), wide=wide, console=console)
                if not follow:
                    for execution in final.get("Executions", {}).get("Items", []):
                        run = execution.get("RunOutput")
                        if run and run.get("Stdout"):
                            console.print(f"[dim]stdout of {execution['ID']}:[/dim]")
                            click.echo(run["Stdout"], nl=not run["Stdout"].endswith("\n"))
            _exit_unless_completed(job)
        except ApiClientError as error:
            _fail(error)


def _exit_unless_completed(job: dict[str, Any]) -> None:
    """Scripts read the exit status: 0 only for a job that completed."""
    state = job["State"]["StateType"]
    if state != "Completed":
        errors.print(f"job {job['ID']} is {state}: {job['State'].get('Message', '')}")
        sys.exit(1)


def _print_logs(lines: Any, *, to_stderr: bool = False) -> None:
    for line in lines:
        stream = sys.stderr if to_stderr or line["Type"] == "stderr" else sys.stdout
        stream.write(line["Line"])
        stream.flush()


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@click.command("list")
@api_option
@output_option
@wide_option
@click.option("--limit", type=int, default=0, help="At most this many jobs.")
@click.option("--namespace", default="", help="Only this namespace ('*' for all).")
@click.option("--labels", default="", help="Only jobs with these labels: k=v,k2")
@click.option("--order-by", type=click.Choice(["created_at", "modified_at", "id", "name"]), default="created_at")
@click.option("--reverse", is_flag=True, help="Oldest first.")
def job_list(api: str, output: str, wide: bool, limit: int, namespace: str, labels: str, order_by: str,
             reverse: bool) -> None:
    """List the jobs the node knows."""
    try:
        with _client(api) as client:
            answer = client.list_jobs(limit=limit or None, namespace=namespace, labels=labels, order_by=order_by,
                                      reverse="true" if reverse else None)
    except ApiClientError as error:
        _fail(error)
    _emit(answer, output, _jobs_table(answer["Items"]), wide)


@click.command("describe")
@click.argument("job_id")
@api_option
@output_option
@wide_option
def job_describe(job_id: str, api: str, output: str, wide: bool) -> None:
    """Show a job, its executions and history (ID or unique prefix)."""
    try:
        with _client(api) as client:
            answer = client.get_job(job_id, include="executions,history")
    except ApiClientError as error:
        _fail(error)
    if output != "table":
        _emit(answer, output)
        return
    job = answer["Job"]
    console.print(f"[bold]{job['ID']}[/bold]  {job['Name']}  ({job['Type']}, namespace {job['Namespace']})")
    console.print(f"State: {job['State']['StateType']} — {job['State']['Message']}")
    console.print(f"Leader: {job['Leader']} (epoch {job['Epoch']}), revision {job['Revision']}, created {_when(job['CreateTime'])}")
    show(_executions_table(answer["Executions"]["Items"]), wide=wide, console=console)
    show(_history_table(answer["History"]["Items"]), wide=wide, console=console)


@click.command("executions")
@click.argument("job_id")
@api_option
@output_option
@wide_option
def job_executions(job_id: str, api: str, output: str, wide: bool) -> None:
    """List a job's executions."""
    try:
        with _client(api) as client:
            answer = client.executions(job_id)
    except ApiClientError as error:
        _fail(error)
    _emit(answer, output, _executions_table(answer["Items"]), wide)


@click.command("history")
@click.argument("job_id")
@api_option
@output_option
@wide_option
def job_history(job_id: str, api: str, output: str, wide: bool) -> None:
    """Show every state change of a job and its executions."""
    try:
        with _client(api) as client:
            answer = client.history(job_id)
    except ApiClientError as error:
        _fail(error)
    _emit(answer, output, _history_table(answer["Items"]), wide)


@click.command("logs")
@click.argument("job_id")
@api_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the job writes, until it ends.")
def job_logs(job_id: str, api: str, follow: bool) -> None:
    """Print a job's output (stdout here, stderr to stderr), live with --follow."""
    try:
        with _client(api) as client:
            _print_logs(client.logs(job_id, follow=follow))
    except ApiClientError as error:
        _fail(error)


@click.command("stop")
@click.argument("job_id")
@api_option
@click.option("--reason", default="stopped by user")
def job_stop(job_id: str, api: str, reason: str) -> None:
    """Stop a job: cancel all its executions."""
    try:
        with _client(api) as client:
            client.stop_job(job_id, reason)
            final = client.wait(job_id, timeout=30)
    except ApiClientError as error:
        _fail(error)
    console.print(f"Job {final['Job']['ID']} {final['Job']['State']['StateType']}")


@click.command("get")
@click.argument("job_id")
@api_option
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True)
def job_get(job_id: str, api: str, output_dir: Path) -> None:
    """Download a job's results, from whichever peers ran it. Exit 1 unless the job completed."""
    try:
        with _client(api) as client:
            job = client.get_job(job_id)["Job"]
            executions = client.executions(job["ID"])["Items"]
            if any((e.get("PublishedResult") or {}).get("Type") == "ipfs" for e in executions):
                files = ipfs_commands.get_results(api, executions, output_dir)
            else:
                files = client.download(job["ID"], output_dir)
    except (ApiClientError, LookupError, OSError, ValueError) as error:
        _fail(error)
    for path in files:
        click.echo(str(path))
    if not files:
        errors.print("the job has no published results yet")
    _exit_unless_completed(job)


# ---------------------------------------------------------------- nodes


def _cores(cpu: float) -> str:
    return f"{cpu:g}"


@click.command("list")
@api_option
@output_option
@wide_option
def node_list(api: str, output: str, wide: bool) -> None:
    """List the nodes the node knows, alive or not."""
    try:
        with _client(api) as client:
            answer = client.nodes()
    except ApiClientError as error:
        _fail(error)
    sheet = Sheet(("NODE ID", "STATUS", "LABELS", "ENGINES", "FREE CPU", "FREE MEMORY"))
    for node in answer["Nodes"]:
        info = node["Info"]
        compute = info["ComputeNodeInfo"]
        sheet.add(
            info["NodeID"], node["Liveness"], ", ".join(f"{k}={v}" for k, v in sorted(info["Labels"].items())),
            ", ".join(compute["ExecutionEngines"]), _cores(compute["AvailableCapacity"]["CPU"]),
            f"{compute['AvailableCapacity']['Memory'] / 2**20:.0f} MiB",
        )
    _emit(answer, output, sheet, wide)


@click.command("describe")
@click.argument("node_id")
@api_option
@click.option("--output", "-o", type=click.Choice(["json", "yaml"]), default="yaml", show_default=True)
def node_describe(node_id: str, api: str, output: str) -> None:
    """Show one node (ID or unique prefix)."""
    try:
        with _client(api) as client:
            answer = client.node(node_id)
    except ApiClientError as error:
        _fail(error)
    _emit(answer, output)


# ---------------------------------------------------------------- wasm shortcut


def wasm_document(module: Path, arguments: tuple[str, ...], entrypoint: str) -> dict[str, Any]:
    """A batch job running one local module, carried inline."""
    data = module.read_bytes()
    url = "data:application/wasm;base64," + base64.b64encode(data).decode()
    return {
        "Name": module.name,
        "Type": "batch",
        "Count": 1,
        "Tasks": [
            {
                "Name": "main",
                "Engine": {
                    "Type": "wasm",
                    "Params": {
                        "EntryModule": {"Target": f"/app/{module.name}", "Source": {"Type": "inline", "Params": {"URL": url}}},
                        "Entrypoint": entrypoint,
                        "Parameters": list(arguments),
                    },
                },
                "Publisher": {"Type": "local"},
                "ResultPaths": [{"Name": "outputs", "Path": "/outputs"}],
            }
        ],
    }
