"""Who holds a CID: provider records kept where a rendezvous ranking puts them.

Theory of operation
-------------------
A node that holds a root CID (it added the data, published a result, or
fetched an input) *provides* it: it sends `ProviderAnnounce` to the CID's
*record keepers*, the first `keepers` live members when the members are
ranked for the CID by rendezvous hashing (`protocols.election`, the same
ranking that picks a job's leader). Every node computes the same keepers from
its view of the members, so anyone who wants to know who holds the CID asks
those few nodes (`ProviderQuery`) and merges their answers (`ProviderReply`):
a lookup costs `2 * keepers` messages however large the network, and so does
an announcement (one message a keeper, however many CIDs it names).

Records expire after the announced time-to-live unless announced again; a
provider re-announces everything it holds every `ttl / 3`, to whoever keeps
the CID by then, so a keeper that died or joined is mended within one round
without any hand-over. A withdrawal is an announcement with a ttl of 0.

A lookup asks the current keepers (itself included, without a message, when
it is one), finishes when all have answered or after `lookup_timeout`, and
its answer is trusted for `cache_ttl`. Answers keep only members alive in
our view: a dead holder is no holder.

The sender of an announcement is the provider (the message names nobody),
so a node can announce only itself; a reply is taken only from a node we
asked for that CID (see `protocols.authority`). What a keeper keeps is
bounded (`MAX_KEPT` CIDs, `MAX_PROVIDERS` each): an announcement past the
bounds is dropped, never a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocols import election
from protocols.timers import TimerKey, TimerKind
from protocols.messages import ProviderAnnounce, ProviderQuery, ProviderReply

KEEPERS = 3  # record keepers per CID
RECORD_TTL = 600.0  # seconds a record lives unless announced again
LOOKUP_TIMEOUT = 1.0  # seconds a lookup waits for keepers that do not answer
CACHE_TTL = 30.0  # seconds a lookup's answer is trusted
MAX_CIDS_PER_ANNOUNCE = 512
MAX_PROVIDERS = 64  # providers kept, and replied, per CID
MAX_KEPT = 1 << 17  # CIDs a keeper keeps records for
MAX_CACHED = 1 << 14  # lookup answers remembered


class ProviderHost(Protocol):
    """The narrow view of its node a `Providers` needs."""

    node_id: str
    now: float

    def alive_ids(self) -> Sequence[str]: ...

    def is_alive(self, node_id: str) -> bool: ...

    def emit_send(self, peer: str, message: object) -> None: ...

    def set_timer(self, key: TimerKey, at: float) -> None: ...

    def cancel_timer(self, key: TimerKey) -> None: ...


@dataclass(slots=True)
class _Lookup:
    asked: set[str]
    answered: set[str] = field(default_factory=set)
    found: set[str] = field(default_factory=set)
    waiters: list[Callable[[frozenset[str]], None]] = field(default_factory=list)


class Providers:
    def __init__(
        self,
        host: ProviderHost,
        *,
        keepers: int = KEEPERS,
        ttl: float = RECORD_TTL,
        lookup_timeout: float = LOOKUP_TIMEOUT,
        cache_ttl: float = CACHE_TTL,
    ) -> None:
        if keepers < 1 or not ttl > 0:
            raise ValueError(f"provider records need keepers >= 1 and a ttl > 0, not {keepers} and {ttl}")
        self.host = host
        self.keepers = keepers
        self.ttl = ttl
        self.lookup_timeout = lookup_timeout
        self.cache_ttl = cache_ttl
        self.provided: set[str] = set()  # CIDs this node holds and announces
        self.records: dict[str, dict[str, float]] = {}  # CID -> provider -> expiry (we keep these)
        self._known: dict[str, tuple[frozenset[str], float]] = {}  # CID -> (providers, learned at)
        self._lookups: dict[str, _Lookup] = {}
        self._reannounce_armed = False

    def timers(self) -> dict[TimerKind, Callable[[TimerKey], None]]:
        return {TimerKind.PROVIDER_LOOKUP: self._on_lookup_timeout, TimerKind.PROVIDER_REANNOUNCE: self._on_reannounce}

    @staticmethod
    def _key(kind: str, subject: str = "") -> TimerKey:
        return TimerKey(TimerKind(kind), subject)

    # ------------------------------------------------------------ what this node holds

    def keepers_of(self, cid: str) -> list[str]:
        """The CID's record keepers in our view: its top-ranked live members."""
        return election.rank(cid, self.host.alive_ids(), k=self.keepers)

    def provide(self, cids: Iterable[str]) -> None:
        """This node holds `cids` from now on: tell their keepers."""
        new = [cid for cid in dict.fromkeys(cids) if cid and cid not in self.provided]
        self.provided.update(new)
        self._announce(new, self.ttl)
        if self.provided and not self._reannounce_armed:
            self._reannounce_armed = True
            self.host.set_timer(self._key("provider-reannounce"), self.host.now + self.ttl / 3)

    def unprovide(self, cids: Iterable[str]) -> None:
        """This node no longer holds `cids`: withdraw its records."""
        gone = [cid for cid in dict.fromkeys(cids) if cid in self.provided]
        self.provided.difference_update(gone)
        self._announce(gone, 0.0)

    def _announce(self, cids: Sequence[str], ttl: float) -> None:
        by_keeper: dict[str, list[str]] = {}
        for cid in cids:
            for keeper in self.keepers_of(cid):
                by_keeper.setdefault(keeper, []).append(cid)
        for keeper, kept in by_keeper.items():
            for start in range(0, len(kept), MAX_CIDS_PER_ANNOUNCE):
                message = ProviderAnnounce(tuple(kept[start:start + MAX_CIDS_PER_ANNOUNCE]), ttl)
                if keeper == self.host.node_id:
                    self.on_announce(keeper, message)
                else:
                    self.host.emit_send(keeper, message)

    def _on_reannounce(self, key: TimerKey) -> None:
        now = self.host.now
        for cid in list(self.records):
            alive = {p: t for p, t in self.records[cid].items() if t > now}
            if alive:
                self.records[cid] = alive
            else:
                del self.records[cid]
        for cid in [c for c, (_, at) in self._known.items() if at + self.cache_ttl <= now]:
            del self._known[cid]
        self._announce(sorted(self.provided), self.ttl)
        self._reannounce_armed = bool(self.provided)
        if self._reannounce_armed:
            self.host.set_timer(self._key("provider-reannounce"), now + self.ttl / 3)

    # ------------------------------------------------------------ keeping records

    def on_announce(self, sender: str, message: ProviderAnnounce) -> None:
        expires = self.host.now + min(message.ttl, self.ttl)
        for cid in message.cids[:MAX_CIDS_PER_ANNOUNCE]:
            if not cid:
                continue
            if message.ttl <= 0:
                held = self.records.get(cid)
                if held is not None:
                    held.pop(sender, None)
                    if not held:
                        del self.records[cid]
                continue
            held = self.records.get(cid)
            if held is None:
                if len(self.records) >= MAX_KEPT:
                    continue
                held = self.records[cid] = {}
            if sender in held or len(held) < MAX_PROVIDERS:
                held[sender] = expires

    def on_query(self, sender: str, query: ProviderQuery) -> None:
        self.host.emit_send(sender, ProviderReply(query.cid, tuple(self._kept(query.cid))))

    def _kept(self, cid: str) -> list[str]:
        """The live providers of `cid` we keep records of (ourselves first, if we hold it)."""
        now = self.host.now
        held = self.records.get(cid, {})
        found = [self.host.node_id] if cid in self.provided else []
        found += sorted(p for p, t in held.items() if t > now and p != self.host.node_id and self.host.is_alive(p))
        return found[:MAX_PROVIDERS]

    # ------------------------------------------------------------ finding holders

    def holders(self, cid: str) -> frozenset[str]:
        """Who holds `cid` as far as we know without asking: ourselves, the
        records we keep, and a fresh lookup's answer."""
        known = set(self._kept(cid))
        cached = self._known.get(cid)
        if cached is not None and cached[1] + self.cache_ttl > self.host.now:
            known.update(p for p in cached[0] if self.host.is_alive(p) or p == self.host.node_id)
        return frozenset(known)

    def asked(self, sender: str, cid: str) -> bool:
        """Whether a lookup of ours asked `sender` about `cid` and awaits its answer."""
        lookup = self._lookups.get(cid)
        return lookup is not None and sender in lookup.asked and sender not in lookup.answered

    def find(self, cid: str, then: Callable[[frozenset[str]], None]) -> None:
        """Call `then` with the holders of `cid`: at once if a fresh answer is
        known, else when a lookup of its keepers ends."""
        cached = self._known.get(cid)
        if cached is not None and cached[1] + self.cache_ttl > self.host.now:
            then(self.holders(cid))
            return
        lookup = self._lookups.get(cid)
        if lookup is None:
            keepers = self.keepers_of(cid)
            asked = {k for k in keepers if k != self.host.node_id}
            lookup = self._lookups[cid] = _Lookup(asked)
            lookup.found.update(self._kept(cid))
            for keeper in sorted(asked):
                self.host.emit_send(keeper, ProviderQuery(cid))
            if asked:
                self.host.set_timer(self._key("provider-lookup", cid), self.host.now + self.lookup_timeout)
        lookup.waiters.append(then)
        if not lookup.asked:
            self._finish(cid)

    def wait_for(self, cids: Collection[str], then: Callable[[], None]) -> bool:
        """Look up each of `cids` not freshly known; True if some lookup is
        under way (`then` runs once all have ended), False if none is needed."""
        now = self.host.now
        unknown = [c for c in dict.fromkeys(cids) if not ((k := self._known.get(c)) and k[1] + self.cache_ttl > now)]
        if not unknown:
            return False
        left = set(unknown)

        def one_done(cid: str) -> Callable[[frozenset[str]], None]:
            def done(_: frozenset[str]) -> None:
                left.discard(cid)
                if not left:
                    then()
            return done

        for cid in unknown:
            self.find(cid, one_done(cid))
        return bool(left)

    def on_reply(self, sender: str, reply: ProviderReply) -> None:
        lookup = self._lookups.get(reply.cid)
        if lookup is None or sender not in lookup.asked or sender in lookup.answered:
            return
        lookup.answered.add(sender)
        lookup.found.update(p for p in reply.providers[:MAX_PROVIDERS] if p)
        if lookup.answered >= lookup.asked:
            self._finish(reply.cid)

    def on_send_failed(self, peer: str, message: object) -> None:
        """A keeper we cannot reach answers nothing: do not wait for it."""
        if isinstance(message, ProviderQuery):
            self.on_reply(peer, ProviderReply(message.cid, ()))

    def _on_lookup_timeout(self, key: TimerKey) -> None:
        if key.subject in self._lookups:
            self._finish(key.subject)

    def _finish(self, cid: str) -> None:
        lookup = self._lookups.pop(cid)
        if lookup.asked:
            self.host.cancel_timer(self._key("provider-lookup", cid))
        if len(self._known) >= MAX_CACHED:
            self._known.clear()
        found = frozenset(p for p in lookup.found if p == self.host.node_id or self.host.is_alive(p))
        self._known[cid] = (found, self.host.now)
        for waiter in lookup.waiters:
            waiter(found)
