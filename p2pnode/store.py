"""The node's durable state: job records and counters in SQLite.

A node killed with -9 and started again must find every job change it had
committed. A record is kept as the wire codec's CBOR of a `Records` message
(one serialisation for the network and the disk), next to a few plain columns
(state, name, labels…) for listing.

Saving writes what changed, not the whole record: the store remembers what it
last wrote of each job (the immutable records, by identity), and a save adds
one row to `job_changes` holding the header, the executions that changed and
the new history events. An ops or daemon job on a thousand nodes has a
record of hundreds of kilobytes that changes one execution at a time:
written whole at every save it cost a peer time in proportion to the square
of its nodes. Once a job's changes outweigh its whole record, the whole record
is written again and its changes deleted (each byte is then written at most
about three times). A record under `CHANGES_FROM` (a batch job's few
kilobytes) is still written whole: one statement costs less than a change
row and its listing update. Loading merges a job's changes into its record in
order (`JobReplica.apply`, as a delta from a peer).

Durability: WAL journal with ``synchronous=NORMAL``. A commit in WAL mode is an
append to the -wal file; NORMAL skips the fsync at each commit, but the write
has reached the kernel before COMMIT returns, so a process that dies (even by
SIGKILL) loses nothing it committed — only a power cut or a kernel crash can
drop the last commits (never corrupt the file). FULL would fsync every commit
and cost milliseconds per job change for a risk this node does not carry: the
network holds replicas of every job, and anti-entropy repairs a node's losses.

The WAL is checkpointed into the main file at least every
`CHECKPOINT_INTERVAL` seconds of writes and on close, so `node.db` alone (a
naive backup, a copy) holds the node's state, not just its schema.

A damaged file stops the node at start (`PRAGMA quick_check`), with a message
naming the file and the way out, rather than starting empty in silence. Bad
rows in a sound file never stop a node: a record that does not decode is moved
to the `quarantine` table, logged, and skipped.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from protocols import wire
from protocols.messages import Records
from protocols.records import JobDelta, JobReplica

log = logging.getLogger("p2pnode.store")

SCHEMA_VERSION = 2  # 2: job_changes
CHECKPOINT_INTERVAL = 5.0  # seconds: the most of committed state that lives only in the WAL
CHANGES_FROM = 16 << 10  # bytes: a smaller record is written whole at every save
_SENDER = "store"  # the codec's envelope names a sender; on disk there is none

_SCHEMA = """
CREATE TABLE jobs (
    job_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    state       TEXT NOT NULL,
    type        TEXT NOT NULL,
    create_time REAL NOT NULL,
    modify_time REAL NOT NULL,
    labels      TEXT NOT NULL,  -- JSON object
    record      BLOB NOT NULL   -- wire CBOR of Records((snapshot,))
);
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_by_namespace ON jobs (namespace, create_time);
CREATE TABLE job_changes (
    job_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    change BLOB NOT NULL,  -- wire CBOR of Records((delta,)): what changed since the last save
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE quarantine (
    job_id         TEXT NOT NULL,
    record         BLOB,
    error          TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_UPSERT_JOB = """
INSERT INTO jobs (job_id, name, namespace, state, type, create_time, modify_time, labels, record)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    name = excluded.name, namespace = excluded.namespace, state = excluded.state,
    type = excluded.type, create_time = excluded.create_time, modify_time = excluded.modify_time,
    labels = excluded.labels, record = excluded.record
"""


_LISTING = """
UPDATE jobs SET name = ?, namespace = ?, state = ?, type = ?, create_time = ?, modify_time = ?, labels = ?
WHERE job_id = ?
"""

# Schema changes from each older version (a fresh file gets `_SCHEMA`).
_UPGRADES = {1: _SCHEMA[_SCHEMA.index("CREATE TABLE job_changes") : _SCHEMA.index("CREATE TABLE quarantine")]}

_WAY_OUT = (
    "stop the node, move the file aside (mv {path} {path}.damaged, and its -wal and -shm files if any), and start "
    "again: the node starts empty and its peers send back the jobs it keeps; or point --data-dir elsewhere"
)


class StoreError(RuntimeError):
    """The database cannot be used; the message says what to do."""


class Store:
    """One node's database file. Use it from one thread; every call is short."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._checkpointed = time.monotonic()
        self._written: dict[str, _Written] = {}  # what the file holds of each job saved or loaded
        self.bytes_written = 0  # record bytes encoded and written, whole or changes (for benchmarks)
        try:
            # isolation_level=None: no implicit transactions; each write below says BEGIN itself.
            self._db = sqlite3.connect(path, isolation_level=None)
            self._open()
        except sqlite3.DatabaseError as error:
            self._close_quietly()
            raise StoreError(f"cannot open the node database {path}: {error}; {_WAY_OUT.format(path=path)}") from None
        except StoreError:
            self._close_quietly()
            raise

    def _open(self) -> None:
        self._db.execute("PRAGMA busy_timeout = 5000")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("%s: the file system refused WAL journaling (got %s); writes are slower", self.path, mode)
        self._db.execute("PRAGMA synchronous = NORMAL")  # see the module docstring
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreError(
                f"the node database {self.path} is damaged ({'; '.join(problems)}); {_WAY_OUT.format(path=self.path)}"
            )
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the node database {self.path} has schema version {version}, newer than this p2pnode knows "
                f"({SCHEMA_VERSION}): run the newer p2pnode that wrote it, or point --data-dir elsewhere"
            )
        if version < SCHEMA_VERSION:
            with self._transaction():
                # Another process may have created it meanwhile: look again under the lock.
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    script = _SCHEMA if version == 0 else "".join(_UPGRADES[v] for v in range(version, SCHEMA_VERSION))
                    for statement in filter(str.strip, script.split(";")):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Checkpoint the WAL into the main file, then close."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as error:
            log.warning("%s: could not checkpoint on close (%s); the WAL keeps the changes", self.path, error)
        self._db.close()

    def _checkpoint_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._checkpointed >= CHECKPOINT_INTERVAL:
            self._checkpointed = now
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for readers

    def _close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    # ------------------------------------------------------------ jobs

    def save_job(self, delta: JobDelta) -> None:
        """Save one record (a `JobReplica.snapshot()`)."""
        self.save_jobs((delta,))

    def save_jobs(self, deltas: Iterable[JobDelta]) -> None:
        """Save records (each a whole `JobReplica.snapshot()`) in one
        transaction, all of them or none: for each, what changed since its
        last save, or the whole record when it has none or its changes
        outweigh it."""
        done: list[tuple[str, _Written]] = []
        with self._transaction():
            for delta in deltas:
                try:
                    written = self._save(delta)
                except wire.LocalWireError as error:  # too big for the wire is too big for the network: keep the rest
                    log.error("job %s cannot be saved: %s", delta.header.id, error)
                    continue
                if written is not None:
                    done.append((delta.header.id, written))
        self._written.update(done)  # (only once committed: what a rolled-back save held goes into the next one)
        self._checkpoint_now_and_then()

    def _save(self, delta: JobDelta) -> _Written | None:
        job_id = delta.header.id
        last = self._written.get(job_id)
        if last is None or last.whole_bytes < CHANGES_FROM:
            return self._save_whole(delta)  # (small: one statement, as cheap as a change)
        change = last.change(delta)
        if change is None:
            return None
        blob = _encode(change)
        if last.change_bytes + len(blob) > last.whole_bytes:
            try:
                return self._save_whole(delta)
            except wire.LocalWireError:
                pass  # too big for one row now: its changes keep it whole
        self._db.execute("INSERT INTO job_changes (job_id, seq, change) VALUES (?, ?, ?)", (job_id, last.seq + 1, blob))
        self._db.execute(_LISTING, (*_listing(delta), job_id))
        self.bytes_written += len(blob)
        return last.after(delta, len(blob))

    def _save_whole(self, delta: JobDelta) -> _Written:
        """Write the whole record; its changes are then in it."""
        job_id = delta.header.id
        blob = _encode(delta)
        self._db.execute(_UPSERT_JOB, (job_id, *_listing(delta), blob))
        self._db.execute("DELETE FROM job_changes WHERE job_id = ?", (job_id,))
        self.bytes_written += len(blob)
        return _Written(delta, len(blob))

    def load_jobs(self) -> list[JobDelta]:
        """Every record that decodes, its changes merged in; the rows that do
        not decode are quarantined and logged (peers send back what they held)."""
        replicas: dict[str, JobReplica] = {}
        written: dict[str, _Written] = {}
        bad: list[tuple[str, bytes, str]] = []
        bad_changes: list[tuple[str, int]] = []
        for job_id, blob in self._db.execute("SELECT job_id, record FROM jobs ORDER BY create_time, job_id"):
            try:
                delta = _decode_job(job_id, blob)
            except Exception as error:  # whatever a damaged row raises, startup goes on
                bad.append((job_id, blob, f"{type(error).__name__}: {error}"))
                continue
            replicas[job_id] = JobReplica.from_delta(delta)
            written[job_id] = _Written(delta, len(blob))
        for job_id, seq, blob in self._db.execute("SELECT job_id, seq, change FROM job_changes ORDER BY job_id, seq"):
            replica = replicas.get(job_id)
            try:
                if replica is None:
                    raise ValueError("a change to a job whose record is missing or set aside")
                change = _decode_job(job_id, blob)
            except Exception as error:  # noqa: BLE001 - the same: set aside, go on
                bad.append((job_id, blob, f"change {seq}: {type(error).__name__}: {error}"))
                bad_changes.append((job_id, seq))
                continue
            replica.apply(change)
            written[job_id] = replace(written[job_id], change_bytes=written[job_id].change_bytes + len(blob), seq=seq)
        if bad:
            now = time.time()
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO quarantine (job_id, record, error, quarantined_at) VALUES (?, ?, ?, ?)",
                    ((job_id, blob, error, now) for job_id, blob, error in bad),
                )
                self._db.executemany("DELETE FROM jobs WHERE job_id = ?", ((j,) for j, _, _ in bad if j not in replicas))
                self._db.executemany("DELETE FROM job_changes WHERE job_id = ? AND seq = ?", bad_changes)
            for job_id, _, error in bad:
                log.warning("job %s in %s does not decode (%s); moved to the quarantine table", job_id, self.path, error)
        loaded = [replica.snapshot() for replica in replicas.values()]
        # What is on disk now: the next save of each job adds to it.
        self._written = {d.header.id: replace(written[d.header.id], record=d) for d in loaded}
        return loaded

    def quarantined(self) -> list[tuple[str, str]]:
        """(job id, error) of the records set aside because they did not decode."""
        return list(self._db.execute("SELECT job_id, error FROM quarantine ORDER BY rowid"))

    # ------------------------------------------------------------ meta

    def next_incarnation(self) -> int:
        """The node's incarnation for this run: one more than the last one."""
        with self._transaction():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'incarnation'").fetchone()
            try:
                incarnation = int(row[0]) + 1 if row is not None else 1
            except ValueError:
                raise StoreError(
                    f"the incarnation counter in {self.path} is {row[0]!r}, not a number; "
                    "delete it with: sqlite3 FILE \"DELETE FROM meta WHERE key='incarnation'\""
                ) from None
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('incarnation', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(incarnation),),
            )
        return incarnation

    # ------------------------------------------------------------ plumbing

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK if the body raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


@dataclass(frozen=True, slots=True)
class _Written:
    """What the file holds of one job: the record as last saved, the size of
    its whole row and of the changes written since, the last change's seq.
    Its parts are compared by identity: records and events are immutable, a
    changed one is a new object, and holding them keeps their ids unique."""

    record: JobDelta
    whole_bytes: int
    change_bytes: int = 0
    seq: int = 0

    def change(self, delta: JobDelta) -> JobDelta | None:
        """What of the record `delta` is new since; None if nothing."""
        record = self.record
        held = set(map(id, record.executions))
        executions = tuple(e for e in delta.executions if id(e) not in held)
        held = set(map(id, record.events))
        events = tuple(e for e in delta.events if id(e) not in held)  # (a late event too, not only the newest)
        if delta.header is record.header and not executions and not events:
            return None
        return JobDelta(delta.header, executions, events)

    def after(self, delta: JobDelta, size: int) -> _Written:
        """The same once `delta`'s change is written, in `size` bytes."""
        return _Written(delta, self.whole_bytes, self.change_bytes + size, self.seq + 1)


def _encode(delta: JobDelta) -> bytes:
    return wire.encode(Records((delta,)), _SENDER, canonical=False)  # no hash depends on these bytes


def _listing(delta: JobDelta) -> tuple[object, ...]:
    """The plain columns a listing reads, in the tables' order."""
    header = delta.header
    spec = header.spec
    return (
        header.name,
        spec.namespace or "default",
        header.state.value,
        str(getattr(spec.type, "value", spec.type)),
        header.create_time,
        header.modify_time,
        json.dumps(dict(spec.labels or {}), sort_keys=True),
    )


def _decode_job(job_id: str, blob: bytes) -> JobDelta:
    message = wire.decode(blob).message
    if not isinstance(message, Records) or len(message.deltas) != 1:
        raise ValueError(f"expected one job record, found {type(message).__name__}")
    delta = message.deltas[0]
    if delta.header.id != job_id:
        raise ValueError(f"the record is of job {delta.header.id}, filed under {job_id}")
    return delta
