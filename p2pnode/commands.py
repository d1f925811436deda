"""The CLI's commands that talk to nodes or start them (see `p2pnode.cli`)."""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from p2pnode.client import API_ENV, DEFAULT_API, TERMINAL, TOKEN_ENV, ApiClient, ApiClientError

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error's paths stay whole, on one line

api_option = click.option(
    "--api", default=lambda: os.environ.get(API_ENV, DEFAULT_API), show_default=f"${API_ENV} or {DEFAULT_API}",
    help="URL of the node's API to talk to.",
)
output_option = click.option(
    "--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)


def _client(api: str) -> ApiClient:
    """A client for `api`, with the token given to `p2pnode --token` (or $P2PNODE_API_TOKEN)."""
    context = click.get_current_context(silent=True)
    token = context.find_root().params.get("token") if context is not None else None
    return ApiClient(api, token=token or os.environ.get(TOKEN_ENV) or None)


def _fail(error: Exception) -> None:
    errors.print(f"[red]Error:[/red] {error}")
    sys.exit(1)


def _emit(data: Any, output: str, table: Table | None = None) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    elif table is not None:
        console.print(table)


def _when(nanos: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(nanos / 1e9)) if nanos else ""


def _jobs_table(items: list[dict[str, Any]]) -> Table:
    table = Table("ID", "NAME", "TYPE", "STATE", "CREATED", "MESSAGE", box=None)
    for job in items:
        table.add_row(
            job["ID"][:12], job["Name"], job["Type"], job["State"]["StateType"], _when(job["CreateTime"]),
            job["State"].get("Message", ""),
        )
    return table


def _executions_table(items: list[dict[str, Any]]) -> Table:
    table = Table("EXECUTION", "NODE", "PARTITION", "STATE", "DESIRED", "MESSAGE", box=None)
    for execution in items:
        table.add_row(
            execution["ID"][:14], execution["NodeID"][:16], str(execution["PartitionIndex"]),
            execution["ComputeState"]["StateType"], execution["DesiredState"]["StateType"],
            execution["ComputeState"].get("Message", ""),
        )
    return table


def _history_table(items: list[dict[str, Any]]) -> Table:
    table = Table("TIME", "LEVEL", "EXECUTION", "CHANGE", "MESSAGE", box=None)
    for event in items:
        change = event.get("JobState") or event.get("ExecutionState") or {}
        arrow = f"{change.get('Previous', '')} → {change.get('New', '')}" if change else event["Event"]["Topic"]
        table.add_row(event["Time"], event["Type"], event["ExecutionID"][:14], arrow, event["Event"]["Message"])
    return table


# ---------------------------------------------------------------- serve, devstack, demo


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML config file.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the node keeps its state.")
@click.option("--listen", multiple=True, help="libp2p listen multiaddr (repeatable).")
@click.option("--peer", "peers", multiple=True, help="Bootstrap peer multiaddr (repeatable).")
@click.option("--mdns/--no-mdns", default=None, help="Discover peers on the LAN with mDNS.")
@click.option("--api-host", help="Address the API binds to (default 127.0.0.1).")
@click.option("--api-port", type=int, help="API port (0 picks a free one; default 1234).")
@click.option("--api-token", help="Bearer token API clients must send (needed when the API is not on loopback).")
@click.option("--api-insecure/--no-api-insecure", default=None, help="Serve the API on a non-loopback address without a token.")
@click.option("--api-max-body-size", help="Largest request body the API takes (default 4Mb).")
@click.option("--network-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The network's key file (`p2pnode network new-key FILE`): only peers holding it can talk to this node.")
@click.option("--network-open/--no-network-open", default=None,
              help="Listen on a non-loopback address without a network key: anyone may join.")
@click.option("--labels", multiple=True, help="Node label key=value (repeatable).")
@click.option("--job-selection-data-locality", type=click.Choice(["local", "anywhere"]))
@click.option("--job-selection-probe-exec", help="Program deciding whether to take a job.")
@click.option("--job-selection-probe-http", help="URL POSTed to decide whether to take a job.")
@click.option("--job-selection-reject-stateless/--no-job-selection-reject-stateless", default=None)
@click.option("--job-selection-accept-networked/--no-job-selection-accept-networked", default=None)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run a node until Ctrl-C."""
    import trio

    from p2pnode.config import ConfigError, load_settings
    from p2pnode.serve import serve_node

    from p2pnode.config import check_exposure
    from p2pnode.netkey import NetworkKeyError, load_key

    given = {name: value for name, value in flags.items() if value not in (None, ())}
    try:
        settings = load_settings(config_file=config_file, env=os.environ, flags=given)
        check_exposure(settings)
        if settings.network_key_file is not None:
            load_key(settings.network_key_file)  # a bad key stops us here, with its fix
    except (ConfigError, NetworkKeyError) as error:
        _fail(error)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from p2pnode.store import StoreError

    try:
        trio.run(serve_node, settings)
    except StoreError as error:  # a damaged database: say which file and the way out
        _fail(error)


@click.command("devstack")
@click.option("--nodes", "-n", type=click.IntRange(1, 64), default=3, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Base directory (default: a temporary one).")
def devstack_command(nodes: int, data_dir: Path | None) -> None:
    """Start N connected peers on loopback; Ctrl-C stops them all."""
    import tempfile

    from p2pnode.devstack import DevstackError, devstack

    base = data_dir or Path(tempfile.mkdtemp(prefix="p2pnode-devstack-"))
    try:
        with devstack(nodes, base) as peers:
            table = Table("PEER", "NODE ID", "API", "LIBP2P", box=None)
            for peer in peers:
                table.add_row(str(peer.index), peer.node_id, peer.api, peer.addresses[0] if peer.addresses else "")
            console.print(table)
            console.print(f"Talk to peer 0 with: [bold]export {API_ENV}={peers[0].api}[/bold]; then `p2pnode job run FILE`")
            console.print(f"Their network key is {base / 'network.key'}: start more peers with --network-key and --peer.")
            console.print("Ctrl-C stops them all.")
            try:
                while all(p.process.poll() is None for p in peers):
                    time.sleep(0.5)
                errors.print("[red]a peer exited; stopping the rest[/red]")
            except KeyboardInterrupt:
                console.print("stopping…")
    except DevstackError as error:
        _fail(error)


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


# ---------------------------------------------------------------- jobs


def run_job(
    document: dict[str, Any], api: str, *, wait: bool, id_only: bool, follow: bool, output: str, timeout: float
) -> None:
    with _client(api) as client:
        try:
            answer = client.submit(document)
            job_id = answer["JobID"]
            for warning in answer.get("Warnings", []):
                errors.print(f"[yellow]Warning:[/yellow] {warning}")
            if id_only:
                click.echo(job_id)
            else:
                console.print(f"Job [bold]{job_id}[/bold] submitted")
            if follow:
                for line in client.logs(job_id, follow=True):
                    stream = sys.stdout if line["Type"] == "stdout" else sys.stderr
                    stream.write(line["Line"])
                    stream.flush()
            if not (wait or follow):
                return
            with console.status("waiting for the job…", spinner="dots") if not id_only else _null():
                final = client.wait(job_id, timeout=timeout)
            if id_only:
                return
            job = final["Job"]
            if output != "table":
                _emit(final, output)
            else:
                console.print(f"Job {job['State']['StateType']}: {job['State']['Message']}")
                console.print(_executions_table(final.get("Executions", {}).get("Items", [])))
                if not follow:
                    for execution in final.get("Executions", {}).get("Items", []):
                        run = execution.get("RunOutput")
                        if run and run.get("Stdout"):
                            console.print(f"[dim]stdout of {execution['ID'][:14]}:[/dim]")
                            click.echo(run["Stdout"], nl=not run["Stdout"].endswith("\n"))
            if job["State"]["StateType"] != "Completed":
                sys.exit(1)
        except ApiClientError as error:
            _fail(error)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@click.command("list")
@api_option
@output_option
@click.option("--limit", type=int, default=0, help="At most this many jobs.")
@click.option("--namespace", default="", help="Only this namespace ('*' for all).")
@click.option("--labels", default="", help="Only jobs with these labels: k=v,k2")
@click.option("--order-by", type=click.Choice(["created_at", "modified_at", "id", "name"]), default="created_at")
@click.option("--reverse", is_flag=True, help="Oldest first.")
def job_list(api: str, output: str, limit: int, namespace: str, labels: str, order_by: str, reverse: bool) -> None:
    """List the jobs the node knows."""
    try:
        with _client(api) as client:
            answer = client.list_jobs(limit=limit or None, namespace=namespace, labels=labels, order_by=order_by,
                                      reverse="true" if reverse else None)
    except ApiClientError as error:
        _fail(error)
    _emit(answer, output, _jobs_table(answer["Items"]))


@click.command("describe")
@click.argument("job_id")
@api_option
@output_option
def job_describe(job_id: str, api: str, output: str) -> None:
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
    console.print(_executions_table(answer["Executions"]["Items"]))
    console.print(_history_table(answer["History"]["Items"]))


@click.command("executions")
@click.argument("job_id")
@api_option
@output_option
def job_executions(job_id: str, api: str, output: str) -> None:
    """List a job's executions."""
    try:
        with _client(api) as client:
            answer = client.executions(job_id)
    except ApiClientError as error:
        _fail(error)
    _emit(answer, output, _executions_table(answer["Items"]))


@click.command("history")
@click.argument("job_id")
@api_option
@output_option
def job_history(job_id: str, api: str, output: str) -> None:
    """Show every state change of a job and its executions."""
    try:
        with _client(api) as client:
            answer = client.history(job_id)
    except ApiClientError as error:
        _fail(error)
    _emit(answer, output, _history_table(answer["Items"]))


@click.command("logs")
@click.argument("job_id")
@api_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
def job_logs(job_id: str, api: str, follow: bool) -> None:
    """Print a job's output."""
    try:
        with _client(api) as client:
            for line in client.logs(job_id, follow=follow):
                stream = sys.stdout if line["Type"] == "stdout" else sys.stderr
                stream.write(line["Line"])
                stream.flush()
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
    """Download a job's results, from whichever peers ran it."""
    try:
        with _client(api) as client:
            files = client.download(job_id, output_dir)
    except ApiClientError as error:
        _fail(error)
    for path in files:
        console.print(str(path))
    if not files:
        errors.print("the job has no published results yet")


# ---------------------------------------------------------------- nodes


@click.command("list")
@api_option
@output_option
def node_list(api: str, output: str) -> None:
    """List the nodes the node knows, alive or not."""
    try:
        with _client(api) as client:
            answer = client.nodes()
    except ApiClientError as error:
        _fail(error)
    table = Table("NODE ID", "STATUS", "LABELS", "ENGINES", "FREE CPU", "FREE MEMORY", box=None)
    for node in answer["Items"]:
        info = node["Info"]
        compute = info["ComputeNodeInfo"]
        table.add_row(
            info["NodeID"], node["Liveness"], ", ".join(f"{k}={v}" for k, v in sorted(info["Labels"].items())),
            ", ".join(compute["ExecutionEngines"]), f"{compute['AvailableCapacity']['CPU']}m",
            f"{compute['AvailableCapacity']['Memory'] / 2**20:.0f} MiB",
        )
    _emit(answer, output, table)


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
