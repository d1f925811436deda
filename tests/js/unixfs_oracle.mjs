// The CIDs that js-ipfs/Helia's importer gives, as `ipfs add --cid-version 1`
// (raw leaves, 256 KiB chunks, balanced 174 links). Prints {path: CID} as JSON.
// Files are streamed; a directory is imported from its entries (hidden ones too).
import { importer } from 'ipfs-unixfs-importer'
import fs from 'node:fs'
import path from 'node:path'

const blockstore = { put: async (cid) => cid, get: async () => { throw new Error('no reads') } }
const options = { cidVersion: 1, rawLeaves: true, reduceSingleLeafToSelf: true }

function * entries (root, base) {
  const stat = fs.statSync(root)
  if (stat.isDirectory()) {
    yield { path: base }
    for (const name of fs.readdirSync(root).sort()) yield * entries(path.join(root, name), base + '/' + name)
  } else {
    yield { path: base, content: fs.createReadStream(root) }
  }
}

const out = {}
for (const target of process.argv.slice(2)) {
  let last
  for await (const entry of importer(entries(target, path.basename(target)), blockstore, options)) last = entry
  out[target] = last.cid.toString()
}
console.log('JSON ' + JSON.stringify(out))
