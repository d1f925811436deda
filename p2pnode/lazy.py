"""Import on first use, so `p2pnode --help` and light commands start in a
blink: the CLI's modules name what they need at the top as usual, and the
heavy ones (httpx, rich, yaml: most of a second each on a small machine) load
only when a command touches them."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any


def lazy_import(name: str) -> ModuleType:
    """`name` as a module whose code runs at its first attribute access (the
    standard library's LazyLoader recipe); the real module if already loaded."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}; reinstall p2pnode with its dependencies")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


class LazyConsole:
    """A rich Console made at its first use."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    def __getattr__(self, attribute: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, attribute)


def Table(*columns: Any, **options: Any) -> Any:  # noqa: N802 - stands in for rich's class
    """A rich Table (rich loaded now)."""
    from rich.table import Table as RichTable

    return RichTable(*columns, **options)
