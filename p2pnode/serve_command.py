"""`p2pnode serve`, in a module of its own: a node's process imports this and
not the other commands (their modules, the API client and the IPFS
commands' helpers: ≈0.4 MiB of an idle peer), which `p2pnode.cli` loads
only when one of them runs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click


def _fail(error: Exception) -> None:
    from p2pnode.commands import _fail as fail  # rich and the CLI's console: only on the way out

    fail(error)


_BOOLEAN_FLAGS = (
    "--mdns", "--network-open", "--api-insecure", "--job-selection-reject-stateless", "--job-selection-accept-networked",
)
_REPEATABLE_FLAGS = {"--listen": "listen", "--peer": "peers", "--labels": "labels"}
_FLAG_CHOICES = {"--job-selection-data-locality": ["local", "anywhere"], "--log-level": ["debug", "info", "warning", "error"]}


def _settings_options(function: Any) -> Any:
    """One option per node setting (`p2pnode.config.FLAG_TO_PROPERTY`), each
    saying its property, environment variable and what a value looks like."""
    from p2pnode.config import FLAG_TO_PROPERTY, PROPERTIES

    for flag, path in reversed(FLAG_TO_PROPERTY.items()):
        prop = PROPERTIES[path]
        help_text = f"{path} (${prop.env}): {prop.hint}."
        if flag in _BOOLEAN_FLAGS:
            name = flag.removeprefix("--")
            option = click.option(f"{flag}/--no-{name}", default=None, help=help_text)
        elif flag in _REPEATABLE_FLAGS:
            option = click.option(flag, _REPEATABLE_FLAGS[flag], multiple=True, help=help_text + " Repeatable.")
        elif flag in _FLAG_CHOICES:
            option = click.option(flag, type=click.Choice(_FLAG_CHOICES[flag]), help=help_text)
        else:
            option = click.option(flag, help=help_text)
        function = option(function)
    return function


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML config file (default: config.yaml in the data directory, if there is one).")
@_settings_options
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run a node until Ctrl-C or SIGTERM.

    Every setting can also come from the config file (`p2pnode config set`)
    or an environment variable; flags beat the environment, which beats the file."""
    import trio

    from p2pnode.config import ConfigError, load_settings
    from p2pnode.config_commands import default_config_file
    from p2pnode.config import check_exposure
    from p2pnode.netkey import NetworkKeyError, load_key
    from p2pnode.serve import serve_node

    given = {name: value for name, value in flags.items() if value not in (None, ())}
    try:
        config_file = config_file or default_config_file(os.environ, given)
        settings = load_settings(config_file=config_file, env=os.environ, flags=given)
        check_exposure(settings)
        if settings.network_key_file is not None:
            load_key(settings.network_key_file)  # a bad key stops us here, with its fix
    except (ConfigError, NetworkKeyError) as error:
        _fail(error)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from p2pnode.ipfs.blockstore import IndexDamaged
    from p2pnode.memory import reuse_freed_memory
    from p2pnode.store import StoreError
    from p2pnode.transport import ListenFailed

    reuse_freed_memory()  # a node moves data a MiB at a time: see p2pnode/memory.py
    try:
        trio.run(serve_node, settings)
    except BaseException as error:  # a damaged database, a port in use: the message says the way out
        known = _leaf(error, (StoreError, ListenFailed, IndexDamaged))
        if known is None:
            raise
    else:
        return
    _fail(known)


def _leaf(error: BaseException, kinds: tuple[type[Exception], ...]) -> Exception | None:
    """The first error of `kinds` in `error`, looking inside exception groups (trio's nurseries)."""
    if isinstance(error, kinds):
        return error
    if isinstance(error, BaseExceptionGroup):
        return next((leaf for inner in error.exceptions if (leaf := _leaf(inner, kinds)) is not None), None)
    return None
