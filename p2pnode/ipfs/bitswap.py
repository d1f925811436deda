"""Bitswap 1.2.0 over the node's own libp2p host: trade blocks with any IPFS peer.

Why our own and not py-libp2p 0.8.1's `libp2p.bitswap`: its client is 1,200
lines with payment extensions, keeps blocks in its own store, caps blocks at
512 KiB (the spec says 2 MiB) and has no notion of a fetch that fails fast when
every peer says it lacks a block. What Kubo needs from us is small:

- Messages are uvarint-length-prefixed protobufs (`libp2p.bitswap.pb`'s
  schema). Each side sends on streams it opened and reads on streams the
  other opened: an answer never goes back on the stream the question came on.
- To fetch, we send want-have (send-dont-have set) to every connected peer,
  want-block to the first that says Have (or straight to a named provider,
  or to the peer that gave us the last block: a DAG's blocks travel together),
  and re-ask every RETRY seconds (peers that connect meanwhile too). A peer
  that said Have and sent no valid block at all in that time counts as
  lacking (a busy peer still sending others is asked again). A fetch fails as
  soon as every peer asked lacks the block, at its deadline otherwise, and
  cancels its wants when it ends.
- A block is accepted only if we want it and it hashes to the CID we want;
  nothing unsolicited is stored.
- We answer want-have with Have/DontHave and want-block with the block (or
  DontHave when asked for it), never more than MAX_MESSAGE bytes a message.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from p2pnode.ipfs.blockstore import MAX_BLOCK_BYTES, BlockMissing, BlockStore, CorruptBlock
from p2pnode.ipfs.cid import CID, CIDError, varint

if TYPE_CHECKING:
    from libp2p.bitswap.pb.bitswap_pb2 import Message

log = logging.getLogger("p2pnode.ipfs.bitswap")

PROTOCOLS = ["/ipfs/bitswap/1.2.0", "/ipfs/bitswap/1.1.0"]
MAX_MESSAGE = 4 << 20  # the spec's limit on one message
SEND_BATCH = 1 << 20  # bytes of blocks we put in one message
READ_BATCH = 4  # blocks read from the store in one go while the previous ones are sent
READ_SIZE = 4 << 20  # what we take from a stream at once: yamux hands over all it has buffered, one window update
RETRY = 3.0  # seconds before a want is asked again
WANT_BLOCK, WANT_HAVE = 0, 1
HAVE, DONT_HAVE = 0, 1


class BlockUnavailable(LookupError):
    """No connected peer gave the block in time."""


@dataclass(eq=False)
class _Want:
    cid: CID
    users: int = 0
    done: trio.Event = field(default_factory=trio.Event)
    haves: set[ID] = field(default_factory=set)
    lacks: set[ID] = field(default_factory=set)
    asked: set[ID] = field(default_factory=set)  # peers sent want-have or want-block
    blocked: set[ID] = field(default_factory=set)  # peers sent want-block
    block: bytes | None = None  # once received (verified and stored): handed to the fetch without a re-read


class _Reader:
    """Length-prefixed messages from a stream that returns what it has."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            chunk = await self._stream.read(READ_SIZE)
            if not chunk:
                return False
            self._buffer += chunk
        return True

    async def message(self) -> bytes | None:
        length = shift = at = 0
        while True:
            if not await self._fill(at + 1):
                if at:
                    raise ValueError("the stream ended inside a length")
                return None
            byte = self._buffer[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 35:
                raise ValueError("bad message length")
        if length > MAX_MESSAGE + (64 << 10):
            raise ValueError(f"a {length}-byte message is over the limit")
        if not await self._fill(at + length):
            raise ValueError("the stream ended inside a message")
        view = memoryview(self._buffer)
        try:
            data = bytes(view[at:at + length])  # one copy (a bytearray slice would make two)
        finally:
            view.release()
        del self._buffer[:at + length]
        return data


class Bitswap:
    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self._host: IHost | None = None
        self._nursery: trio.Nursery | None = None
        self._out: dict[ID, INetStream] = {}
        self._locks: dict[ID, trio.Lock] = {}
        self._wants: dict[bytes, _Want] = {}
        self._news = trio.Event()
        self._last_giver: ID | None = None
        self._last_block_from: dict[ID, float] = {}  # when each peer last gave a block we wanted
        self.blocks_sent = self.blocks_received = self.bytes_received = self.bytes_sent = 0
        self.blocks_ignored = 0

    async def run(self, host: IHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._host, self._nursery = host, nursery
            for protocol in PROTOCOLS:
                host.set_stream_handler(protocol, self._serve)  # type: ignore[arg-type]
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._host = self._nursery = None

    # ------------------------------------------------------------ fetching

    async def fetch(self, cids: Sequence[CID], *, timeout: float = 60.0, providers: Sequence[ID] = ()) -> list[bytes]:
        """The blocks for `cids`, in order, from the store or from peers (then stored)."""
        missing = list({c.digest: c for c in cids if not self.store.has(c)}.values())
        got: dict[bytes, bytes] = {}
        if missing:
            got = await self._want(missing, timeout, list(providers))
        if all(c.digest in got for c in cids):
            return [got[c.digest] for c in cids]
        # read and hashed in a worker thread: a window of 32 blocks is 8 MiB, too long for the event loop
        return await trio.to_thread.run_sync(
            lambda: [got[c.digest] if c.digest in got else self.store.get(c) for c in cids])

    async def _want(self, cids: list[CID], timeout: float, providers: list[ID]) -> dict[bytes, bytes]:
        """Until every block arrives (then: the blocks received, by digest) or the fetch fails."""
        wants = []
        for cid in cids:
            want = self._wants.setdefault(cid.digest, _Want(cid))
            want.users += 1
            wants.append(want)
        try:
            with trio.move_on_after(timeout):
                while True:
                    round_started = trio.current_time()
                    await self._ask(wants, providers)
                    with trio.move_on_after(RETRY):
                        while not all(w.done.is_set() for w in wants):
                            news = self._news  # taken first: news during the sends below is not missed
                            await self._follow_haves(wants)
                            self._check_lacking(wants)
                            if not all(w.done.is_set() for w in wants):
                                await news.wait()
                    if all(w.done.is_set() for w in wants):
                        return {w.cid.digest: w.block for w in wants if w.block is not None}
                    silent = {peer for want in wants for peer in want.blocked
                              if self._last_block_from.get(peer, -1.0) < round_started}
                    for want in wants:  # ask again; a peer that said Have but sent nothing valid lacks it
                        want.lacks |= want.blocked & silent
                        want.asked.clear()
                        want.blocked.clear()
            missing = [str(w.cid) for w in wants if not w.done.is_set()]
            peers = len(self._peers())
            hint = "" if peers else "; this node is connected to no peer: connect it to one that holds them"
            raise BlockUnavailable(f"no peer gave {len(missing)} block(s) within {timeout:g} s, e.g. {missing[0]}{hint}")
        finally:
            for want in wants:
                want.users -= 1
                if want.users == 0:
                    self._wants.pop(want.cid.digest, None)
            cancels = [w for w in wants if w.blocked]
            if cancels and self._nursery is not None:
                try:
                    self._nursery.start_soon(self._cancel, cancels)
                except RuntimeError:  # shutting down: the peers forget us anyway
                    pass

    def _check_lacking(self, wants: list[_Want]) -> None:
        for want in wants:
            if not want.done.is_set() and want.asked and want.lacks >= want.asked and not want.haves - want.lacks:
                raise BlockUnavailable(f"no connected peer has block {want.cid} ({len(want.asked)} asked)")

    def _peers(self) -> list[ID]:
        host = self._require_host()
        return [peer for peer in host.get_network().connections if peer != host.get_id()]

    async def _ask(self, wants: list[_Want], providers: list[ID]) -> None:
        connected = self._peers()
        if not providers and self._last_giver in connected:  # whoever gave the last block likely has the next
            providers = [self._last_giver]
        peers = providers + [p for p in connected if p not in providers]
        for index, peer in enumerate(peers):
            entries = []
            for want in wants:
                if want.done.is_set() or peer in want.asked:
                    continue
                direct = index == 0 and bool(providers)
                entries.append((want.cid, WANT_BLOCK if direct else WANT_HAVE))
                want.asked.add(peer)
                if direct:
                    want.blocked.add(peer)
            if entries:
                await self._send_wants(peer, entries, wants)

    async def _follow_haves(self, wants: list[_Want]) -> None:
        """Ask for the block from the first peer that has it."""
        by_peer: dict[ID, list[tuple[CID, int]]] = {}
        for want in wants:
            if want.done.is_set() or want.blocked - want.lacks:
                continue
            holders = sorted(want.haves - want.lacks - want.blocked, key=str)
            if holders:
                want.blocked.add(holders[0])
                by_peer.setdefault(holders[0], []).append((want.cid, WANT_BLOCK))
        for peer, entries in by_peer.items():
            await self._send_wants(peer, entries, wants)

    async def _send_wants(self, peer: ID, entries: list[tuple[CID, int]], wants: list[_Want]) -> None:
        message = _message()
        for cid, kind in entries:
            entry = message.wantlist.entries.add()
            entry.block, entry.priority, entry.wantType, entry.sendDontHave = cid.to_bytes(), 1, kind, True
        if not await self._send(peer, message):
            for want in wants:  # a peer we cannot reach lacks everything
                if any(want.cid == cid for cid, _ in entries):
                    want.lacks.add(peer)
            self._notify()

    async def _cancel(self, wants: list[_Want]) -> None:
        by_peer: dict[ID, list[CID]] = {}
        for want in wants:
            for peer in want.blocked:
                by_peer.setdefault(peer, []).append(want.cid)
        for peer, cids in by_peer.items():
            message = _message()
            for cid in cids:
                entry = message.wantlist.entries.add()
                entry.block, entry.cancel = cid.to_bytes(), True
            await self._send(peer, message)

    def _notify(self) -> None:
        self._news.set()
        self._news = trio.Event()

    # ------------------------------------------------------------ the wire

    async def _send(self, peer: ID, message: Message) -> bool:
        data = message.SerializeToString()
        return await self._send_frame(peer, varint(len(data)) + data)

    async def _send_parts(self, peer: ID, parts: list[bytes]) -> bool:
        """One message made of serialized pieces (protobuf merges concatenated
        fields), joined once with its length in front: a block is copied once."""
        return await self._send_frame(peer, b"".join([varint(sum(map(len, parts)))] + parts))

    async def _send_frame(self, peer: ID, frame: bytes) -> bool:
        lock = self._locks.setdefault(peer, trio.Lock())
        async with lock:
            for attempt in range(2):
                stream = self._out.get(peer)
                try:
                    if stream is None:
                        with trio.fail_after(10):
                            stream = await self._require_host().new_stream(peer, PROTOCOLS)  # type: ignore[arg-type]
                        self._out[peer] = stream
                    await stream.write(memoryview(frame))  # yamux slices it into frames without copying
                    return True
                except Exception as error:  # noqa: BLE001 - a dead peer is a lacking peer
                    self._out.pop(peer, None)
                    if stream is not None:
                        try:
                            await stream.reset()
                        except Exception:  # noqa: BLE001
                            pass
                    if attempt == 1:
                        log.info("could not send bitswap to %s: %s", peer, error)
        return False

    async def _serve(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        reader = _Reader(stream)
        try:
            while (data := await reader.message()) is not None:
                message = _message()
                message.ParseFromString(data)
                await self._handle(peer, message)
        except Exception as error:  # noqa: BLE001 - a peer's bad stream never reaches the host
            log.info("dropped a bitswap stream from %s: %s", peer, error)
            try:
                await stream.reset()
            except Exception:  # noqa: BLE001
                pass

    async def _handle(self, peer: ID, message: Message) -> None:
        blocks = list(message.blocks) + [payload.data for payload in message.payload]  # 1.0.0's blocks: the bytes alone
        if blocks:
            await self._received(peer, blocks)
        for presence in message.blockPresences:
            try:
                want = self._wants.get(CID.from_bytes(presence.cid).digest)
            except CIDError:
                continue
            if want is not None:
                (want.lacks if presence.type == DONT_HAVE else want.haves).add(peer)
        if message.blockPresences:
            self._notify()
        if message.HasField("wantlist") and message.wantlist.entries:
            await self._answer(peer, message.wantlist.entries)

    async def _received(self, peer: ID, blocks: list[bytes]) -> None:
        """Keep the blocks we want whose bytes hash to them. Hashing and writing
        run in one worker-thread call a message (both release the GIL), so the
        event loop goes on reading the connection meanwhile."""
        kept = await trio.to_thread.run_sync(self._keep, blocks)
        wanted: list[tuple[_Want, bytes]] = []
        for digest, data in kept:
            want = self._wants.get(digest)
            if want is not None and not want.done.is_set():
                wanted.append((want, data))
        ignored = len(blocks) - len(kept)
        self.blocks_ignored += ignored
        if ignored and any(len(data) > MAX_BLOCK_BYTES for data in blocks):
            log.warning("refused a block over %d bytes from %s", MAX_BLOCK_BYTES, peer)
        if not wanted:
            return
        self._last_giver = peer
        self._last_block_from[peer] = trio.current_time()
        for want, data in wanted:
            want.block = data
            self.blocks_received += 1
            self.bytes_received += len(data)
            want.done.set()
        self._notify()

    def _keep(self, blocks: list[bytes]) -> list[tuple[bytes, bytes]]:
        """In a worker thread: (digest, block) for each block a fetch wants,
        stored; the digest is the block's own, so each is verified by the
        lookup. Unsolicited, forged or oversized blocks are never stored."""
        kept, stored = [], []
        for data in blocks:
            if len(data) > MAX_BLOCK_BYTES:
                continue
            digest = hashlib.sha256(data).digest()
            want = self._wants.get(digest)  # a dict read: safe beside the event loop
            if want is not None and not want.done.is_set():
                stored.append((want.cid, data))
                kept.append((digest, data))
        self.store.put_many(stored)  # one commit for the message's blocks
        return kept

    async def _answer(self, peer: ID, entries: Iterable) -> None:
        presences, blocks = _message(), []
        for entry in entries:
            if entry.cancel:
                continue
            try:
                cid = CID.from_bytes(entry.block)
            except CIDError:
                continue
            if entry.wantType == WANT_BLOCK:
                blocks.append((cid, entry.sendDontHave))
            else:
                held = self.store.has(cid)
                if held or entry.sendDontHave:
                    presence = presences.blockPresences.add()
                    presence.cid, presence.type = cid.to_bytes(), HAVE if held else DONT_HAVE
        if not blocks:
            if presences.blockPresences:
                await self._send(peer, presences)
            return
        # Blocks are read (and checked) in a worker thread a batch ahead of the
        # batch being sent, so disk and hashing overlap with the connection.
        send, receive = trio.open_memory_channel[list[tuple[CID, bool, bytes | None]]](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_ahead, blocks, send)
            parts, size = [presences.SerializeToString()], 0
            async with receive:
                async for batch in receive:
                    for cid, send_dont_have, block in batch:
                        if block is None:
                            if send_dont_have:
                                presence = _message()
                                entry = presence.blockPresences.add()
                                entry.cid, entry.type = cid.to_bytes(), DONT_HAVE
                                parts.append(presence.SerializeToString())
                            continue
                        if size + len(block) > SEND_BATCH and size:
                            await self._send_parts(peer, parts)
                            parts, size = [], 0
                        parts += _payload(cid.prefix(), block)
                        size += len(block)
                        self.blocks_sent += 1
                        self.bytes_sent += len(block)
            if any(parts):
                await self._send_parts(peer, parts)

    async def _read_ahead(self, wanted: list[tuple[CID, bool]],
                          send: trio.MemorySendChannel[list[tuple[CID, bool, bytes | None]]]) -> None:
        async with send:
            for start in range(0, len(wanted), READ_BATCH):
                batch = wanted[start:start + READ_BATCH]
                blocks = await trio.to_thread.run_sync(self._read_blocks, [cid for cid, _ in batch])
                await send.send([(cid, dont, block) for (cid, dont), block in zip(batch, blocks)])

    def _read_blocks(self, cids: list[CID]) -> list[bytes | None]:
        """In a worker thread: each block, checked against its CID, or None."""
        blocks: list[bytes | None] = []
        for cid in cids:
            try:
                blocks.append(self.store.get(cid))
            except (BlockMissing, CorruptBlock):
                blocks.append(None)
        return blocks

    def _require_host(self) -> IHost:
        if self._host is None:
            raise BlockUnavailable("bitswap is not running on this node")
        return self._host


def _message() -> Message:
    """An empty bitswap protobuf message. Its module loads at the first
    message: importing it runs the `libp2p.bitswap` package, py-libp2p's own
    bitswap client and its `cid` library (≈40 modules, ≈0.6 MiB), which a
    peer that trades no block never needs."""
    from libp2p.bitswap.pb.bitswap_pb2 import Message

    return Message()


def _payload(prefix: bytes, data: bytes) -> list[bytes]:
    """Message.payload (field 3) holding Block{prefix (1), data (2)}, in protobuf's wire format."""
    inner = [b"\x0a", varint(len(prefix)), prefix, b"\x12", varint(len(data)), data]
    return [b"\x1a", varint(sum(map(len, inner)))] + inner


assert MAX_BLOCK_BYTES <= MAX_MESSAGE
