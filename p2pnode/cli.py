"""The `p2pnode` command: `serve`, `devstack`, `demo`, `job ...`, `node ...`,
`wasm run`, `config ...`, `bid ...`, `ipfs ...`, `docker ...`.

Each command's module loads when that command runs (or when `--help` lists
them all): a node's process, `p2pnode serve`, then holds `serve` and what it
runs, not the other commands, the API client or the IPFS commands' helpers
(≈0.4 MiB of an idle peer's memory)."""

from __future__ import annotations

import importlib

import click

COMMANDS = {
    "bid": "p2pnode.bid_commands:bid_group",
    "config": "p2pnode.config_commands:config_group",
    "demo": "p2pnode.commands:demo",
    "devstack": "p2pnode.commands:devstack_command",
    "docker": "p2pnode.docker_cli:docker",
    "ipfs": "p2pnode.ipfs.cli:ipfs",
    "job": "p2pnode.job_commands:job",
    "network": "p2pnode.job_commands:network",
    "node": "p2pnode.job_commands:node",
    "serve": "p2pnode.serve_command:serve",
    "version": "p2pnode.commands:version",
    "wasm": "p2pnode.job_commands:wasm",
}
"""Each command's name and where it is defined (`module:attribute`)."""


class _CommandsByName(click.Group):
    """A group whose commands are imported from `COMMANDS` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attribute = COMMANDS[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as error:  # "did you mean" among every command, not only those loaded
            raise click.exceptions.NoSuchCommand(error.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None


@click.group(cls=_CommandsByName, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="p2pnode")
@click.option("--token", envvar="P2PNODE_API_TOKEN", help="Bearer token for a node's API (or $P2PNODE_API_TOKEN).")
def main(token: str | None) -> None:
    """A peer-to-peer compute-over-data network: run a node, submit jobs to any peer."""
