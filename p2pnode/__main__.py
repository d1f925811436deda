"""`python -m p2pnode` runs the `p2pnode` command."""

from p2pnode.cli import main

main(prog_name="p2pnode")
