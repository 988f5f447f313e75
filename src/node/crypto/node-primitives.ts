/** The envelope's primitives on node:crypto (OpenSSL, AES-NI): several times faster than the portable ones. */
import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  type KeyObject,
  randomBytes,
  randomFillSync,
} from 'node:crypto'
import { type EnvelopePrimitives, wrapKey } from '../../protocol/envelope.js'
import { assert, VmError } from '../../protocol/errors.js'

const tagLength = 16
/** Random bytes are drawn from the system this many at a time: one system call per some hundred leaves. */
const randomPoolBytes = 16 * 1024
const randomPool = Buffer.alloc(randomPoolBytes)
let randomOffset = randomPoolBytes
/** RFC 3394 §2.2.3.1 default initial value. */
const wrapIv = Buffer.from('A6A6A6A6A6A6A6A6', 'hex')

/** From this many keys under one KEK, wrapping them together is cheaper than one by one in JavaScript. */
const wrapTogetherMin = 16

/**
 * RFC 3394 §2.2.1 for several keys under one KEK, in lockstep: each of the 6n steps is one AES-256-ECB
 * pass over a block of every key (ECB keeps no state between blocks, so one cipher object serves every
 * step). The same bytes as wrapKey for each key.
 */
function wrapTogether(kek: Uint8Array, keys: readonly Uint8Array[]): Uint8Array[] {
  const n = keys[0]!.length / 8
  assert(
    Number.isInteger(n) && n >= 2 && 6 * n < 256 && keys.every((key) => key.length === 8 * n),
    'keys wrapped together are the same number of whole 64-bit blocks',
  )
  const count = keys.length
  // Per key: A, then R[1..n]; 32-bit words only move bytes around, so the machine's byte order is moot.
  const stride = 8 + 8 * n
  const state = new Uint8Array(count * stride)
  keys.forEach((key, k) => {
    state.set(wrapIv, k * stride)
    state.set(key, k * stride + 8)
  })
  const blocks = new Uint8Array(16 * count)
  const encrypted = new Uint8Array(16 * count)
  const stateWords = new Uint32Array(state.buffer)
  const blockWords = new Uint32Array(blocks.buffer)
  const encryptedWords = new Uint32Array(encrypted.buffer)
  const words = stride / 4
  const cipher = createCipheriv('aes-256-ecb', kek, null).setAutoPadding(false)
  for (let round = 0; round < 6; round++) {
    for (let i = 1; i <= n; i++) {
      // B = AES(K, A | R[i]) for every key at once.
      for (let k = 0, a = 0, b = 0; k < count; k++, a += words, b += 4) {
        blockWords[b] = stateWords[a]!
        blockWords[b + 1] = stateWords[a + 1]!
        blockWords[b + 2] = stateWords[a + 2 * i]!
        blockWords[b + 3] = stateWords[a + 2 * i + 1]!
      }
      const out = cipher.update(blocks)
      assert(out.length === blocks.length, 'ECB without padding returns every block it is given')
      encrypted.set(out)
      // A = MSB64(B) xor t, t = n·round + i, big-endian (below 256: its last byte only); R[i] = LSB64(B).
      const t = n * round + i
      for (let k = 0, a = 0, b = 0; k < count; k++, a += words, b += 4) {
        encrypted[4 * b + 7]! ^= t
        stateWords[a] = encryptedWords[b]!
        stateWords[a + 1] = encryptedWords[b + 1]!
        stateWords[a + 2 * i] = encryptedWords[b + 2]!
        stateWords[a + 2 * i + 1] = encryptedWords[b + 3]!
      }
    }
  }
  cipher.final()
  return keys.map((_, k) => state.slice(k * stride, (k + 1) * stride))
}

/** RFC 8410 DER prefixes of a raw X25519 key: PKCS #8 for a secret key, SPKI for a public one. */
const x25519SecretPrefix = Buffer.from('302e020100300506032b656e04220420', 'hex')
const x25519PublicPrefix = Buffer.from('302a300506032b656e032100', 'hex')
/** The secret keys' OpenSSL objects, kept while the key itself is (a Sealer or Opener holds one key). */
const secretKeyObjects = new WeakMap<Uint8Array, KeyObject>()

function x25519Agree(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  assert(secretKey.length === 32 && publicKey.length === 32, 'X25519 keys are 32 bytes')
  let privateKey = secretKeyObjects.get(secretKey)
  if (privateKey === undefined) {
    privateKey = createPrivateKey({
      key: Buffer.concat([x25519SecretPrefix, secretKey]),
      format: 'der',
      type: 'pkcs8',
    })
    secretKeyObjects.set(secretKey, privateKey)
  }
  // OpenSSL refuses a low-order public key (RFC 7748 §6.1: its shared secret is all zeros).
  const shared = diffieHellman({
    privateKey,
    publicKey: createPublicKey({
      key: Buffer.concat([x25519PublicPrefix, publicKey]),
      format: 'der',
      type: 'spki',
    }),
  })
  return bytes(shared)
}

/** A plain Uint8Array view, so that results compare equal to the portable ones. */
function bytes(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
}

function decryptionFailed(cause: unknown): VmError {
  return new VmError('decryption_failed', 'the envelope does not decrypt with this key', { cause })
}

export const nodePrimitives: EnvelopePrimitives = {
  agree: x25519Agree,
  gcmEncrypt(key, iv, aad, plaintext) {
    const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: tagLength }).setAAD(aad)
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()])
    return { ciphertext: bytes(ciphertext), tag: bytes(cipher.getAuthTag()) }
  },
  gcmDecrypt(key, iv, aad, ciphertext, tag) {
    try {
      // authTagLength pins the tag to 16 bytes: without it, OpenSSL would accept a truncated tag.
      const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: tagLength })
      decipher.setAAD(aad).setAuthTag(tag)
      // update() yields unauthenticated bytes; they are returned only once final() has checked the tag.
      return bytes(Buffer.concat([decipher.update(ciphertext), decipher.final()]))
    } catch (cause) {
      throw decryptionFailed(cause)
    }
  },
  // A cipher object per wrap costs more than the 24 block encryptions of a wrap with a cached schedule;
  // for many keys under one KEK, one cipher object serves them all.
  keyWrapMany: (kek, keys) =>
    keys.length < wrapTogetherMin ? keys.map((key) => wrapKey(kek, key)) : wrapTogether(kek, keys),
  keyUnwrap(kek, wrapped) {
    try {
      const decipher = createDecipheriv('id-aes256-wrap', kek, wrapIv)
      return bytes(Buffer.concat([decipher.update(wrapped), decipher.final()]))
    } catch (cause) {
      throw decryptionFailed(cause)
    }
  },
  randomBytes(length) {
    if (length > randomPoolBytes) return bytes(randomBytes(length))
    if (randomOffset + length > randomPool.length) {
      randomFillSync(randomPool)
      randomOffset = 0
    }
    const out = new Uint8Array(length)
    out.set(randomPool.subarray(randomOffset, randomOffset + length))
    randomPool.fill(0, randomOffset, randomOffset + length)
    randomOffset += length
    return out
  },
}
