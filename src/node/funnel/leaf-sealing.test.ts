import assert from 'node:assert/strict'
import { test } from 'node:test'
import { concatBytes, fromUtf8, toBase64Url, utf8 } from '../../protocol/encoding.js'
import { encryptionRecipient, Opener, openWithContentKey } from '../../protocol/envelope.js'
import { VmError } from '../../protocol/errors.js'
import { generateEncryptionKey, generateSigningKey, publicJwk } from '../../protocol/keys.js'
import { decodeLeaf } from '../../protocol/leaf.js'
import { leafHash } from '../../protocol/merkle.js'
import { nodePrimitives } from '../crypto/node-primitives.js'
import type { NodeIdentity } from '../identity.js'
import { type BlockSeal, LeafSealing, type SealOutcome, sealChunkLeaves } from './leaf-sealing.js'

function identity(): NodeIdentity {
  const signing = generateSigningKey()
  const encryption = generateEncryptionKey()
  return {
    nodeId: 'node-1',
    origin: 'vmoney.test/node-1',
    signing,
    signingJwk: publicJwk('Ed25519', signing.publicKey),
    encryption,
    encryptionJwk: publicJwk('X25519', encryption.publicKey),
  }
}

const time = '2026-11-23T10:00:00.000Z'

/** A block's chunks joined, in order. */
async function sealedAll(block: BlockSeal): Promise<SealOutcome> {
  const outcomes = await Promise.all(block.chunks())
  return {
    texts: outcomes.flatMap((outcome) => outcome.texts),
    hashes: concatBytes(...outcomes.map((outcome) => outcome.hashes)),
  }
}

/** A block of `count` leaves for the archive and some of three readers, and a check of what it sealed. */
function sealedBlock(sealing: LeafSealing, node: NodeIdentity, count: number) {
  const archive = encryptionRecipient(node.encryption.publicKey)
  const readers = [generateEncryptionKey(), generateEncryptionKey(), generateEncryptionKey()]
  const readerRecipients = readers.map((reader) => encryptionRecipient(reader.publicKey))
  const block = sealing.sealBlock(time)
  const items = Array.from({ length: count }, (_, i) => {
    // Leaf i is for the archive and reader i mod 3; every fifth leaf also for the next reader.
    const readerIndexes = i % 5 === 0 ? [i % 3, (i + 1) % 3] : [i % 3]
    const item = {
      id: `${i}`.padStart(32, '0'),
      type: 'transfer' as const,
      signedText: JSON.stringify({ leaf: i }),
      recipients: [archive, ...readerIndexes.map((r) => readerRecipients[r]!)],
    }
    return { ...item, readerIndexes, cek: block.add(item).slice() }
  })
  block.end()
  const check = ({ texts, hashes }: SealOutcome) => {
    assert.equal(texts.length, count)
    assert.equal(hashes.length, 32 * count)
    const openers = readers.map((reader) => new Opener(reader.secretKey, { primitives: nodePrimitives }))
    const ceks = new Set<string>()
    texts.forEach((text, i) => {
      const item = items[i]!
      const leaf = decodeLeaf(utf8(text))
      assert.ok(leaf.v === 2 && leaf.type === 'transfer')
      assert.equal(leaf.id, item.id)
      assert.equal(leaf.time, time)
      assert.deepEqual(hashes.subarray(32 * i, 32 * (i + 1)), leafHash(utf8(text)))
      openers.forEach((opener, r) => {
        const opened = opener.open(leaf.jwe)
        if (item.readerIndexes.includes(r)) assert.equal(fromUtf8(opened!), item.signedText)
        else assert.equal(opened, null, `leaf ${i} is not for reader ${r}`)
      })
      assert.equal(fromUtf8(sealing.archive.open(leaf.jwe)!), item.signedText)
      // The funnel discloses this key to views: it must be the one the leaf was sealed with.
      assert.equal(fromUtf8(openWithContentKey(leaf.jwe, item.cek, nodePrimitives)), item.signedText)
      ceks.add(toBase64Url(item.cek))
    })
    assert.equal(ceks.size, count, 'every leaf has its own content key')
  }
  return { block, check }
}

test('the sealing thread seals each leaf with the content key the funnel drew, for every reader', async () => {
  const node = identity()
  const sealing = new LeafSealing(node, [], nodePrimitives)
  try {
    // More leaves than a chunk, so that the block goes to the thread in several jobs.
    const { block, check } = sealedBlock(sealing, node, 2 * sealChunkLeaves + 3)
    // Two full chunks and the rest: the funnel writes each as soon as it is sealed.
    assert.deepEqual(
      (await Promise.all(block.chunks())).map((chunk) => chunk.texts.length),
      [sealChunkLeaves, sealChunkLeaves, 3],
    )
    check(await sealedAll(block))
  } finally {
    await sealing.close()
  }
})

test('a block the sealing thread cannot seal fails with a clear error, and the next one is sealed', async () => {
  const node = identity()
  const sealing = new LeafSealing(node, [], nodePrimitives)
  try {
    const item = {
      id: '0'.repeat(32),
      type: 'transfer' as const,
      signedText: '{}',
      recipients: [encryptionRecipient(node.encryption.publicKey)],
    }
    // An all-zero X25519 key is a low-order point: no key can be agreed with it.
    const broken = sealing.sealBlock(time)
    broken.add({ ...item, recipients: [...item.recipients, encryptionRecipient(new Uint8Array(32))] })
    broken.end()
    await assert.rejects(
      sealedAll(broken),
      (error) =>
        error instanceof VmError &&
        error.code === 'internal' &&
        /sealing failed: .*X25519/.test(error.message),
    )
    const block = sealing.sealBlock(time)
    block.add(item)
    block.end()
    const { texts } = await sealedAll(block)
    const leaf = decodeLeaf(utf8(texts[0]!))
    assert.ok(leaf.v === 2 && leaf.type !== 'disclosure')
    assert.equal(fromUtf8(sealing.archive.open(leaf.jwe)!), '{}')
  } finally {
    await sealing.close()
  }
})
