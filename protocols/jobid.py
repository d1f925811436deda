"""Job IDs that certify what was submitted, so no member can forge another version of a job.

A job's ID ends in a digest of its label, its submitter, a random salt and its
spec: `<label>-<32 hex digits>`. Every node can check that a record's header
hashes to its ID (`certifies`), so a member that sends a job ID with another
spec or submitter -- a forged submit racing the real one to a leader that has
not heard of the job yet, or a record invented for a node that holds no copy --
is refused before anything is stored. The spec and submitter never change
after submission, so the check holds for every write of the job.

An ID that does not end in 32 hex digits is a plain name: no node ever makes
one (the API and the simulator make certified IDs); tests name their jobs so,
and such a name is taken first come, as every ID was before.
"""

from __future__ import annotations

import hashlib
import json
import re

from protocols.jobspec import JobSpec

DIGEST_HEX = 32
_CERTIFIED = re.compile(rf"^(.+)-([0-9a-f]{{{DIGEST_HEX}}})$")


def make_job_id(label: str, submitter: str, salt: str, spec: JobSpec) -> str:
    """The certified ID of `spec` submitted to `submitter` (salt: random, one per submission)."""
    return f"{label}-{_digest(label, submitter, salt, spec)}"


def certifies(job_id: str, submitter: str, salt: str, spec: JobSpec) -> bool:
    """Whether the ID is a plain name, or the digest of exactly this submission."""
    match = _CERTIFIED.match(job_id)
    if match is None:
        return True
    label, digest = match.groups()
    return _digest(label, submitter, salt, spec) == digest


def _digest(label: str, submitter: str, salt: str, spec: JobSpec) -> str:
    document = json.dumps(spec.to_document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data = "\0".join(("p2pnode job id v1", label, submitter, salt, document)).encode()
    return hashlib.blake2b(data, digest_size=DIGEST_HEX // 2).hexdigest()
