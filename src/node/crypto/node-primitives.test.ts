import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { fromHex, utf8 } from '../../protocol/encoding.js'
import {
  type EnvelopePrimitives,
  encryptionRecipient,
  Opener,
  portablePrimitives,
  Sealer,
} from '../../protocol/envelope.js'
import { VmError } from '../../protocol/errors.js'
import { generateEncryptionKey } from '../../protocol/keys.js'
import { nodePrimitives } from './node-primitives.js'

const implementations: [string, EnvelopePrimitives][] = [
  ['portable', portablePrimitives],
  ['node', nodePrimitives],
]

function refused(run: () => unknown) {
  assert.throws(run, (error: unknown) => error instanceof VmError && error.code === 'decryption_failed')
}

describe('nodePrimitives', () => {
  test('key wrap: the RFC 3394 §4.6 vector, and the same bytes as portablePrimitives', () => {
    const kek = fromHex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f')
    const key = fromHex('00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f')
    const expected = fromHex(
      '28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21',
    )
    for (const [, primitives] of implementations) {
      assert.deepEqual(primitives.keyWrapMany(kek, [key]), [expected])
      // Enough copies that nodePrimitives wraps them together with one cipher object.
      assert.deepEqual(
        primitives.keyWrapMany(
          kek,
          Array.from({ length: 20 }, () => key),
        ),
        Array.from({ length: 20 }, () => expected),
      )
      for (const [, other] of implementations) assert.deepEqual(other.keyUnwrap(kek, expected), key)
    }
    const randomKek = nodePrimitives.randomBytes(32)
    const randomKey = nodePrimitives.randomBytes(32)
    assert.deepEqual(
      nodePrimitives.keyWrapMany(randomKek, [randomKey]),
      portablePrimitives.keyWrapMany(randomKek, [randomKey]),
    )
  })

  test('key wrap: keys wrapped together are wrapped as each alone, at every batch size', () => {
    const kek = nodePrimitives.randomBytes(32)
    for (const count of [1, 15, 16, 17, 64, 129]) {
      // 16- and 32-byte keys: RFC 3394 takes any whole number of 64-bit blocks from two.
      for (const size of [16, 32]) {
        const keys = Array.from({ length: count }, () => nodePrimitives.randomBytes(size))
        const together = nodePrimitives.keyWrapMany(kek, keys)
        assert.deepEqual(
          together,
          portablePrimitives.keyWrapMany(kek, keys),
          `${count} keys of ${size} bytes`,
        )
        together.forEach((wrapped, k) => {
          assert.deepEqual(portablePrimitives.keyUnwrap(kek, wrapped), keys[k])
        })
      }
    }
  })

  test('gcm: the same bytes as portablePrimitives, each decrypts the other', () => {
    for (const size of [0, 1, 15, 16, 17, 1000, 65537]) {
      const key = nodePrimitives.randomBytes(32)
      const iv = nodePrimitives.randomBytes(12)
      const aad = utf8('eyJlbmMiOiJBMjU2R0NNIn0')
      const plaintext = portablePrimitives.randomBytes(size)
      const ours = nodePrimitives.gcmEncrypt(key, iv, aad, plaintext)
      const theirs = portablePrimitives.gcmEncrypt(key, iv, aad, plaintext)
      assert.deepEqual(ours, theirs)
      assert.equal(ours.tag.length, 16)
      assert.deepEqual(nodePrimitives.gcmDecrypt(key, iv, aad, theirs.ciphertext, theirs.tag), plaintext)
      assert.deepEqual(portablePrimitives.gcmDecrypt(key, iv, aad, ours.ciphertext, ours.tag), plaintext)
    }
  })

  test('tampering is refused by both', () => {
    const key = nodePrimitives.randomBytes(32)
    const iv = nodePrimitives.randomBytes(12)
    const aad = utf8('header')
    const { ciphertext, tag } = nodePrimitives.gcmEncrypt(key, iv, aad, utf8('sixteen bytes!!!'))
    const flipped = (bytes: Uint8Array, index = 0) => {
      const copy = Uint8Array.from(bytes)
      copy[index]! ^= 0x80
      return copy
    }
    const [wrapped] = nodePrimitives.keyWrapMany(key, [nodePrimitives.randomBytes(32)]) as [Uint8Array]
    for (const [, primitives] of implementations) {
      refused(() => primitives.gcmDecrypt(key, iv, aad, flipped(ciphertext), tag))
      refused(() => primitives.gcmDecrypt(key, iv, aad, ciphertext, flipped(tag, 15)))
      refused(() => primitives.gcmDecrypt(key, flipped(iv), aad, ciphertext, tag))
      refused(() => primitives.gcmDecrypt(key, iv, utf8('Header'), ciphertext, tag))
      refused(() => primitives.gcmDecrypt(flipped(key), iv, aad, ciphertext, tag))
      refused(() => primitives.gcmDecrypt(key, iv, aad, ciphertext, tag.subarray(0, 12)))
      refused(() => primitives.keyUnwrap(key, flipped(wrapped, 9)))
      refused(() => primitives.keyUnwrap(flipped(key), wrapped))
      refused(() => primitives.keyUnwrap(key, wrapped.subarray(0, 36)))
    }
  })

  test('X25519: the RFC 7748 §6.1 shared secret from both sides; a low-order key refused', () => {
    const alice = fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a')
    const alicePublic = fromHex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a')
    const bob = fromHex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb')
    const bobPublic = fromHex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f')
    const shared = fromHex('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742')
    for (const [name, primitives] of implementations) {
      assert.deepEqual(primitives.agree(alice, bobPublic), shared, name)
      assert.deepEqual(primitives.agree(bob, alicePublic), shared, name)
      // u = 0 has order 1: the shared secret would be all zeros.
      assert.throws(() => primitives.agree(alice, new Uint8Array(32)), name)
    }
  })

  test('a sealer refuses a low-order recipient key with invalid_key', () => {
    for (const [name, primitives] of implementations) {
      const sealer = new Sealer(generateEncryptionKey(), { primitives })
      const recipient = encryptionRecipient(new Uint8Array(32))
      assert.throws(
        () => sealer.seal(utf8('x'), [recipient]),
        (error: unknown) => error instanceof VmError && error.code === 'invalid_key',
        name,
      )
    }
  })

  test('randomBytes', () => {
    assert.equal(nodePrimitives.randomBytes(12).length, 12)
    assert.notDeepEqual(nodePrimitives.randomBytes(32), nodePrimitives.randomBytes(32))
    assert.equal(portablePrimitives.randomBytes(200_000).length, 200_000)
  })

  test('envelopes sealed with one open with the other', () => {
    const sender = generateEncryptionKey()
    const person = generateEncryptionKey()
    const plaintext = utf8('a leaf body')
    for (const [, sealAes] of implementations) {
      const { jwe } = new Sealer(sender, { primitives: sealAes }).seal(plaintext, [
        encryptionRecipient(person.publicKey),
      ])
      for (const [, openAes] of implementations)
        assert.deepEqual(new Opener(person.secretKey, { primitives: openAes }).open(jwe), plaintext)
    }
  })
})

test('sealMany seals each envelope as seal does, with the keys under one KEK wrapped together', () => {
  const sender = generateEncryptionKey()
  const archive = generateEncryptionKey()
  const people = Array.from({ length: 3 }, () => generateEncryptionKey())
  // Every envelope is for the archive (wrapped together by nodePrimitives) and for one or two people.
  const requests = Array.from({ length: 40 }, (_, i) => ({
    plaintext: utf8(`leaf ${i}`),
    recipients: [archive, people[i % 3]!, ...(i % 4 === 0 ? [people[(i + 1) % 3]!] : [])].map((key) =>
      encryptionRecipient(key.publicKey),
    ),
    random: nodePrimitives.randomBytes(44),
  }))
  for (const [name, primitives] of implementations) {
    const sealer = new Sealer(sender, { primitives })
    const many = sealer.sealMany(requests)
    const one = requests.map(({ plaintext, recipients, random }) =>
      sealer.seal(plaintext, recipients, random),
    )
    assert.deepEqual(many, one, name)
    many.forEach(({ jwe }, i) => {
      assert.deepEqual(new Opener(archive.secretKey, { primitives }).open(jwe), requests[i]!.plaintext)
      people.forEach((person, p) => {
        const readable = p === i % 3 || (i % 4 === 0 && p === (i + 1) % 3)
        const opened = new Opener(person.secretKey, { primitives }).open(jwe)
        assert.deepEqual(opened, readable ? requests[i]!.plaintext : null)
      })
    })
  }
  // A request that cannot be sealed fails the call before any envelope is made.
  assert.throws(
    () => new Sealer(sender).sealMany([...requests, { plaintext: utf8('x'), recipients: [] }]),
    (error: unknown) => error instanceof VmError && error.code === 'no_recipients',
  )
})
