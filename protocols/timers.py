"""Timer keys: every timer a node sets is a `TimerKind` and the job or
execution it is about, so the node routes a fired timer by its kind. Apart
from `protocols.context` so that any part may name timers without importing
the context (no import circle)."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple


class TimerKind(StrEnum):
    """Every timer a node sets; the comment names its `TimerKey.subject`."""

    HEARTBEAT = "heartbeat"
    PING = "ping"
    MEMBERSHIP = "membership"
    FLUSH = "flush"
    ANTI_ENTROPY = "anti-entropy"
    CHECK_IN = "check-in"
    RESYNC = "resync"
    STOP_RETRY = "stop-retry"  # a job
    BID_WINDOW = "bid-window"  # a job
    QUEUE_TIMEOUT = "queue-timeout"  # a job
    RETRY_WAITING = "retry-waiting"
    RESUME = "resume"
    HAND_OVER = "hand-over"  # a job submitted here whose leader did not answer
    TAKE_OVER = "take-over"  # a job taken over, its fellow keepers asked how it stands
    BID_HOLD = "bid-hold"  # an execution
    PROBE = "probe"  # an execution
    TOTAL_TIMEOUT = "total-timeout"  # an execution
    RESEND = "resend"  # an execution
    PROVIDER_LOOKUP = "provider-lookup"  # a CID
    PROVIDER_REANNOUNCE = "provider-reannounce"

    __hash__ = str.__hash__  # (keys are hashed at every timer set: keep it cheap)


class TimerKey(NamedTuple):
    """The key of a `SetTimer`: which timer, about which job or execution."""

    kind: TimerKind
    subject: str = ""


TimerHandler = Callable[[TimerKey], None]
