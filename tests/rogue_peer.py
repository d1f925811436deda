"""A rogue member in its own OS process, driven by tests/test_integration.py:
a fresh identity that joins an open network on loopback, asks the peers for
a job's record, and forges writes to it (issue 12's attack): a failed record written, relayed
and repaired, a forged progress report and cancel, a re-submit with another
spec, and another version of the job under a made-up certified ID.

    python tests/rogue_peer.py DATA_DIR JOB_ID PEER_ADDRESS...

It prints JSON lines on stdout: {"event": "ready", "peer_id"}, then
{"event": "forged", "sent": {type: count}} once it sent its forgeries, and
exits.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pnode.identity import load_or_create_identity  # noqa: E402
from p2pnode.transport import Transport  # noqa: E402
from protocols import wire  # noqa: E402
from protocols.messages import (  # noqa: E402
    NODES_TOPIC,
    CancelExecution,
    DigestReply,
    ExecutionUpdate,
    JobUpdated,
    RecordRequest,
    Records,
    SubmitToLeader,
)
from protocols.jobid import make_job_id  # noqa: E402
from protocols.records import ExecutionState, JobDelta, JobReplica, JobState  # noqa: E402

MARK = "forged"


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


async def main(data_dir: str, job_id: str, addresses: list[str]) -> None:
    transport = Transport(load_or_create_identity(Path(data_dir)), topics=[NODES_TOPIC], bootstrap=addresses)
    records: list[JobReplica] = []
    got = trio.Event()

    async def on_request(sender: str, data: bytes) -> bytes:
        envelope = wire.decode(data)
        if isinstance(envelope.message, Records):
            for delta in envelope.message.deltas:
                if delta.header.id == job_id and delta.executions:
                    records.append(JobReplica.from_delta(delta))
                    got.set()
        return b""

    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        transport.on_request(on_request)
        emit(event="ready", peer_id=transport.peer_id)
        for address in addresses:
            await transport.connect(address)
        peers = sorted(set(transport.connected_peers()))
        ask = wire.encode(RecordRequest(job_id), transport.peer_id)
        for peer in peers:
            await transport.request(peer, ask)
        with trio.fail_after(20):
            await got.wait()
        await trio.sleep(0.5)  # the other keepers' answers
        newest = max(records, key=lambda r: r.header.order)
        header = newest.header
        failed = replace(header, state=JobState.FAILED, revision=header.revision + 1000, message=f"{MARK} by a rogue")
        sent: dict[str, int] = {}

        async def send(peer: str, message: object) -> None:
            await transport.request(peer, wire.encode(message, transport.peer_id))
            sent[type(message).__name__] = sent.get(type(message).__name__, 0) + 1

        for peer in peers:
            await send(peer, JobUpdated(JobDelta(failed)))
        running = [e for e in newest.executions.values() if e.state == ExecutionState.RUNNING]
        execution = running[0] if running else max(newest.executions.values(), key=lambda e: e.create_time)
        await send(header.leader, ExecutionUpdate(job_id, execution.id, header.epoch, ExecutionState.FAILED, MARK))
        await send(execution.node_id, CancelExecution(job_id, execution.id, header.epoch + 1, MARK))
        for peer in peers:  # relays of the failed record, as if it kept the job
            await send(peer, Records((JobDelta(failed),)))
            await send(peer, DigestReply(deltas=(JobDelta(failed),)))
        other_spec = header.spec.model_copy(update={"priority": header.spec.priority + 1})
        await send(header.leader, SubmitToLeader(JobDelta(replace(header, spec=other_spec, revision=1))))
        # Another version of the job under an ID of the certified form: no peer holds it, so only
        # the ID's digest tells it from a real job.
        invented_id = make_job_id("j", transport.peer_id, "salt", header.spec)
        invented = replace(header, id=invented_id, spec=other_spec, submitter=transport.peer_id,
                           leader=transport.peer_id, salt="salt", revision=1)
        for peer in peers:
            await send(peer, SubmitToLeader(JobDelta(invented)))
        emit(event="forged", sent=sent, leader=header.leader)
        nursery.cancel_scope.cancel()
    await transport.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="rogue %(process)d %(name)s %(levelname)s %(message)s")
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3:])
