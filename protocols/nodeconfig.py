"""A node's settings: what it offers, and the protocol's timings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocols.messages import Capacity
from protocols.selection import SelectionPolicy


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Capacity = Capacity(cpu=4000, memory=8 << 30, disk=64 << 30, gpu=0)
    engines: tuple[str, ...] = ("docker", "wasm")
    publishers: tuple[str, ...] = ("ipfs", "local")
    storages: tuple[str, ...] = ("ipfs", "url", "inline", "localDirectory")
    local_data: tuple[str, ...] = ()
    policy: SelectionPolicy = SelectionPolicy()
    addresses: tuple[str, ...] = ()
    heartbeat_interval: float = 1.0  # at least; stretched in a large network
    max_heartbeats_per_second: float = 0.5  # heartbeats a node receives from all others together, at most
    ping_interval: float = 2.0  # how often a node pings the members it watches
    watchers: int = 1  # members each node watches (so each is watched by as many)
    helpers: int = 2  # members asked to ping a watched member that did not answer (indirect probes)
    suspect_after: int = 2  # unanswered pings in a row
    dead_after: int = 3  # unanswered pings in a row
    bid_window: float = 0.5  # how long a leader waits for bids
    bid_hold: float = 5.0  # how long a node holds resources for an undecided bid
    probe_timeout: float = 10.0  # a probe that does not answer declines
    probe_wait_timeout: float = 60.0  # a "shouldWait" bid declines after this
    max_retries: int = 3  # failed executions retried per job
    decline_memory: float = 30.0  # a node that declined is not asked again for this long
    queue_retry_interval: float = 2.0  # how often queued jobs look for nodes again
    flush_interval: float = 0.25  # execution-only writes to one job within this leave as one update
    anti_entropy_interval: float = 10.0  # a backstop: undelivered writes go again, whole, after resend_interval
    recent_window: float = 30.0  # terminal jobs younger than this are repaired too
    resend_interval: float = 2.0  # an executor's undelivered report is retried this often
    check_in_interval: float = 30.0  # how often an executor may tell each leader what it still runs (see Executor.check_in)
