"""`p2pnode docker run`: a one-task batch job from flags, like the reference's
`docker run` shortcut. The job is built here and validated by the node like
any other job file would be."""

from __future__ import annotations

from typing import Any

import click

from p2pnode import commands

NETWORKS = {"none": "None", "full": "Full", "http": "HTTP"}


def _input_source(uri: str) -> dict[str, Any]:
    """An input URI as a job's Source: ipfs://CID, http(s)://…, file:///path, s3://bucket/key."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not rest:
        raise click.BadParameter(f"{uri!r} is not a URI like ipfs://CID, https://host/file or file:///path",
                                 param_hint="-i/--input")
    scheme = scheme.lower()
    if scheme == "ipfs":
        return {"Type": "ipfs", "Params": {"CID": rest}}
    if scheme in ("http", "https"):
        return {"Type": "url", "Params": {"URL": uri}}
    if scheme == "file":
        return {"Type": "localDirectory", "Params": {"SourcePath": rest}}
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        return {"Type": "s3", "Params": {"Bucket": bucket, "Key": key}}
    raise click.BadParameter(f"unknown input scheme {scheme!r} in {uri!r}; use ipfs, http(s), file or s3",
                             param_hint="-i/--input")


def parse_input(text: str) -> dict[str, Any]:
    """`-i src=URI,dst=/path[,readwrite=true]`, or the short `URI[:/path]` (target /inputs)."""
    if text.startswith("src="):
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise click.BadParameter(f"{part!r} in {text!r} is not key=value", param_hint="-i/--input")
            fields[key.strip().lower()] = value.strip()
        unknown = set(fields) - {"src", "dst", "readwrite"}
        if unknown:
            raise click.BadParameter(f"unknown input option(s) {', '.join(sorted(unknown))}; use src, dst, readwrite",
                                     param_hint="-i/--input")
        uri, target = fields["src"], fields.get("dst", "/inputs")
        read_write = fields.get("readwrite", "false").lower() in ("1", "true", "yes")
    else:
        uri, target, read_write = text, "/inputs", False
        scheme_end = text.find("://")
        split = text.rfind(":/")
        if split > scheme_end + 2:  # a target after the URI
            uri, target = text[:split], text[split + 1 :]
    source = _input_source(uri)
    if read_write:
        if source["Type"] != "localDirectory":
            raise click.BadParameter("readwrite applies to file:// inputs only", param_hint="-i/--input")
        source["Params"]["ReadWrite"] = True
    return {"Target": target, "Source": source}


def parse_output(text: str) -> dict[str, str]:
    """`-o NAME:/path`, or just `/path` (named after its last part)."""
    name, sep, path = text.partition(":")
    if not sep:
        name, path = text.rstrip("/").rsplit("/", 1)[-1] or "outputs", text
    if not path.startswith("/") or not name:
        raise click.BadParameter(f"{text!r} is not NAME:/path", param_hint="-o/--output")
    return {"Name": name, "Path": path}


def docker_document(image: str, command: tuple[str, ...], *, entrypoint: str | None, workdir: str,
                    env: tuple[str, ...], inputs: tuple[str, ...], outputs: tuple[str, ...], cpu: str | None,
                    memory: str | None, disk: str | None, gpu: str | None, network: str,
                    domains: tuple[str, ...], publisher: str, count: int, timeout: int,
                    constraints: tuple[str, ...], labels: tuple[str, ...]) -> dict[str, Any]:
    """The job `docker run` submits (the node validates it)."""
    resources = {key: value for key, value in (("CPU", cpu), ("Memory", memory), ("Disk", disk), ("GPU", gpu)) if value}
    task: dict[str, Any] = {
        "Name": "main",
        "Engine": {
            "Type": "docker",
            "Params": {
                "Image": image,
                "Entrypoint": [entrypoint] if entrypoint else None,
                "Parameters": list(command),
                "WorkingDirectory": workdir,
                "EnvironmentVariables": list(env),
            },
        },
        "Publisher": {"Type": publisher},
        "InputSources": [parse_input(text) for text in inputs],
        "ResultPaths": [parse_output(text) for text in outputs or ("outputs:/outputs",)],
        "Resources": resources,
        "Network": {"Type": NETWORKS[network], **({"Domains": list(domains)} if domains else {})},
        "Timeouts": {"TotalTimeout": timeout},
    }
    document: dict[str, Any] = {"Name": image, "Type": "batch", "Count": count, "Tasks": [task]}
    if constraints:
        document["Constraints"] = [_constraint(text) for text in constraints]
    if labels:
        document["Labels"] = dict(_pair(text, "-l/--label") for text in labels)
    return document


def _constraint(text: str) -> dict[str, Any]:
    for operator in ("!=", "==", "="):
        key, sep, values = text.partition(operator)
        if sep:
            return {"Key": key.strip(), "Operator": operator, "Values": [v.strip() for v in values.split(",")]}
    raise click.BadParameter(f"{text!r} is not KEY=VALUE or KEY!=VALUE", param_hint="-s/--selector")


def _pair(text: str, hint: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not key=value", param_hint=hint)
    return key, value


@click.group()
def docker() -> None:
    """Docker shortcuts."""


@docker.command("run", context_settings={"allow_interspersed_args": False})
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="An environment variable (repeatable).")
@click.option("-i", "--input", "inputs", multiple=True, metavar="URI[:/path]",
              help="An input: ipfs://CID, https://…, file:///dir or s3://bucket/key, at /inputs or :/path; "
                   "or src=URI,dst=/path,readwrite=true (repeatable).")
@click.option("-o", "--output", "outputs", multiple=True, metavar="NAME:/path",
              help="A result path (repeatable; default outputs:/outputs).")
@click.option("--entrypoint", help="Replace the image's entrypoint.")
@click.option("-w", "--workdir", default="", help="Working directory in the container.")
@click.option("--cpu", help="CPU: cores (0.5) or millicores (500m).")
@click.option("--memory", help="Memory, e.g. 256Mb.")
@click.option("--disk", help="Disk, e.g. 1Gb.")
@click.option("--gpu", help="Number of GPUs.")
@click.option("--network", type=click.Choice(sorted(NETWORKS)), default="none", show_default=True)
@click.option("--domain", "domains", multiple=True, help="A domain an http network may reach (repeatable).")
@click.option("-p", "--publisher", default="local", show_default=True, help="ipfs, local, s3 or none.")
@click.option("--count", type=click.IntRange(1), default=1, show_default=True, help="Nodes to run it on.")
@click.option("--timeout", type=click.IntRange(0), default=600, show_default=True,
              help="The job's TotalTimeout in seconds (0: none).")
@click.option("-s", "--selector", "constraints", multiple=True, metavar="KEY=VALUE",
              help="Run only on nodes whose label matches (repeatable).")
@click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE", help="A job label (repeatable).")
@commands.api_option
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the job to end.")
@click.option("--id-only", is_flag=True, help="Print only the job ID.")
@click.option("--follow", "-f", is_flag=True, help="Stream the job's output until it ends.")
@click.option("--output-format", "output_format", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True)
def docker_run(image: str, command: tuple[str, ...], api: str, wait: bool, id_only: bool, follow: bool,
               output_format: str, timeout: int, **fields: Any) -> None:
    """Run IMAGE [-- COMMAND ARGS...] as a one-task batch job."""
    if command[:1] == ("--",):  # `IMAGE -- CMD`: after IMAGE every word is the command's anyway
        command = command[1:]
    document = docker_document(image, command, timeout=timeout, **fields)
    commands.run_job(document, api, wait=wait, id_only=id_only, follow=follow, output=output_format,
                     timeout=max(timeout, 1) + 60)
