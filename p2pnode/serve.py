"""`p2pnode serve`: one node process, its API, and a clean exit on a signal."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket

import trio

from p2pnode.api import serve_api
from p2pnode.config import NodeSettings
from p2pnode.memory import freeze_startup_objects
from p2pnode.runtime import Runtime

log = logging.getLogger("p2pnode")

READY_FILE = "node.json"  # written once the node listens: how to reach it


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def serve_node(settings: NodeSettings) -> None:
    """Run until SIGINT or SIGTERM, then say goodbye to the network."""
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # it logs ERROR whenever a peer simply dies
    runtime = Runtime(settings)
    port = settings.api_port or free_port(settings.api_host)
    runtime.api_url = f"http://{settings.api_host}:{port}"
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_api, runtime, settings.api_host, port)
            await nursery.start(runtime.run)
            ready = {"NodeID": runtime.node_id, "Addresses": runtime.transport.listen_addrs, "API": runtime.api_url,
                     "PID": os.getpid()}
            partial = settings.data_dir / (READY_FILE + ".partial")
            partial.write_text(json.dumps(ready))
            partial.replace(settings.data_dir / READY_FILE)  # whole or absent: `devstack` reads it as it appears
            log.info("node %s listening on %s; API %s", runtime.node_id, runtime.transport.listen_addrs, runtime.api_url)
            freeze_startup_objects()
            async for _ in signals:
                log.info("stopping node %s", runtime.node_id)
                with trio.move_on_after(2):
                    await runtime.leave()
                nursery.cancel_scope.cancel()
                break
    (settings.data_dir / READY_FILE).unlink(missing_ok=True)
