"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from protocols import lifecycle
from tests.docker_daemon import DaemonUnavailable, PrivateDockerd, start_dockerd

lifecycle.set_strict(True)  # an illegal move of a job or an execution raises in tests (production drops it)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[PrivateDockerd]:
    """One private Docker daemon for the whole session, stopped at its end.
    Tests that use it skip, saying why, only when none can start here."""
    try:
        daemon = start_dockerd()
    except DaemonUnavailable as error:
        pytest.skip(f"no Docker daemon can start here: {error}")
    try:
        yield daemon
    finally:
        daemon.stop()
