import assert from 'node:assert/strict'
import { test } from 'node:test'
import { fromUtf8, utf8 } from '../../protocol/encoding.js'
import { encryptionRecipient, Opener, openWithContentKey } from '../../protocol/envelope.js'
import { VmError } from '../../protocol/errors.js'
import { generateEncryptionKey, generateSigningKey, publicJwk } from '../../protocol/keys.js'
import { decodeLeaf } from '../../protocol/leaf.js'
import { leafHash } from '../../protocol/merkle.js'
import { nodeAes } from '../crypto/node-aes.js'
import type { NodeIdentity } from '../identity.js'
import { LeafSealing } from './leaf-sealing.js'

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

test('the sealing thread seals each leaf with the content key the funnel drew, for every reader', async () => {
  const node = identity()
  const sealing = new LeafSealing(node, [], nodeAes)
  try {
    const reader = generateEncryptionKey()
    const recipients = [encryptionRecipient(node.encryption.publicKey), encryptionRecipient(reader.publicKey)]
    const items = ['{"a":1}', '{"b":2}'].map((signedText, i) => ({
      id: `${i}`.padStart(32, '0'),
      type: 'transfer' as const,
      signedText,
      recipients,
      ...sealing.contentRandom(),
    }))
    const { texts, hashes } = await sealing.sealLeaves(time, items)
    assert.equal(texts.length, 2)
    texts.forEach((text, i) => {
      const leaf = decodeLeaf(utf8(text))
      assert.ok(leaf.v === 2 && leaf.type === 'transfer')
      assert.equal(leaf.id, items[i]!.id)
      assert.equal(leaf.time, time)
      assert.deepEqual(hashes.subarray(32 * i, 32 * (i + 1)), leafHash(utf8(text)))
      assert.equal(
        fromUtf8(new Opener(reader.secretKey, { aes: nodeAes }).open(leaf.jwe)!),
        items[i]!.signedText,
      )
      assert.equal(fromUtf8(sealing.archive.open(leaf.jwe)!), items[i]!.signedText)
      // The funnel discloses this key to views: it must be the one the leaf was sealed with.
      assert.equal(fromUtf8(openWithContentKey(leaf.jwe, items[i]!.cek, nodeAes)), items[i]!.signedText)
    })
  } finally {
    await sealing.close()
  }
})

test('a block the sealing thread cannot seal fails with a clear error, and the next one is sealed', async () => {
  const node = identity()
  const sealing = new LeafSealing(node, [], nodeAes)
  try {
    const item = {
      id: '0'.repeat(32),
      type: 'transfer' as const,
      signedText: '{}',
      recipients: [encryptionRecipient(node.encryption.publicKey)],
    }
    await assert.rejects(
      sealing.sealLeaves(time, [{ ...item, random: new Uint8Array(3) }]),
      (error) => error instanceof VmError && error.code === 'internal' && /random bytes/.test(error.message),
    )
    const { texts } = await sealing.sealLeaves(time, [{ ...item, random: sealing.contentRandom().random }])
    const leaf = decodeLeaf(utf8(texts[0]!))
    assert.ok(leaf.v === 2 && leaf.type !== 'disclosure')
    assert.equal(fromUtf8(sealing.archive.open(leaf.jwe)!), '{}')
  } finally {
    await sealing.close()
  }
})
