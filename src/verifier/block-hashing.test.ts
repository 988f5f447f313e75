import assert from 'node:assert/strict'
import { test } from 'node:test'
import { makeBlock, syntheticNode } from '../browser/browser-fixtures.js'
import { BytePool, readBoundedBytes } from '../client/read-bounded.js'
import { fromBase64, toHex, utf8 } from '../protocol/encoding.js'
import { encodeRawBlock } from '../protocol/leaf-page.js'
import { leafHash } from '../protocol/merkle.js'
import { hashRawBlock, openBlockHasher } from './block-hashing.js'

const node = syntheticNode()
const leaves = Array.from({ length: 37 }, (_, i) => utf8(`{"leaf":${i}}`))
const block = makeBlock(node, null, leaves)
const encoded = () => encodeRawBlock({ ...block, leaves: block.leaves.map((leaf) => fromBase64(leaf)) })

test('a block hashed on the worker thread comes back whole, with the hashes computed here', async () => {
  const hasher = openBlockHasher()
  try {
    const bytes = encoded()
    const sent = bytes.slice()
    const expected = hashRawBlock(encoded())
    assert.equal(toHex(expected.leafHashes.subarray(32, 64)), toHex(leafHash(leaves[1]!)))
    const results = await Promise.all([hasher.hash(bytes), hasher.hash(encoded())])
    // Sent without a copy: the caller's view is empty until the bytes come back.
    assert.equal(bytes.length, 0)
    for (const hashed of results) {
      assert.deepEqual(hashed.bytes, sent)
      assert.deepEqual(hashed.leafHashes, expected.leafHashes)
      assert.deepEqual(hashed.subtrees, expected.subtrees)
    }
    // Bytes that are no block come back with no hashes: decoding them says why.
    const garbage = await hasher.hash(utf8('no block'))
    assert.equal(garbage.leafHashes.length, 0)
    assert.deepEqual(garbage.subtrees, [])
  } finally {
    await hasher.close()
  }
})

test('answers of a declared length are read into buffers of the pool, used again once given back', async () => {
  const pool = new BytePool(2)
  const answer = () => new Response(encoded(), { headers: { 'content-length': String(encoded().length) } })
  const first = await readBoundedBytes(answer(), 1 << 20, pool)
  assert.deepEqual(first, encoded())
  pool.give(first.buffer as ArrayBuffer)
  const second = await readBoundedBytes(answer(), 1 << 20, pool)
  assert.equal(second.buffer, first.buffer)
  assert.deepEqual(second, encoded())
  // Past the bound, the answer is refused, pool or not.
  await assert.rejects(readBoundedBytes(answer(), 10, pool), /answered more than 10 bytes/)
})
