"""`p2pnode config list|get|set`: a node's settings by their property names.

`set` writes the YAML config file that `serve` reads by default
(`config.yaml` in the data directory), nested the way `p2pnode.config`
reads it. `list` and `get` show what a node started here now would use:
defaults, then that file, then the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import click

from p2pnode.config import DEFAULT_DATA_DIR, PROPERTIES, ConfigError, NodeSettings, _Invalid, load_settings
from p2pnode.lazy import lazy_import
from p2pnode.tables import Sheet, show

yaml = lazy_import("yaml")

CONFIG_FILE = "config.yaml"


def default_config_file(env: Mapping[str, str], flags: Mapping[str, object]) -> Path | None:
    """`config.yaml` in the data directory (from --data-dir, the environment or
    the default), when it exists."""
    data_dir = flags.get("data_dir") or env.get(PROPERTIES["Node.DataDir"].env) or DEFAULT_DATA_DIR
    path = Path(str(data_dir)).expanduser() / CONFIG_FILE
    return path if path.is_file() else None


def value_of(settings: NodeSettings, path: str) -> Any:
    """A property's value in `settings`."""
    group, _, name = PROPERTIES[path].target.rpartition(".")
    holder = getattr(settings, group) if group else settings
    return getattr(holder, name)


def shown(value: Any) -> str:
    """A value as one would write it back: lists comma-separated, labels k=v."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Mapping):
        return ",".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, (tuple, list)):
        return ",".join(str(item) for item in value)
    return str(value)


def _property(key: str) -> str:
    by_lower = {path.lower(): path for path in PROPERTIES}
    if key.lower() not in by_lower:
        import difflib

        close = difflib.get_close_matches(key.lower(), by_lower, n=1, cutoff=0.5)
        hint = f" (did you mean {by_lower[close[0]]}?)" if close else ""
        raise click.BadParameter(f"unknown property {key}{hint}; `p2pnode config list` shows them all", param_hint="KEY")
    return by_lower[key.lower()]


def _config_path(config_file: Path | None, data_dir: Path | None) -> Path:
    if config_file is not None:
        return config_file
    base = data_dir or Path(os.environ.get(PROPERTIES["Node.DataDir"].env, "") or DEFAULT_DATA_DIR)
    return Path(base).expanduser() / CONFIG_FILE


def _settings(path: Path) -> NodeSettings:
    try:
        return load_settings(config_file=path if path.is_file() else None, env=os.environ, flags={})
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


config_file_option = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
    help="The config file (default: config.yaml in the data directory).",
)
data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="The node's data directory (default ~/.p2pnode)."
)


@click.group("config")
def config_group() -> None:
    """Show and change a node's settings by property name (Node.Compute.Capacity.CPU, ...)."""


@config_group.command("list")
@config_file_option
@data_dir_option
@click.option("--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@click.option("--wide", is_flag=True, help="Whole cells, also on a terminal.")
def config_list(config_file: Path | None, data_dir: Path | None, output: str, wide: bool) -> None:
    """Every property: its value here, environment variable and what a value looks like."""
    settings = _settings(_config_path(config_file, data_dir))
    rows = [
        {"Key": path, "Value": shown(value_of(settings, path)), "Environment": prop.env, "Hint": prop.hint}
        for path, prop in PROPERTIES.items()
    ]
    if output == "json":
        import json

        click.echo(json.dumps(rows, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(rows, sort_keys=False, allow_unicode=True), nl=False)
    else:
        sheet = Sheet(("KEY", "VALUE", "ENVIRONMENT", "VALUES LIKE"))
        for row in rows:
            sheet.add(row["Key"], row["Value"], row["Environment"], row["Hint"])
        show(sheet, wide=wide)


@config_group.command("get")
@click.argument("key")
@config_file_option
@data_dir_option
def config_get(key: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Print one property's value (e.g. Node.Compute.Capacity.Memory)."""
    path = _property(key)
    click.echo(shown(value_of(_settings(_config_path(config_file, data_dir)), path)))


@config_group.command("set")
@click.argument("key")
@click.argument("value")
@config_file_option
@data_dir_option
def config_set(key: str, value: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Check VALUE and write it to the config file `serve` reads."""
    path = _property(key)
    prop = PROPERTIES[path]
    try:
        prop.parse(value)
    except _Invalid as error:
        raise click.BadParameter(f"{path}: {error}. Set it to {prop.hint}.", param_hint="VALUE") from None
    target = _config_path(config_file, data_dir)
    try:
        document = yaml.safe_load(target.read_text(encoding="utf-8")) if target.is_file() else {}
    except (OSError, yaml.YAMLError) as error:
        raise click.ClickException(f"cannot read {target}: {error}") from None
    if not isinstance(document, dict):
        document = {}
    node = document
    *sections, leaf = path.split(".")
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise click.ClickException(f"{target}: {section} is not a section; fix the file by hand")
    node[leaf] = value
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    _settings(target)  # the whole file still loads
    click.echo(f"{path} = {value} (in {target})", err=True)
