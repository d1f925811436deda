"""Certified job IDs: a forged version of a job is refused by every node, held copy or not."""

from dataclasses import replace

from protocols.authority import UNCERTIFIED, Authority
from protocols.jobid import certifies, make_job_id
from protocols.jobspec import job_spec_from_data
from protocols.messages import JobUpdated, Records, SubmitToLeader
from protocols.records import JobDelta, JobHeader, JobState

SPEC = job_spec_from_data({"Type": "batch", "Count": 1, "Tasks": [{"Name": "t", "Engine": {"Type": "wasm", "Params": {"EntryModule": {"Source": {"Type": "inline", "Params": {"URL": "data:,x"}}}}}}]}).spec


def header(job_id: str, submitter: str = "sub", salt: str = "s1", spec=SPEC) -> JobHeader:
    return JobHeader(id=job_id, spec=spec, name="n", state=JobState.PENDING, message="submitted", version=1,
                     revision=1, epoch=1, leader="lead", successors=("k1", "k2"), create_time=0.0,
                     modify_time=0.0, submitter=submitter, salt=salt)


def authority() -> Authority:
    return Authority("lead", {}, alive=lambda n: True, info=lambda n: None, alive_ids=lambda: ["lead", "k1", "k2", "sub", "rogue"])


def test_an_id_certifies_exactly_its_submission() -> None:
    job_id = make_job_id("j", "sub", "s1", SPEC)
    assert job_id.startswith("j-") and len(job_id) == 2 + 32
    assert certifies(job_id, "sub", "s1", SPEC)
    other = SPEC.model_copy(update={"priority": SPEC.priority + 1})
    assert not certifies(job_id, "sub", "s1", other)
    assert not certifies(job_id, "rogue", "s1", SPEC)
    assert not certifies(job_id, "sub", "s2", SPEC)
    assert make_job_id("j", "sub", "s2", SPEC) != job_id


def test_a_plain_name_is_taken_first_come() -> None:
    assert certifies("job-one", "anyone", "", SPEC)


def test_a_forged_version_of_a_job_is_refused_where_no_copy_is_held() -> None:
    job_id = make_job_id("j", "sub", "s1", SPEC)
    real = header(job_id)
    forged_spec = header(job_id, spec=SPEC.model_copy(update={"priority": 9}))
    forged_submitter = header(job_id, submitter="rogue")
    guard = authority()
    assert guard.check("sub", SubmitToLeader(JobDelta(real))) is None
    assert guard.check("sub", SubmitToLeader(JobDelta(forged_spec))) == UNCERTIFIED
    assert guard.check("rogue", SubmitToLeader(JobDelta(forged_submitter))) == UNCERTIFIED
    invented = replace(forged_spec, leader="rogue")
    assert guard.check("rogue", JobUpdated(JobDelta(invented))) == UNCERTIFIED
    assert guard.check("rogue", Records((JobDelta(invented),))) == UNCERTIFIED
    assert sum(guard.refused.values()) == 4
