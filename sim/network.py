"""How the simulated network behaves: latency, loss, stream timeouts, partitions.

Latency is lognormal around a median, and each node has a link quality of its
own (a seeded lognormal factor), so a link's latency depends on both its ends:
an edge device on a poor link is slow to everyone. Pubsub loss drops a message
per receiver; a stream `Send` that is lost (or crosses a partition, or finds its
peer down) comes back to the sender as `SendFailed` after `stream_timeout`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property


class SimConfigError(ValueError):
    """A simulation option is out of range or malformed; the message says how to fix it."""


@dataclass(frozen=True)
class NetworkConfig:
    latency_median: float = 0.02  # seconds, one way
    latency_sigma: float = 0.5  # spread of one message's latency (lognormal sigma)
    link_sigma: float = 0.3  # spread of the nodes' link quality (lognormal sigma)
    loss: float = 0.0  # probability that one delivery is lost
    stream_timeout: float = 1.0  # how long a failed Send takes to be reported
    broadcast_buckets: int = 4  # delivery times one Publish is spread over

    def __post_init__(self) -> None:
        if not self.latency_median > 0:
            raise SimConfigError(f"latency median must be > 0 seconds, not {self.latency_median}")
        if not 0 <= self.loss < 1:
            raise SimConfigError(f"loss must be a probability in [0, 1), not {self.loss}")
        if self.latency_sigma < 0 or self.link_sigma < 0:
            raise SimConfigError("latency and link sigmas must be >= 0")
        if not self.stream_timeout > 0:
            raise SimConfigError(f"stream timeout must be > 0 seconds, not {self.stream_timeout}")
        if self.broadcast_buckets < 1:
            raise SimConfigError(f"broadcast buckets must be >= 1, not {self.broadcast_buckets}")

    @cached_property
    def log_median(self) -> float:
        """log(latency_median), asked for every message sent: computed once."""
        return math.log(self.latency_median)


@dataclass(frozen=True)
class Partition:
    """Between `start` and `end`, a `fraction` of the nodes cannot reach the rest."""

    start: float
    end: float
    fraction: float

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise SimConfigError(f"a partition needs 0 <= START < END, got {self.start}:{self.end}")
        if not 0 < self.fraction < 1:
            raise SimConfigError(f"a partition's FRACTION must be between 0 and 1, not {self.fraction}")

    @classmethod
    def parse(cls, text: str) -> Partition:
        """`START:END:FRACTION`, e.g. `30:60:0.3` (seconds of simulated time)."""
        parts = text.split(":")
        try:
            start, end, fraction = (float(p) for p in parts)
        except ValueError:
            raise SimConfigError(f"partition {text!r} is not START:END:FRACTION (e.g. 30:60:0.3)") from None
        return cls(start, end, fraction)
