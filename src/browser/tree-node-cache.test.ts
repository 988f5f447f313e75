import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { NodeId } from '../protocol/merkle.js'
import { cachedTreeNodeReader } from './storage.js'

/** A reader whose hash names the node it was asked for, counting what it is asked. */
function countingReader() {
  const asked: string[] = []
  const read = async (node: string, ids: readonly NodeId[]) =>
    ids.map((id) => {
      asked.push(`${node}/${id.level}/${id.index}`)
      return new TextEncoder().encode(`${node}/${id.level}/${id.index}`)
    })
  return { asked, read }
}

const decode = (hashes: Uint8Array[]) => hashes.map((hash) => new TextDecoder().decode(hash))

test('the tree-node cache answers repeated reads from memory, per followed node, and stays bounded', async () => {
  const { asked, read } = countingReader()
  const cached = cachedTreeNodeReader(read, 4)
  const ids = [
    { level: 0, index: 5 },
    { level: 3, index: 5 },
    { level: 3, index: 2 ** 39 },
  ]
  assert.deepEqual(decode(await cached('a', ids)), ['a/0/5', 'a/3/5', `a/3/${2 ** 39}`])
  assert.equal(asked.length, 3)
  // The same places of another node are other nodes of another tree.
  assert.deepEqual(decode(await cached('b', ids.slice(0, 1))), ['b/0/5'])
  assert.equal(asked.length, 4)
  // All cached: nothing read, answers in the order asked.
  assert.deepEqual(decode(await cached('a', [ids[2]!, ids[0]!])), [`a/3/${2 ** 39}`, 'a/0/5'])
  assert.equal(asked.length, 4)
  // Past its bound the cache starts over, and still answers right.
  assert.deepEqual(decode(await cached('a', [{ level: 1, index: 1 }, ids[1]!])), ['a/1/1', 'a/3/5'])
  assert.equal(asked.length, 5)
  assert.deepEqual(decode(await cached('b', ids.slice(0, 1))), ['b/0/5'])
  assert.equal(asked.length, 6, 'the other node was dropped when the cache started over')
})
