"""`p2pnode job ...`, `node ...`, `wasm run` and `network new-key`: the
groups `p2pnode.cli` names; what talks to a node lives in `p2pnode.commands`."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from p2pnode import commands
from p2pnode.lazy import lazy_import

if TYPE_CHECKING:
    from protocols.jobspec import ParsedJob

yaml = lazy_import("yaml")


def _variables(template_vars: tuple[str, ...], template_envs: str | None) -> dict[str, str]:
    """-E REGEX picks environment variables by name; -V key=value wins."""
    variables: dict[str, str] = {}
    if template_envs:
        try:
            pattern = re.compile(template_envs)
        except re.error as error:
            raise click.BadParameter(f"not a regular expression: {error}", param_hint="-E/--template-envs") from None
        variables.update({name: value for name, value in os.environ.items() if pattern.fullmatch(name)})
    for item in template_vars:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="-V/--template-vars")
        variables[key] = value
    return variables


def _read(file: str) -> str:
    """The job file's text; FILE `-` is stdin. A file that cannot be opened is
    a usage error (exit 2); one that is not UTF-8 text is a bad job (exit 1)."""
    try:
        if file == "-":
            with click.open_file("-", "rb") as stdin:
                data = stdin.read()
        else:
            data = Path(file).read_bytes()
    except FileNotFoundError:
        raise click.BadParameter(f"no such file: {file}", param_hint="FILE") from None
    except IsADirectoryError:
        raise click.BadParameter(f"{file} is a directory; give a job file (YAML or JSON)", param_hint="FILE") from None
    except OSError as error:
        raise click.BadParameter(f"cannot read {file}: {error.strerror or error}", param_hint="FILE") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise click.ClickException(f"{file} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def _load(file: str, template_vars: tuple[str, ...], template_envs: str | None, no_template: bool) -> ParsedJob:
    """Read, template and validate a job file; on errors print them one per line and exit 1."""
    from protocols.jobspec import JobSpecError, parse_job  # pydantic: loaded only by commands that read jobs

    variables = _variables(template_vars, template_envs)
    text = _read(file)
    try:
        return parse_job(text, variables=variables, render_templates=not no_template)
    except JobSpecError as error:
        click.echo(str(error), err=True)
        sys.exit(1)


def template_options(function: Any) -> Any:
    """-V/--template-vars, -E/--template-envs and --no-template, for every command that reads a job file."""
    function = click.option("--no-template", is_flag=True, help="Do not fill {{ }} placeholders.")(function)
    function = click.option("-E", "--template-envs", metavar="REGEX", help="Fill placeholders from environment variables whose names match.")(function)
    function = click.option("-V", "--template-vars", multiple=True, metavar="KEY=VALUE", help="A template variable (repeatable).")(function)
    return function


@click.group()
def network() -> None:
    """The network's key: who may join."""


@network.command("new-key")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def network_new_key(file: Path) -> None:
    """Write a new network key to FILE; give it to every peer with `serve --network-key FILE`."""
    from p2pnode.netkey import NetworkKeyError, new_key

    try:
        new_key(file)
    except NetworkKeyError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote a new network key to {file}; start every peer with --network-key {file}")


@click.group()
def job() -> None:
    """Submit, watch and manage jobs."""


@job.command()
@click.argument("file")
@template_options
@click.option("--output", "-o", type=click.Choice(["json", "yaml"]), default="yaml", show_default=True)
def validate(file: str, template_vars: tuple[str, ...], template_envs: str | None, no_template: bool, output: str) -> None:
    """Check a job file (or - for stdin) and print it normalised.

    Exit 0 and print the job when it is valid (warnings go to stderr); exit 1
    and print every problem, one per line, when it is not."""
    parsed = _load(file, template_vars, template_envs, no_template)
    for warning in parsed.warnings:
        click.echo(f"warning: {warning}", err=True)
    document = parsed.spec.to_document()
    if output == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)


@job.command()
@click.argument("file")
@template_options
@commands.api_option
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the job to end.")
@click.option("--id-only", is_flag=True, help="Print only the job ID.")
@click.option("--follow", "-f", is_flag=True, help="Stream the job's output until it ends.")
@click.option("--dry-run", is_flag=True, help="Validate and print the job; submit nothing.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait.")
@click.option("--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@commands.wide_option
def run(file: str, template_vars: tuple[str, ...], template_envs: str | None, no_template: bool, api: str,
        wait: bool, id_only: bool, follow: bool, dry_run: bool, timeout: float, output: str, wide: bool) -> None:
    """Submit a job file (or - for stdin) to a node.

    With -o json|yaml, stdout holds only the final document. Exit 0 when
    the job completed, 1 when it failed or was stopped."""
    parsed = _load(file, template_vars, template_envs, no_template)
    for warning in parsed.warnings:
        click.echo(f"warning: {warning}", err=True)
    document = parsed.spec.to_document()
    if dry_run:
        click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)
        return
    commands.run_job(document, api, wait=wait, id_only=id_only, follow=follow, output=output, timeout=timeout,
                     wide=wide)


for command in (commands.job_list, commands.job_describe, commands.job_executions, commands.job_history,
                commands.job_logs, commands.job_stop, commands.job_get):
    job.add_command(command)


@click.group()
def node() -> None:
    """See the nodes of the network."""


node.add_command(commands.node_list)
node.add_command(commands.node_describe)


@click.group()
def wasm() -> None:
    """WebAssembly shortcuts."""


@wasm.command("run")
@click.argument("module", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("arguments", nargs=-1)
@click.option("--entrypoint", default="_start", show_default=True)
@commands.api_option
@click.option("--id-only", is_flag=True)
@click.option("--wait/--no-wait", default=True, show_default=True)
@click.option("--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
def wasm_run(module: Path, arguments: tuple[str, ...], entrypoint: str, api: str, id_only: bool, wait: bool,
             output: str) -> None:
    """Run a local WebAssembly module as a one-off batch job."""
    document = commands.wasm_document(module, arguments, entrypoint)
    commands.run_job(document, api, wait=wait, id_only=id_only, follow=False, output=output, timeout=600)
