"""The network key: who may join a private network.

A network's peers share a 32-byte key. Every connection is wrapped in a
stream cipher keyed by it (libp2p's private-network "pnet" protector, which
py-libp2p ships) *before* the Noise handshake, so a peer without the key
cannot even finish the handshake: it sees no member, job or record, and can
send nothing the node would read. We chose the pre-shared key over a handshake
of our own because it guards every protocol on the host at once (gossipsub,
requests and whatever comes next), with no window in which an unproven peer
is connected.

The file is the one libp2p and IPFS use for a swarm key:

    /key/swarm/psk/1.0.0/
    /base16/
    <64 hex digits>

(py-libp2p's cipher is Salsa20 with an 8-byte nonce, not go-libp2p's
XSalsa20, so a private p2pnode network does not join a private Kubo swarm.)
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

_HEADER = ("/key/swarm/psk/1.0.0/", "/base16/")
_HEX = re.compile(r"[0-9a-fA-F]{64}")


class NetworkKeyError(ValueError):
    """The key file is missing, unreadable or malformed; the message says what to do."""


def new_key(path: Path) -> None:
    """Write a new random key to `path` (readable by its owner only); never overwrite one."""
    text = "\n".join((*_HEADER, secrets.token_hex(32))) + "\n"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise NetworkKeyError(f"{path} exists; remove it first or write the new key elsewhere") from None
    except OSError as error:
        raise NetworkKeyError(f"cannot write {path}: {error.strerror or error}") from None
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def load_key(path: Path) -> str:
    """The key in `path` as 64 hex digits, as py-libp2p takes it."""
    try:
        lines = path.read_text(encoding="ascii").split()
    except FileNotFoundError:
        raise NetworkKeyError(f"no network key at {path}; make one with `p2pnode network new-key {path}`") from None
    except (OSError, UnicodeDecodeError) as error:
        raise NetworkKeyError(f"cannot read the network key {path}: {error}") from None
    if len(lines) != 3 or tuple(lines[:2]) != _HEADER or not _HEX.fullmatch(lines[2]):
        raise NetworkKeyError(
            f"{path} is not a network key (expected {_HEADER[0]}, {_HEADER[1]} and 64 hex digits on three lines); "
            "make one with `p2pnode network new-key FILE`"
        )
    return lines[2].lower()
