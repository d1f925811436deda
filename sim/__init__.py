"""Many protocol nodes in one process, on a virtual clock and a simulated
network. `python -m sim run --help` for the command line; `simulate()` for
scripts and tests."""

from sim.invariants import InvariantViolation
from sim.network import NetworkConfig, Partition, SimConfigError
from sim.report import Report
from sim.runner import SimConfig, simulate
from sim.world import World

__all__ = ["InvariantViolation", "NetworkConfig", "Partition", "Report", "SimConfig", "SimConfigError", "World", "simulate"]
