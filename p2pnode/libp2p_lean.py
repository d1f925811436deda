"""Keep py-libp2p's features that a peer never runs out of its memory.

A peer runs TCP, Noise, yamux and gossipsub. Importing py-libp2p 0.8.1 for
them imports every feature the library has, at module level, whatever a host
turns on: the package's `__init__` and `custom_types` import the QUIC
transport (aioquic, pyOpenSSL, service_identity) and `__init__` the peer
stores on disk (SQLite, LevelDB, RocksDB); `transport` imports the WebSocket
transport; `host.basic_host` imports mDNS (zeroconf), UPnP, AutoTLS (requests,
httpx and, through httpx's command line, rich and pygments) and the circuit
relay. dnspython, which multiaddr uses to resolve `/dns` addresses, imports
aioquic too, for DNS over QUIC. With httpx, which our own modules now load at
first use, that was ≈20 MiB of an idle peer's 111 MiB and ≈0.8 s of its start
(README, "Where an idle peer's memory goes").

`install()` adds an import hook, a `sys.meta_path` finder (the import
system's own way to take part in imports; nothing in libp2p is patched). When
libp2p imports one of the modules in `DEFERRED`, the hook gives it a
stand-in: every name taken from a stand-in is a placeholder class, and its
first real use (a call, an attribute, `isinstance` once the real module has
made something) imports the real module group and hands over to the real
object. So a feature a node does turn on (`--mdns`) still works, at the
memory it always cost; an idle peer without it never loads it. The hook also
turns off dnspython's DNS-over-QUIC, which neither multiaddr nor we use
(`dns._features.force`, dnspython's documented switch for optional features).

A placeholder cannot be an exception class in an `except` clause, a base
class or a constant. Every importer of these modules in py-libp2p 0.8.1 was
read (`__init__`, `custom_types`, `host.basic_host`, `transport` and its
`manager`): they only call these names, name them in annotations or re-export
them (so the secio transport is not deferred: `__init__` reads a constant of
it). Another version may use them otherwise, so the hook stands aside for any
version but `VERIFIED`, and libp2p imports as it always did.
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

VERIFIED = "0.8.1"
"""The py-libp2p version whose importers of `DEFERRED` were read."""

DEFERRED: dict[str, tuple[str, ...]] = {
    "QUIC transport": ("libp2p.transport.quic.utils", "libp2p.transport.quic.transport",
                       "libp2p.transport.quic.stream"),
    "mDNS discovery": ("libp2p.discovery.mdns",),
    "UPnP": ("libp2p.discovery.upnp",),
    "AutoTLS": ("libp2p.security.tls.autotls",),
    "circuit relay": ("libp2p.relay",),
    "WebSocket transport": ("libp2p.transport.websocket",),
    "peer stores on disk": ("libp2p.peer.persistent",),
}
"""Groups of modules (each with its submodules) loaded together at first use."""


class _StandIn(ModuleType):
    """Stands in a `sys.modules` entry for a deferred module: any name read
    from it is a placeholder for that name of the real module."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        placeholder = _Placeholder(name, (), {"_module": self.__name__, "_name": name, "__module__": self.__name__})
        setattr(self, name, placeholder)
        return placeholder


class _Placeholder(type):
    """The class of placeholders: each use of one forwards to the real object,
    importing its module first if no one has yet."""

    _module: str
    _name: str

    def _real(cls) -> Any:
        return getattr(_load(cls._module), cls._name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, attribute: str) -> Any:
        if attribute.startswith("__"):  # typing and the like probe these; they must not load anything
            raise AttributeError(attribute)
        return getattr(cls._real(), attribute)

    def __instancecheck__(cls, instance: Any) -> bool:
        real = _loaded(cls)
        return isinstance(real, type) and isinstance(instance, real)  # nothing can be one before its module runs

    def __subclasscheck__(cls, subclass: type) -> bool:
        real = _loaded(cls)
        return isinstance(real, type) and issubclass(subclass, real)


def _group_of(name: str) -> str | None:
    for group, roots in DEFERRED.items():
        if any(name == root or name.startswith(root + ".") for root in roots):
            return group
    return None


def _loaded(placeholder: _Placeholder) -> Any:
    """The real object if its module has been loaded since, else None."""
    module = sys.modules.get(placeholder._module)
    return None if module is None or isinstance(module, _StandIn) else getattr(module, placeholder._name, None)


def _load(name: str) -> ModuleType:
    """The real module `name`: its group's stand-ins leave `sys.modules`, the
    hook lets the group import normally from now on, and `name` is imported.
    No lock of our own: two threads at once both import, and the import
    system's locks make that one import."""
    group = _group_of(name)
    if group is not None and group not in _HOOK.loaded:
        _HOOK.loaded.add(group)
        # `type`, not `isinstance`: asking a module `p2pnode.lazy` made for its
        # class runs its code (wasmtime, httpx and rich would all load here)
        for key in [key for key, module in list(sys.modules.items()) if type(module) is _StandIn]:
            if _group_of(key) == group:
                sys.modules.pop(key, None)
    return importlib.import_module(name)


class _Hook:
    """The `sys.meta_path` finder and loader of stand-ins."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self._active: bool | None = None  # decided at the first deferred import: libp2p's version is known then

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if not name.startswith(("libp2p.", "dns.")):  # every import in the process asks: answer fast
            return None
        if name == "dns.quic":
            _no_dns_over_quic()
            return None
        group = _group_of(name)
        if group is None or group in self.loaded or not self._libp2p_verified():
            return None
        return ModuleSpec(name, self, is_package=True)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return _StandIn(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        """A stand-in has no code to run."""

    def _libp2p_verified(self) -> bool:
        if self._active is None:
            try:
                from importlib.metadata import version

                self._active = version("libp2p") == VERIFIED
            except Exception:  # no metadata: not the version we read
                self._active = False
        return self._active


def _no_dns_over_quic() -> None:
    """Before `dns.quic` runs: without DoQ it imports no aioquic (we resolve
    `/dns` addresses over plain DNS only)."""
    try:
        import dns._features

        dns._features.force("doq", False)
    except Exception:  # another dnspython: it imports what it imports
        pass


_HOOK = _Hook()


def install() -> None:
    """Put the hook first on `sys.meta_path` (once). It costs nothing until
    libp2p or dnspython is imported."""
    if not any(finder is _HOOK for finder in sys.meta_path):
        sys.meta_path.insert(0, _HOOK)
