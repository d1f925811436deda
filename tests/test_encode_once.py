"""The runtime's encode-once cache: one encoding per change, never stale bytes."""

from __future__ import annotations

from protocols import wire
from protocols.jobspec import job_spec_from_data
from protocols.messages import JobUpdated, Records
from protocols.records import JobDelta, JobHeader, JobState
from p2pnode.encode_once import EncodeOnce
from tests.integration_support import wasm_job

SENDER = "12D3KooWSender"


def _delta(revision: int) -> JobDelta:
    spec = job_spec_from_data(wasm_job("data:,x", "a")).spec
    header = JobHeader(
        id="j-1", spec=spec, name="n", state=JobState.PENDING, message="submitted", version=1, revision=revision,
        epoch=1, leader=SENDER, successors=(SENDER,), create_time=1.0, modify_time=1.0 + revision,
    )
    return JobDelta(header)


def test_a_delta_sent_to_many_peers_is_encoded_once_and_decodes_for_each() -> None:
    encode = EncodeOnce(lambda message: wire.encode(message, SENDER))
    delta = _delta(1)
    sent = [encode(JobUpdated(delta)) for _ in range(3)]  # one message object per keeper, one delta
    assert sent[0] is sent[1] is sent[2] and (encode.encoded, encode.reused) == (1, 2)
    assert wire.decode(sent[2]).message == JobUpdated(delta)


def test_a_new_change_or_another_message_type_is_encoded_afresh() -> None:
    encode = EncodeOnce(lambda message: wire.encode(message, SENDER))
    first, second = _delta(1), _delta(2)
    assert wire.decode(encode(JobUpdated(first))).message.delta.header.revision == 1
    assert wire.decode(encode(JobUpdated(second))).message.delta.header.revision == 2
    assert isinstance(wire.decode(encode(Records((first,)))).message, Records)
    assert encode.encoded == 3 and encode.reused == 0


def test_only_a_few_encodings_are_remembered() -> None:
    encode = EncodeOnce(lambda message: wire.encode(message, SENDER), remembered=2)
    deltas = [_delta(i) for i in range(3)]
    for delta in deltas:
        encode(JobUpdated(delta))
    encode(JobUpdated(deltas[0]))  # forgotten: encoded again, correctly
    assert encode.encoded == 4 and wire.decode(encode(JobUpdated(deltas[0]))).message.delta == deltas[0]
