"""`p2pnode.libp2p_lean`: a peer imports none of libp2p's features it does not
run, and a feature it does turn on still works (`test_transport`'s mDNS test
runs one for real). Each case runs in a fresh interpreter: this one has long
imported whatever other tests needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NEVER_AT_IDLE = ("aioquic", "zeroconf", "requests", "miniupnpc", "OpenSSL", "service_identity", "rich", "pygments",
                 "libp2p.relay.circuit_v2.dcutr", "trio_websocket", "libp2p.peer.persistent.datastore", "httpx._client")


def in_fresh_interpreter(code: str) -> dict:
    """Run `code` (which prints one JSON line last) with this checkout's packages first on the path."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_peer_imports_no_feature_it_does_not_run() -> None:
    loaded = in_fresh_interpreter("""
        import json, sys
        import p2pnode.serve, p2pnode.transport  # all a peer imports before it runs
        names = %r
        print(json.dumps([name for name in names if name in sys.modules]))
    """ % (NEVER_AT_IDLE,))
    assert loaded == []


def test_a_deferred_name_loads_its_module_at_first_use() -> None:
    seen = in_fresh_interpreter("""
        import json, sys
        import p2pnode
        from libp2p.relay.circuit_v2.nat import is_private_ip
        from libp2p.discovery.upnp.upnp import UpnpManager
        before = "libp2p.relay.circuit_v2.dcutr" in sys.modules
        upnp_instance_before = isinstance(object(), UpnpManager)
        private = is_private_ip("10.1.2.3"), is_private_ip("8.8.8.8")
        nat = sys.modules["libp2p.relay.circuit_v2.nat"]
        print(json.dumps({"before": before, "upnp_instance_before": upnp_instance_before, "private": private,
                          "real": type(nat).__name__ == "module" and hasattr(nat, "__file__"),
                          "after": "libp2p.relay.circuit_v2.dcutr" in sys.modules,
                          "upnp_still_deferred": "miniupnpc" not in sys.modules}))
    """)
    assert seen == {"before": False, "upnp_instance_before": False, "private": [True, False], "real": True,
                    "after": True, "upnp_still_deferred": True}


def test_a_deferred_class_answers_isinstance_once_loaded() -> None:
    seen = in_fresh_interpreter("""
        import json
        import p2pnode
        from libp2p.discovery.upnp.upnp import UpnpManager
        manager = UpnpManager()  # the real class, loaded now
        from libp2p.discovery.upnp.upnp import UpnpManager as Real
        print(json.dumps([isinstance(manager, UpnpManager), type(manager) is Real, isinstance(object(), UpnpManager)]))
    """)
    assert seen == [True, True, False]


def test_loading_a_deferred_group_runs_no_module_waiting_for_first_use() -> None:
    seen = in_fresh_interpreter("""
        import json, sys
        import p2pnode
        from p2pnode.lazy import lazy_import
        wasmtime = lazy_import("wasmtime")  # as the wasm engine names it: loaded at the first wasm run
        from libp2p.relay.circuit_v2.nat import is_private_ip
        is_private_ip("10.1.2.3")  # loads the relay group
        print(json.dumps("wasmtime._config" in sys.modules))
    """)
    assert seen is False


def test_another_libp2p_version_imports_as_it_always_did() -> None:
    loaded = in_fresh_interpreter("""
        import json, sys
        from p2pnode import libp2p_lean
        libp2p_lean.VERIFIED = "0.0.0"  # as if the installed libp2p were not the version whose importers were read
        import libp2p.host.basic_host
        print(json.dumps(["zeroconf" in sys.modules, "aioquic" in sys.modules]))
    """)
    assert loaded == [True, True]
