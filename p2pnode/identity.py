"""The node's persistent libp2p identity.

The peer ID is derived from the key, so keeping the key in the data directory
is what lets a restarted node come back as the same peer (and keep the jobs
it leads or runs). The key file is the libp2p protobuf encoding of an Ed25519
private key, readable by its owner only.
"""

from __future__ import annotations

import os
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_private_key

KEY_FILE = "identity.key"


class IdentityError(Exception):
    """The identity key in the data directory cannot be used."""


def load_or_create_identity(data_dir: Path) -> KeyPair:
    """Load the node's key from `data_dir`, creating one on first start."""
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        return _load(path)
    key_pair = create_new_key_pair()
    _write_private(path, key_pair.private_key.serialize())
    return key_pair


def _load(path: Path) -> KeyPair:
    try:
        private_key = deserialize_private_key(path.read_bytes())
        return KeyPair(private_key, private_key.get_public_key())
    except OSError as error:
        raise IdentityError(f"cannot read the identity key {path}: {error}") from error
    except Exception as error:  # the library raises assorted types for bad bytes
        raise IdentityError(
            f"the identity key {path} is corrupt ({error}); restore it from a backup, "
            "or delete it to start as a new peer"
        ) from error


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600, so a crash never leaves half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when a stale partial file had other bits
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
