/**
 * AES-256 block encryption (FIPS 197) with four 1 KiB tables, for the sealer's RFC 3394 key wraps. Each
 * leaf's content key is wrapped for every party under that party's own key-encryption key, so those wraps
 * cannot share one OpenSSL pass. @noble/ciphers' block function reads 512 KiB of tables, which the
 * database and the funnel push out of the core's caches: in the funnel a wrap took about 10 µs with it,
 * against 4 µs with these. Like noble's, table look-ups are not constant-time (see its README).
 */
import { assert } from './errors.js'

/** Multiplication by x in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (FIPS 197 §4.2). */
const xtime = (b: number) => ((b << 1) ^ (b & 0x80 ? 0x1b : 0)) & 0xff

const sbox = new Uint8Array(256)
/** T0[b] is the MixColumns column of S(b), (2·s, s, s, 3·s) big-endian; T1-T3 are its byte rotations. */
const T0 = new Uint32Array(256)
const T1 = new Uint32Array(256)
const T2 = new Uint32Array(256)
const T3 = new Uint32Array(256)
{
  // The S-box (§5.1.1): the multiplicative inverse, then the affine transformation. The powers of 3 (the
  // generator) run through every non-zero element, so that inverses are read from their logarithms.
  const power = new Uint8Array(255)
  const log = new Uint8Array(256)
  for (let i = 0, x = 1; i < 255; i++, x ^= xtime(x)) {
    power[i] = x
    log[x] = i
  }
  for (let b = 0; b < 256; b++) {
    const inverse = b === 0 ? 0 : power[(255 - log[b]!) % 255]!
    let s = inverse
    for (let shift = 1; shift <= 4; shift++) s ^= ((inverse << shift) | (inverse >>> (8 - shift))) & 0xff
    const sub = s ^ 0x63
    sbox[b] = sub
    const column = ((xtime(sub) << 24) | (sub << 16) | (sub << 8) | (xtime(sub) ^ sub)) >>> 0
    T0[b] = column
    T1[b] = (column >>> 8) | (column << 24)
    T2[b] = (column >>> 16) | (column << 16)
    T3[b] = (column >>> 24) | (column << 8)
  }
}

const subWord = (w: number) =>
  (sbox[w >>> 24]! << 24) |
  (sbox[(w >>> 16) & 0xff]! << 16) |
  (sbox[(w >>> 8) & 0xff]! << 8) |
  sbox[w & 0xff]!

/** The 60 round-key words of an AES-256 key (§5.2). */
export function expandKey256(key: Uint8Array): Uint32Array {
  assert(key.length === 32, 'an AES-256 key is 32 bytes')
  const words = new Uint32Array(60)
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength)
  for (let i = 0; i < 8; i++) words[i] = view.getUint32(4 * i)
  let rcon = 1
  for (let i = 8; i < 60; i++) {
    let t = words[i - 1]!
    if (i % 8 === 0) {
      t = subWord((t << 8) | (t >>> 24)) ^ (rcon << 24)
      rcon = xtime(rcon)
    } else if (i % 8 === 4) {
      t = subWord(t)
    }
    words[i] = words[i - 8]! ^ t
  }
  return words
}

/** SubBytes and ShiftRows of one column: byte 0 of a, 1 of b, 2 of c, 3 of d. */
const last = (a: number, b: number, c: number, d: number) =>
  (sbox[a >>> 24]! << 24) |
  (sbox[(b >>> 16) & 0xff]! << 16) |
  (sbox[(c >>> 8) & 0xff]! << 8) |
  sbox[d & 0xff]!

/** The output of the last encryptBlock: reused, so that a wrap allocates nothing per block. */
const block = new Uint32Array(4)

/** One block, as four big-endian words, under an expanded key; the result stays valid until the next call. */
export function encryptBlock(
  roundKeys: Uint32Array,
  w0: number,
  w1: number,
  w2: number,
  w3: number,
): Uint32Array {
  let s0 = w0 ^ roundKeys[0]!
  let s1 = w1 ^ roundKeys[1]!
  let s2 = w2 ^ roundKeys[2]!
  let s3 = w3 ^ roundKeys[3]!
  let k = 4
  // 13 rounds of SubBytes, ShiftRows, MixColumns and AddRoundKey, one table look-up per byte.
  for (let round = 1; round < 14; round++, k += 4) {
    const t0 =
      roundKeys[k]! ^ T0[s0 >>> 24]! ^ T1[(s1 >>> 16) & 0xff]! ^ T2[(s2 >>> 8) & 0xff]! ^ T3[s3 & 0xff]!
    const t1 =
      roundKeys[k + 1]! ^ T0[s1 >>> 24]! ^ T1[(s2 >>> 16) & 0xff]! ^ T2[(s3 >>> 8) & 0xff]! ^ T3[s0 & 0xff]!
    const t2 =
      roundKeys[k + 2]! ^ T0[s2 >>> 24]! ^ T1[(s3 >>> 16) & 0xff]! ^ T2[(s0 >>> 8) & 0xff]! ^ T3[s1 & 0xff]!
    const t3 =
      roundKeys[k + 3]! ^ T0[s3 >>> 24]! ^ T1[(s0 >>> 16) & 0xff]! ^ T2[(s1 >>> 8) & 0xff]! ^ T3[s2 & 0xff]!
    s0 = t0
    s1 = t1
    s2 = t2
    s3 = t3
  }
  // The last round has no MixColumns.
  block[0] = roundKeys[k]! ^ last(s0, s1, s2, s3)
  block[1] = roundKeys[k + 1]! ^ last(s1, s2, s3, s0)
  block[2] = roundKeys[k + 2]! ^ last(s2, s3, s0, s1)
  block[3] = roundKeys[k + 3]! ^ last(s3, s0, s1, s2)
  return block
}
