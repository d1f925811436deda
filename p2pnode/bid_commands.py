"""`p2pnode bid list|approve|reject`: the operator decides the bids this
node's http probe held ("shouldWait")."""

from __future__ import annotations

import time

import click

from p2pnode.commands import _emit, _fail, api_option, output_option, wide_option
from p2pnode.client import ApiClient, ApiClientError
from p2pnode.tables import Sheet


@click.group("bid")
def bid_group() -> None:
    """Bids held for this node's operator: list, approve, reject."""


@bid_group.command("list")
@api_option
@output_option
@wide_option
@click.option("--held", is_flag=True, help="Only the bids still waiting for a decision.")
def bid_list(api: str, output: str, wide: bool, held: bool) -> None:
    """The bids the node's probe held, and the last ones decided."""
    try:
        with ApiClient(api) as client:
            answer = client.bids(held_only=held)
    except ApiClientError as error:
        _fail(error)
    sheet = Sheet(("EXECUTION", "JOB", "NAME", "STATE", "SINCE", "REASON"), short={0: 14, 1: 14})
    for item in answer["Items"]:
        since = time.strftime("%H:%M:%S", time.localtime(item["Since"] / 1e9))
        sheet.add(item["ExecutionID"], item["JobID"], item["JobName"], item["Outcome"] or "Held", since, item["Reason"])
    _emit(answer, output, sheet, wide)


def _decide(api: str, execution_id: str, accept: bool, reason: str) -> None:
    try:
        with ApiClient(api) as client:
            answer = client.decide_bid(execution_id, accept, reason)
    except ApiClientError as error:
        _fail(error)
    click.echo(f"{'approved' if accept else 'rejected'} the bid of {answer['ExecutionID']} (job {answer['JobID']})")


@bid_group.command("approve")
@click.argument("execution_id")
@api_option
@click.option("--reason", default="", help="Why (kept in the node's log).")
def bid_approve(execution_id: str, api: str, reason: str) -> None:
    """Bid for the job: the node runs it if the leader picks it."""
    _decide(api, execution_id, True, reason)


@bid_group.command("reject")
@click.argument("execution_id")
@api_option
@click.option("--reason", default="", help="Why: the leader records it in the job's history.")
def bid_reject(execution_id: str, api: str, reason: str) -> None:
    """Decline the job, with a reason."""
    _decide(api, execution_id, False, reason)
