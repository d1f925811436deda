"""A heterogeneous, seeded population of nodes: sizes, engines, labels.

Roughly what a public edge network looks like: many small devices that run
only WebAssembly, some servers with Docker, a few large machines with a GPU;
spread over regions, mostly linux on amd64 with some arm64, and a fifth of
them tagged `service=WebService` (what the ops and daemon examples target).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from protocols.messages import Capacity
from protocols.node import NodeConfig
from protocols.selection import SelectionPolicy

GB = 1 << 30
REGIONS = ("us-west-2", "us-east-1", "eu-west-1", "ap-south-1")
REGION_WEIGHTS = (0.35, 0.3, 0.2, 0.15)


@dataclass(frozen=True)
class NodeClass:
    name: str
    weight: float
    capacity: Capacity
    engines: tuple[str, ...]


NODE_CLASSES = (
    NodeClass("edge", 0.3, Capacity(cpu=1000, memory=1 * GB, disk=16 * GB), ("wasm",)),
    NodeClass("small", 0.35, Capacity(cpu=2000, memory=4 * GB, disk=64 * GB), ("docker", "wasm")),
    NodeClass("medium", 0.25, Capacity(cpu=8000, memory=16 * GB, disk=256 * GB), ("docker", "wasm")),
    NodeClass("large", 0.1, Capacity(cpu=32000, memory=64 * GB, disk=1024 * GB, gpu=1), ("docker", "wasm")),
)


def node_id(index: int) -> str:
    return f"node-{index:05d}"


def node_configs(count: int, rng: random.Random, **tuning: object) -> list[NodeConfig]:
    """`count` node configs drawn from `rng`; `tuning` sets NodeConfig's
    timing fields (heartbeat_interval, bid_window, ...) for all of them."""
    classes = list(NODE_CLASSES)
    weights = [c.weight for c in classes]
    configs = []
    for index in range(count):
        kind = rng.choices(classes, weights)[0]
        arch = "arm64" if kind.name == "edge" and rng.random() < 0.6 or rng.random() < 0.15 else "amd64"
        labels = {
            "Operating-System": "linux" if rng.random() < 0.95 else "darwin",
            "Architecture": arch,
            "region": rng.choices(REGIONS, REGION_WEIGHTS)[0],
            "class": kind.name,
        }
        if kind.name != "edge" and rng.random() < 0.25:
            labels["service"] = "WebService"
        policy = SelectionPolicy(accept_networked=rng.random() < 0.5, reject_stateless=rng.random() < 0.05)
        configs.append(
            NodeConfig(
                node_id=node_id(index),
                labels=labels,
                capacity=kind.capacity,
                engines=kind.engines,
                policy=policy,
                **tuning,  # type: ignore[arg-type]
            )
        )
    return configs
