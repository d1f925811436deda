"""The node's durable state: job records and counters in SQLite.

A node killed with -9 and started again must find every job change it had
committed. Each record is kept whole, as the wire codec's CBOR of a `Records`
message holding the job's snapshot (one serialisation for the network and the
disk), next to a few plain columns (state, name, labels…) for listing.

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
from pathlib import Path

from protocols import wire
from protocols.messages import Records
from protocols.records import JobDelta

log = logging.getLogger("p2pnode.store")

SCHEMA_VERSION = 1
CHECKPOINT_INTERVAL = 5.0  # seconds: the most of committed state that lives only in the WAL
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
                if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
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
        """Upsert one whole record (a `JobReplica.snapshot()`)."""
        self.save_jobs((delta,))

    def save_jobs(self, deltas: Iterable[JobDelta]) -> None:
        """Upsert whole records in one transaction: all of them or none."""
        with self._transaction():
            for delta in deltas:
                try:
                    row = _job_row(delta)
                except wire.LocalWireError as error:  # too big for the wire is too big for the network: keep the rest
                    log.error("job %s cannot be saved: %s", delta.header.id, error)
                    continue
                self._db.execute(_UPSERT_JOB, row)  # sqlite3 keeps the statement prepared
        self._checkpoint_now_and_then()

    def load_jobs(self) -> list[JobDelta]:
        """Every record that decodes; the others are quarantined and logged."""
        loaded: list[JobDelta] = []
        bad: list[tuple[str, bytes, str]] = []
        for job_id, blob in self._db.execute("SELECT job_id, record FROM jobs ORDER BY create_time, job_id"):
            try:
                loaded.append(_decode_job(job_id, blob))
            except Exception as error:  # whatever a damaged row raises, startup goes on
                bad.append((job_id, blob, f"{type(error).__name__}: {error}"))
        if bad:
            now = time.time()
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO quarantine (job_id, record, error, quarantined_at) VALUES (?, ?, ?, ?)",
                    ((job_id, blob, error, now) for job_id, blob, error in bad),
                )
                self._db.executemany("DELETE FROM jobs WHERE job_id = ?", ((job_id,) for job_id, _, _ in bad))
            for job_id, _, error in bad:
                log.warning("job %s in %s does not decode (%s); moved to the quarantine table", job_id, self.path, error)
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


def _job_row(delta: JobDelta) -> tuple[object, ...]:
    header = delta.header
    spec = header.spec
    return (
        header.id,
        header.name,
        spec.namespace or "default",
        header.state.value,
        str(getattr(spec.type, "value", spec.type)),
        header.create_time,
        header.modify_time,
        json.dumps(dict(spec.labels or {}), sort_keys=True),
        wire.encode(Records((delta,)), _SENDER, canonical=False),  # no hash depends on these bytes
    )


def _decode_job(job_id: str, blob: bytes) -> JobDelta:
    message = wire.decode(blob).message
    if not isinstance(message, Records) or len(message.deltas) != 1:
        raise ValueError(f"expected one job record, found {type(message).__name__}")
    delta = message.deltas[0]
    if delta.header.id != job_id:
        raise ValueError(f"the record is of job {delta.header.id}, filed under {job_id}")
    return delta
