"""The runtime's side of provider records: hold a node's provided CIDs and
answer "who holds this CID?" by asking the protocol (`FindProviders`) and
waiting for its `ProvidersFound`, then dialing the holders for bitswap."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio
from libp2p.peer.id import ID

from protocols.events import DataHeld, FindProviders, Input

LOOKUP_WAIT = 5.0  # seconds a lookup may take (the protocol's own timeout is shorter)


class ProviderLookups:
    def __init__(self, node_id: str, send: Callable[[Input], None], dial: Callable[[str], Awaitable[None]],
                 connected: Callable[[], Sequence[str]]) -> None:
        self._node_id = node_id
        self._send = send
        self._dial = dial
        self._connected = connected
        self._waiting: dict[str, list[tuple[trio.Event, list[str]]]] = {}

    def announce(self, cids: Sequence[str], held: bool) -> None:
        if cids:
            self._send(DataHeld(tuple(cids), held))

    def found(self, cid: str, providers: Sequence[str]) -> None:
        for event, answer in self._waiting.pop(cid, ()):
            answer.extend(providers)
            event.set()

    async def locate(self, cid: str) -> list[ID]:
        """The other nodes known to hold `cid`, dialled (the unreachable left out)."""
        event, answer = trio.Event(), []
        self._waiting.setdefault(cid, []).append((event, answer))
        self._send(FindProviders(cid))
        with trio.move_on_after(LOOKUP_WAIT):
            await event.wait()
        holders = []
        for peer in answer:
            if peer == self._node_id:
                continue
            if peer not in self._connected():
                await self._dial(peer)
            if peer in self._connected():
                try:
                    holders.append(ID.from_base58(peer))
                except Exception:  # noqa: BLE001 - not a libp2p peer id (never in a real network)
                    continue
        return holders
