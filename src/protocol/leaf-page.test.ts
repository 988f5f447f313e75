import assert from 'node:assert/strict'
import { test } from 'node:test'
import { makeChain, syntheticNode } from '../browser/browser-fixtures.js'
import { blockFromRaw, checkRawBlock, type RawBlock } from './block.js'
import { fromBase64, utf8 } from './encoding.js'
import { VmError } from './errors.js'
import { decodeLeafPage, decodeRawBlock, encodeLeafPage, encodeRawBlock } from './leaf-page.js'

const refused = (code: string) => (error: unknown) => error instanceof VmError && error.code === code

test('a page of leaves decodes to the same bytes, empty leaves and empty pages included', () => {
  const leaves = [utf8('{"a":1}'), new Uint8Array(0), new Uint8Array(70_000).fill(7)]
  assert.deepEqual(decodeLeafPage(encodeLeafPage(leaves), 3), leaves)
  assert.deepEqual(decodeLeafPage(encodeLeafPage([]), 0), [])
})

test('a page that is cut, or longer than asked, is refused with binary_malformed', () => {
  const page = encodeLeafPage([utf8('one'), utf8('two')])
  for (const cut of [1, 3, 5, page.length - 1])
    assert.throws(
      () => decodeLeafPage(page.subarray(0, cut), 2),
      refused('binary_malformed'),
      `cut at ${cut}`,
    )
  assert.throws(() => decodeLeafPage(page, 1), refused('binary_malformed'))
})

test('a block in the binary form is the same block, and still checks', () => {
  const node = syntheticNode()
  const [genesis, next] = makeChain(node, [3, 2]).blocks
  const raw = (block: typeof genesis): RawBlock => ({ ...block!, leaves: block!.leaves.map(fromBase64) })
  const decoded = decodeRawBlock(encodeRawBlock(raw(genesis)))
  assert.deepEqual(blockFromRaw(decoded), genesis)
  const frontier = checkRawBlock(decoded, null, node.key.publicKey)
  checkRawBlock(
    decodeRawBlock(encodeRawBlock(raw(next))),
    { header: genesis!.header, frontier },
    node.key.publicKey,
  )
})

test('a binary block with a bad length, a signed header that is not JSON or not a block is refused', () => {
  const node = syntheticNode()
  const [genesis] = makeChain(node, [2]).blocks
  const bytes = encodeRawBlock({ ...genesis!, leaves: genesis!.leaves.map(fromBase64) })
  assert.throws(() => decodeRawBlock(bytes.subarray(0, 3)), refused('binary_malformed'))
  const tooLong = bytes.slice()
  new DataView(tooLong.buffer).setUint32(0, bytes.length)
  assert.throws(() => decodeRawBlock(tooLong), refused('binary_malformed'))
  const notJson = bytes.slice()
  notJson[4] = 0x7b + 1
  assert.throws(() => decodeRawBlock(notJson), refused('binary_malformed'))
  const header = utf8(
    JSON.stringify({ header: genesis!.header, signature: 'x', checkpoint: genesis!.checkpoint }),
  )
  const forged = new Uint8Array(4 + header.length)
  new DataView(forged.buffer).setUint32(0, header.length)
  forged.set(header, 4)
  assert.throws(() => decodeRawBlock(forged), refused('block_malformed'))
})
