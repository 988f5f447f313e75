import assert from 'node:assert/strict'
import { createCipheriv, randomBytes } from 'node:crypto'
import { describe, test } from 'node:test'
import { encryptBlock, expandKey256 } from './aes.js'
import { fromHex } from './encoding.js'
import { wrapKey } from './envelope.js'

/** One block through encryptBlock, as bytes. */
function encrypt(key: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const input = new DataView(plaintext.buffer, plaintext.byteOffset, 16)
  const [w0, w1, w2, w3] = [0, 4, 8, 12].map((offset) => input.getUint32(offset)) as [
    number,
    number,
    number,
    number,
  ]
  const words = encryptBlock(expandKey256(key), w0, w1, w2, w3)
  const out = new Uint8Array(16)
  const output = new DataView(out.buffer)
  for (const [i, word] of words.entries()) output.setUint32(4 * i, word)
  return out
}

const kek = fromHex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f')

describe('AES-256', () => {
  test('FIPS 197 appendix C.3', () => {
    assert.deepEqual(
      encrypt(kek, fromHex('00112233445566778899aabbccddeeff')),
      fromHex('8ea2b7ca516745bfeafc49904b496089'),
    )
  })

  test('the same blocks as OpenSSL, for random keys and blocks', () => {
    for (let i = 0; i < 2_000; i++) {
      const key = new Uint8Array(randomBytes(32))
      const plaintext = new Uint8Array(randomBytes(16))
      const cipher = createCipheriv('aes-256-ecb', key, null).setAutoPadding(false)
      assert.deepEqual(encrypt(key, plaintext), new Uint8Array(cipher.update(plaintext)))
    }
  })

  test('key wrap: the RFC 3394 vectors for a 256-bit KEK, and the same bytes as OpenSSL', () => {
    const vectors = [
      ['00112233445566778899aabbccddeeff', '64e8c3f9ce0f5ba263e9777905818a2a93c8191e7d6e8ae7'],
      [
        '00112233445566778899aabbccddeeff0001020304050607',
        'a8f9bc1612c68b3ff6e6f4fbe30e71e4769c8b80a32cb8958cd5d17d6b254da1',
      ],
      [
        '00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f',
        '28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21',
      ],
    ]
    for (const [key, wrapped] of vectors) assert.deepEqual(wrapKey(kek, fromHex(key!)), fromHex(wrapped!))
    const iv = fromHex('a6a6a6a6a6a6a6a6')
    for (let i = 0; i < 500; i++) {
      const randomKek = new Uint8Array(randomBytes(32))
      const key = new Uint8Array(randomBytes(8 * (2 + (i % 5))))
      const cipher = createCipheriv('id-aes256-wrap', randomKek, iv)
      assert.deepEqual(
        wrapKey(randomKek, key),
        new Uint8Array(Buffer.concat([cipher.update(key), cipher.final()])),
      )
    }
  })
})
