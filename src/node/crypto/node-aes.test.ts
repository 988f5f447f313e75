import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { fromHex, utf8 } from '../../protocol/encoding.js'
import { type Aes, encryptionRecipient, Opener, portableAes, Sealer } from '../../protocol/envelope.js'
import { VmError } from '../../protocol/errors.js'
import { generateEncryptionKey } from '../../protocol/keys.js'
import { nodeAes } from './node-aes.js'

const implementations: [string, Aes][] = [
  ['portable', portableAes],
  ['node', nodeAes],
]

function refused(run: () => unknown) {
  assert.throws(run, (error: unknown) => error instanceof VmError && error.code === 'decryption_failed')
}

describe('nodeAes', () => {
  test('key wrap: the RFC 3394 §4.6 vector, and the same bytes as portableAes', () => {
    const kek = fromHex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f')
    const key = fromHex('00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f')
    const expected = fromHex(
      '28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21',
    )
    for (const [, aes] of implementations) {
      assert.deepEqual(aes.keyWrapMany(kek, [key]), [expected])
      // Enough copies that nodeAes wraps them together with one cipher object.
      assert.deepEqual(
        aes.keyWrapMany(
          kek,
          Array.from({ length: 20 }, () => key),
        ),
        Array.from({ length: 20 }, () => expected),
      )
      for (const [, other] of implementations) assert.deepEqual(other.keyUnwrap(kek, expected), key)
    }
    const randomKek = nodeAes.randomBytes(32)
    const randomKey = nodeAes.randomBytes(32)
    assert.deepEqual(
      nodeAes.keyWrapMany(randomKek, [randomKey]),
      portableAes.keyWrapMany(randomKek, [randomKey]),
    )
  })

  test('key wrap: keys wrapped together are wrapped as each alone, at every batch size', () => {
    const kek = nodeAes.randomBytes(32)
    for (const count of [1, 15, 16, 17, 64, 129]) {
      // 16- and 32-byte keys: RFC 3394 takes any whole number of 64-bit blocks from two.
      for (const size of [16, 32]) {
        const keys = Array.from({ length: count }, () => nodeAes.randomBytes(size))
        const together = nodeAes.keyWrapMany(kek, keys)
        assert.deepEqual(together, portableAes.keyWrapMany(kek, keys), `${count} keys of ${size} bytes`)
        together.forEach((wrapped, k) => {
          assert.deepEqual(portableAes.keyUnwrap(kek, wrapped), keys[k])
        })
      }
    }
  })

  test('gcm: the same bytes as portableAes, each decrypts the other', () => {
    for (const size of [0, 1, 15, 16, 17, 1000, 65537]) {
      const key = nodeAes.randomBytes(32)
      const iv = nodeAes.randomBytes(12)
      const aad = utf8('eyJlbmMiOiJBMjU2R0NNIn0')
      const plaintext = portableAes.randomBytes(size)
      const ours = nodeAes.gcmEncrypt(key, iv, aad, plaintext)
      const theirs = portableAes.gcmEncrypt(key, iv, aad, plaintext)
      assert.deepEqual(ours, theirs)
      assert.equal(ours.tag.length, 16)
      assert.deepEqual(nodeAes.gcmDecrypt(key, iv, aad, theirs.ciphertext, theirs.tag), plaintext)
      assert.deepEqual(portableAes.gcmDecrypt(key, iv, aad, ours.ciphertext, ours.tag), plaintext)
    }
  })

  test('tampering is refused by both', () => {
    const key = nodeAes.randomBytes(32)
    const iv = nodeAes.randomBytes(12)
    const aad = utf8('header')
    const { ciphertext, tag } = nodeAes.gcmEncrypt(key, iv, aad, utf8('sixteen bytes!!!'))
    const flipped = (bytes: Uint8Array, index = 0) => {
      const copy = Uint8Array.from(bytes)
      copy[index]! ^= 0x80
      return copy
    }
    const [wrapped] = nodeAes.keyWrapMany(key, [nodeAes.randomBytes(32)]) as [Uint8Array]
    for (const [, aes] of implementations) {
      refused(() => aes.gcmDecrypt(key, iv, aad, flipped(ciphertext), tag))
      refused(() => aes.gcmDecrypt(key, iv, aad, ciphertext, flipped(tag, 15)))
      refused(() => aes.gcmDecrypt(key, flipped(iv), aad, ciphertext, tag))
      refused(() => aes.gcmDecrypt(key, iv, utf8('Header'), ciphertext, tag))
      refused(() => aes.gcmDecrypt(flipped(key), iv, aad, ciphertext, tag))
      refused(() => aes.gcmDecrypt(key, iv, aad, ciphertext, tag.subarray(0, 12)))
      refused(() => aes.keyUnwrap(key, flipped(wrapped, 9)))
      refused(() => aes.keyUnwrap(flipped(key), wrapped))
      refused(() => aes.keyUnwrap(key, wrapped.subarray(0, 36)))
    }
  })

  test('randomBytes', () => {
    assert.equal(nodeAes.randomBytes(12).length, 12)
    assert.notDeepEqual(nodeAes.randomBytes(32), nodeAes.randomBytes(32))
    assert.equal(portableAes.randomBytes(200_000).length, 200_000)
  })

  test('envelopes sealed with one open with the other', () => {
    const sender = generateEncryptionKey()
    const person = generateEncryptionKey()
    const plaintext = utf8('a leaf body')
    for (const [, sealAes] of implementations) {
      const { jwe } = new Sealer(sender, { aes: sealAes }).seal(plaintext, [
        encryptionRecipient(person.publicKey),
      ])
      for (const [, openAes] of implementations)
        assert.deepEqual(new Opener(person.secretKey, { aes: openAes }).open(jwe), plaintext)
    }
  })
})

test('sealMany seals each envelope as seal does, with the keys under one KEK wrapped together', () => {
  const sender = generateEncryptionKey()
  const archive = generateEncryptionKey()
  const people = Array.from({ length: 3 }, () => generateEncryptionKey())
  // Every envelope is for the archive (wrapped together by nodeAes) and for one or two people.
  const requests = Array.from({ length: 40 }, (_, i) => ({
    plaintext: utf8(`leaf ${i}`),
    recipients: [archive, people[i % 3]!, ...(i % 4 === 0 ? [people[(i + 1) % 3]!] : [])].map((key) =>
      encryptionRecipient(key.publicKey),
    ),
    random: nodeAes.randomBytes(44),
  }))
  for (const [name, aes] of implementations) {
    const sealer = new Sealer(sender, { aes })
    const many = sealer.sealMany(requests)
    const one = requests.map(({ plaintext, recipients, random }) =>
      sealer.seal(plaintext, recipients, random),
    )
    assert.deepEqual(many, one, name)
    many.forEach(({ jwe }, i) => {
      assert.deepEqual(new Opener(archive.secretKey, { aes }).open(jwe), requests[i]!.plaintext)
      people.forEach((person, p) => {
        const readable = p === i % 3 || (i % 4 === 0 && p === (i + 1) % 3)
        const opened = new Opener(person.secretKey, { aes }).open(jwe)
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
