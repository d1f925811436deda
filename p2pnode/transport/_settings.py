"""How we build the libp2p host and gossipsub: every setting chosen on purpose.

py-libp2p 0.8.1 works, but its defaults serve other goals than ours, and
several of them lose messages silently (shared/notes/libp2p.md has the
measurements). Each setting that answers one of those traps lives here, next
to the trap it answers; the traps handled by code rather than settings say
where they are handled.
"""

from __future__ import annotations

import time

from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_noise_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.pnet.psk_conn import PskConn
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux import yamux as _yamux
from Crypto.Cipher import Salsa20
from multiaddr import Multiaddr

# Handled in code, not settings:
#  2. full send queues and subscription channels drop silently
#                                   -> Transport._wait_for_send_room, Transport._read_topic
#  6. leaving host.run() leaves connections open        -> Transport._run_libp2p
#  7. pubsub must run before the host accepts streams   -> Transport.run
#  9. new peers are sent recent cached messages         -> Envelope, Transport._accept
# 10. a frozen peer keeps its connection (ping it)      -> Transport._watch_liveness
# 11. bootstrap peers are redialled only 3 times        -> Transport._keep_bootstrap_peers
# 13. Pubsub's seen-cache sweeper thread is never stopped -> Transport.aclose
# 14. SO_REUSEPORT lets two nodes share a port; failed listens are only printed
#                                                       -> _addresses.check_can_listen

# Trap 15: yamux cuts every write into 64 KiB frames, and each frame costs
# ten-odd lock and checkpoint round trips on both sides: bulk data (bitswap
# blocks, results) spent most of its CPU there. The limit is a module global
# read at each write; frames up to the peer's receive window are valid yamux
# (go-yamux checks only the window), so we send up to 1 MiB at a time.
# Measured side by side: 128 MiB over bitswap, CPU 6.0 s -> 3.8 s for both peers.
YAMUX_FRAME_BYTES = 1 << 20
_yamux.MAX_MESSAGE_SIZE = YAMUX_FRAME_BYTES

# Trap 16: on a private network every Noise message is read as a 2-byte length
# then its body, and PskConn turns each of those reads into a socket read and a
# Salsa20 call of its own: four or more of each per 64 KiB message. PskConn's
# reads here take up to PSK_READ_BYTES from the socket, decrypt them in one call
# (Salsa20 is a stream cipher: the same bytes out) and serve the small reads
# from what is left. Nothing changes on the wire.
PSK_READ_BYTES = 256 << 10


async def _buffered_psk_read(self: PskConn, n: int | None = None) -> bytes:
    """PskConn.read: up to `n` bytes, decrypted, from a buffer refilled in large reads."""
    buffered: bytes = getattr(self, "_p2pnode_buffer", b"")
    if not buffered:
        if self.read_cipher is None:
            nonce = await self._conn.read(8)
            if len(nonce) != 8:
                raise ValueError("short nonce from stream")
            self.read_cipher = Salsa20.new(key=self._psk, nonce=nonce)
        data = await self._conn.read(None if n is None else max(n, PSK_READ_BYTES))
        if not data:
            return b""
        buffered = self.read_cipher.decrypt(data)
    if n is None or n >= len(buffered):
        self._p2pnode_buffer = b""  # type: ignore[attr-defined]
        return buffered
    self._p2pnode_buffer = buffered[n:]  # type: ignore[attr-defined]
    return buffered[:n]


PskConn.read = _buffered_psk_read  # type: ignore[method-assign]

# Trap 17: a yamux stream answers every read with a WINDOW_UPDATE frame (its
# "partial slack" and "release on read" rules), so each request and each answer
# on a long-lived channel cost a second Noise-encrypted write the other way:
# about as many writes again as the messages themselves. go-yamux credits the
# sender only once half the receive window is consumed (hysteresis), which is
# the rule kept here, with py-libp2p's window growth (auto-tuning) for bulk
# transfers unchanged. It cannot stall a sender: whatever the reader has
# consumed but not yet credited is under half the window, so the sender still
# has more than half the window to send in.


async def _window_update_at_half(self: _yamux.YamuxStream, *, bytes_read: int = 0) -> None:
    """YamuxStream's credit after a read: only once half the window is free again."""
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        if self.target_recv_window - (self.recv_window + buffered) < self.target_recv_window // 2:
            return
        increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
    if increment > 0:
        await self.send_window_update(increment, skip_lock=True)


_yamux.YamuxStream._auto_tune_and_send_window_update = _window_update_at_half  # type: ignore[method-assign]


LIVENESS_INTERVAL = 2.0
"""Seconds between looks at each connection for a peer gone quiet."""

QUIET_BEFORE_PING = 2.0
"""A peer heard from on a request channel within this many seconds is alive: no ping."""

PING_TIMEOUT = 3.0
"""A quiet peer that neither answers a ping nor says anything else within this
is taken for frozen: its connection is closed (so in about 5 s in all)."""


def build_host(key_pair: KeyPair, listen: list[Multiaddr], *, mdns: bool, psk: str | None = None) -> IHost:
    """`psk`: the network key (64 hex digits); with it, only peers holding the
    same key get past the first bytes of a connection (see `p2pnode.netkey`)."""
    return new_host(
        key_pair=key_pair,
        psk=psk,
        sec_opt=_security_options(key_pair),
        connection_config=_connection_config(),
        listen_addrs=listen,
        enable_mDNS=mdns,
    )


def _security_options(key_pair: KeyPair) -> dict:
    # Trap 8: the default host also accepts plaintext and SECIO.
    return {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_noise_key_pair().private_key)}


def _connection_config() -> ConnectionConfig:
    return ConnectionConfig(
        # Trap 3: with more than one connection allowed per peer, connect()
        # waits 250 ms for a second one it will never need.
        max_connections_per_peer=1,
        # Trap 10: without pings a frozen (SIGSTOPped) peer keeps its
        # connection for 20 s or more. libp2p's own health check drops a
        # connection at its first failed ping, and on a busy 2-core machine a
        # burst's load made pings miss their 3 s while the peer was answering
        # our requests all along: connections of live peers were cut mid-burst
        # and every message on them failed. So we ping ourselves, only peers
        # we have not heard from lately (`Transport._watch_liveness`).
        enable_health_monitoring=False,
    )


def build_gossipsub() -> GossipSub:
    return GossipSub(
        # Trap 4: meshsub 1.2 sends an IDONTWANT for every message (2-3x frames).
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        # Trap 1: the default heartbeat is 120 s, so meshes form and repair
        # that slowly; adaptive gossip can stretch it again to 30-60 s.
        heartbeat_interval=1,
        adaptive_gossip_enabled=False,
        # Trap 1: spam protection drops everything over 10 msg/s per topic and
        # sender, forwarded messages included, without a word.
        spam_protection_enabled=False,
    )


def build_pubsub(host: IHost, router: GossipSub) -> Pubsub:
    # Trap 12: strict signing signs ours and verifies every message's origin.
    pubsub = Pubsub(host, router, strict_signing=True)
    # Trap 5: seqnos start at int(time.time()), so a node restarted within N
    # seconds of publishing N messages reuses seqnos its peers have seen, and
    # its new messages are dropped as duplicates. Nanoseconds keep them fresh.
    pubsub.counter = time.time_ns()
    return pubsub
