#!/usr/bin/env bash
# Installs npm's js-ipfs 0.66.1 (an IPFS daemon with the HTTP RPC API) into
# .cache/js-ipfs, for the tests of --ipfs-connect. Its drifted dependencies are
# pinned with npm overrides (scripts/js-ipfs/package.json; the notes in
# shared/notes/engines-and-data.md say why). Idempotent; needs Node.js and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.cache/js-ipfs
[ -x "$DIR/node_modules/.bin/jsipfs" ] && exit 0
if ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
mkdir -p "$DIR"
cp -r scripts/js-ipfs/. "$DIR/"
cd "$DIR"
npm install --omit=optional --no-audit --no-fund --silent >/dev/null 2>&1
