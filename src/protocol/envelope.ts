/**
 * Envelope encryption of leaf bodies: JWE (RFC 7516) in the general JSON serialization, content
 * encryption A256GCM, key management ECDH-ES+A256KW with X25519 (RFC 7518 §4.6, RFC 8037).
 */
import { aeskw, gcm } from '@noble/ciphers/aes.js'
import { x25519 } from '@noble/curves/ed25519.js'
import { encryptBlock, expandKey256 } from './aes.js'
import { bytesEqual, concatBytes, fromBase64Url, fromUtf8, toBase64Url, utf8 } from './encoding.js'
import { assert, VmError } from './errors.js'
import { sha256 } from './hash.js'
import { keyId, type OkpJwk, publicJwk, type SigningKeyPair } from './keys.js'

/** The key management parameters: ECDH-ES+A256KW against the sender's X25519 public key. */
export interface KeyAgreement {
  readonly alg: 'ECDH-ES+A256KW'
  /** The sender's X25519 public key (the node's static encryption key, or an ephemeral one). */
  readonly epk: OkpJwk
}

/**
 * One recipient of a JWE: the content key wrapped with a key-encryption key agreed with their X25519 key.
 * The header has alg and epk too unless the JWE's shared unprotected header has them for every recipient
 * (what Sealer.seal writes). A recipient outside a JWE (a disclosed key, Sealer.wrapFor) always has them.
 */
export interface JweRecipient {
  readonly header: {
    readonly alg?: KeyAgreement['alg']
    /** RFC 7638 thumbprint of the recipient's X25519 public JWK. */
    readonly kid: string
    readonly epk?: OkpJwk
  }
  /** base64url AES key wrap (RFC 3394) of the content key. */
  readonly encrypted_key: string
}

/** A JWE in the general JSON serialization, with the members this profile uses. */
export interface Jwe {
  /** base64url of the protected header, {"enc":"A256GCM"}; also the AEAD's additional data. */
  readonly protected: string
  /** Shared unprotected header: alg and epk written once when every recipient has the same (RFC 7516 §7.2.1). */
  readonly unprotected?: KeyAgreement
  readonly recipients: readonly JweRecipient[]
  readonly iv: string
  readonly ciphertext: string
  readonly tag: string
}

/** Recipient entries and, when they share them, their alg and epk: a JWE, or a disclosed key's recipients. */
export type WrappedKeys = Pick<Jwe, 'unprotected' | 'recipients'>

export const contentKeySize = 32
const ivSize = 12
/** What one envelope draws from the random source: its content key, then its IV. */
export const sealRandomSize = contentKeySize + ivSize
const tagSize = 16
/** RFC 3394 output: the key plus one 64-bit integrity block. */
const wrappedKeySize = contentKeySize + 8
/**
 * Recipients per envelope. The ledger bounds a leaf's readers (keys per person, views per account,
 * transfers per expiry), so that a leaf the funnel seals always stays below this.
 */
export const jweRecipientsMax = 4_096
export const jweCiphertextMax = 1024 * 1024
const kekCacheDefault = 4096
const keyManagement = 'ECDH-ES+A256KW'
/** What we write; when opening we accept any protected header of this profile, as given (jose writes others). */
const sealedProtected = toBase64Url(utf8('{"enc":"A256GCM"}'))
const sealedAad = utf8(sealedProtected)

function malformed(message: string, cause?: unknown): VmError {
  return new VmError('jwe_malformed', message, { status: 400, cause })
}

function decryptionFailed(cause?: unknown): VmError {
  return new VmError('decryption_failed', 'the envelope does not decrypt with this key', { cause })
}

/**
 * The envelope's primitives (X25519 and AES), pluggable so that servers can use node:crypto (see
 * src/node/crypto/node-primitives.ts).
 */
export interface EnvelopePrimitives {
  /** X25519 (RFC 7748); throws for a low-order public key (an all-zero shared secret). */
  agree(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array
  gcmEncrypt(
    key: Uint8Array,
    iv: Uint8Array,
    aad: Uint8Array,
    plaintext: Uint8Array,
  ): { ciphertext: Uint8Array; tag: Uint8Array }
  /** throws VmError 'decryption_failed' when the tag does not verify */
  gcmDecrypt(
    key: Uint8Array,
    iv: Uint8Array,
    aad: Uint8Array,
    ciphertext: Uint8Array,
    tag: Uint8Array,
  ): Uint8Array
  /** RFC 3394 with the default IV, each key under the same KEK: a batch can cost less than its keys one by one. */
  keyWrapMany(kek: Uint8Array, keys: readonly Uint8Array[]): Uint8Array[]
  /** throws VmError 'decryption_failed' */
  keyUnwrap(kek: Uint8Array, wrapped: Uint8Array): Uint8Array
  randomBytes(length: number): Uint8Array
}

/**
 * AES key schedules of the key-encryption keys, kept while the KEK itself is (the Sealer caches KEKs):
 * a wrap then costs 24 block encryptions and no key expansion.
 */
const keySchedules = new WeakMap<Uint8Array, Uint32Array>()

/** RFC 3394 key wrap with the default initial value, for a key of whole 64-bit blocks. */
export function wrapKey(kek: Uint8Array, key: Uint8Array): Uint8Array {
  assert(kek.length === 32 && key.length % 8 === 0 && key.length >= 16, 'AES-256 key wrap of whole blocks')
  let schedule = keySchedules.get(kek)
  if (schedule === undefined) {
    schedule = expandKey256(kek)
    keySchedules.set(kek, schedule)
  }
  const blocks = key.length / 8
  // A and R[1..n] as big-endian 32-bit words, the block function's: R[i] is r[2i - 2], r[2i - 1].
  // (Shifts rather than a DataView: a DataView per wrap costs a tenth of it.)
  const r = new Uint32Array(2 * blocks)
  for (let w = 0; w < r.length; w++)
    r[w] = (key[4 * w]! << 24) | (key[4 * w + 1]! << 16) | (key[4 * w + 2]! << 8) | key[4 * w + 3]!
  let a0 = 0xa6a6a6a6
  let a1 = 0xa6a6a6a6
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < blocks; i++) {
      const b = encryptBlock(schedule, a0, a1, r[2 * i]!, r[2 * i + 1]!)
      // A = MSB64(B) xor t, with t = n·round + i (1-based; below 2^32: the low word only); R[i] = LSB64(B).
      a0 = b[0]!
      a1 = b[1]! ^ (blocks * round + i + 1)
      r[2 * i] = b[2]!
      r[2 * i + 1] = b[3]!
    }
  }
  const out = new Uint8Array(8 + key.length)
  const put = (word: number, at: number) => {
    out[at] = word >>> 24
    out[at + 1] = word >>> 16
    out[at + 2] = word >>> 8
    out[at + 3] = word
  }
  put(a0, 0)
  put(a1, 4)
  for (let w = 0; w < r.length; w++) put(r[w]!, 8 + 4 * w)
  return out
}

/** Pure JavaScript, for browsers and tools. */
export const portablePrimitives: EnvelopePrimitives = {
  // noble refuses low-order points.
  agree: (secretKey, publicKey) => x25519.getSharedSecret(secretKey, publicKey),
  gcmEncrypt(key, iv, aad, plaintext) {
    const sealed = gcm(key, iv, aad).encrypt(plaintext)
    const cut = sealed.length - tagSize
    return { ciphertext: sealed.subarray(0, cut), tag: sealed.subarray(cut) }
  },
  gcmDecrypt(key, iv, aad, ciphertext, tag) {
    try {
      return gcm(key, iv, aad).decrypt(concatBytes(ciphertext, tag))
    } catch (cause) {
      throw decryptionFailed(cause)
    }
  },
  keyWrapMany: (kek, keys) => keys.map((key) => wrapKey(kek, key)),
  keyUnwrap(kek, wrapped) {
    try {
      return aeskw(kek).decrypt(wrapped)
    } catch (cause) {
      throw decryptionFailed(cause)
    }
  },
  randomBytes(length) {
    const out = new Uint8Array(length)
    // getRandomValues fills at most 64 KiB per call.
    for (let i = 0; i < length; i += 65536) globalThis.crypto.getRandomValues(out.subarray(i, i + 65536))
    return out
  },
}

/** What Sealer.sealMany seals: a plaintext for its recipients, with its random as seal takes it. */
export interface SealRequest {
  readonly plaintext: Uint8Array
  readonly recipients: readonly EncryptionRecipient[]
  readonly random?: Uint8Array | undefined
}

export interface EncryptionRecipient {
  readonly kid: string
  readonly publicKey: Uint8Array
}

export function encryptionRecipient(publicKey: Uint8Array): EncryptionRecipient {
  if (publicKey.length !== 32) throw new VmError('invalid_key', 'an X25519 public key is 32 bytes')
  return { kid: keyId(publicJwk('X25519', publicKey)), publicKey }
}

function u32(n: number): Uint8Array {
  return new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff])
}

/** RFC 7518 §4.6.2 OtherInfo: AlgorithmID, empty PartyUInfo and PartyVInfo, keydatalen 256. */
const otherInfo = concatBytes(u32(keyManagement.length), utf8(keyManagement), u32(0), u32(0), u32(256))

/** The key-encryption key: X25519, then the Concat KDF (one SHA-256 round covers 256 bits). */
function deriveKek(primitives: EnvelopePrimitives, secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  return sha256(u32(1), primitives.agree(secretKey, publicKey), otherInfo)
}

/** A Map used as a bounded cache: insertion order, the oldest entry goes first. */
function cached(
  cache: Map<string, Uint8Array>,
  max: number,
  key: string,
  derive: () => Uint8Array,
): Uint8Array {
  let value = cache.get(key)
  if (value !== undefined) return value
  value = derive()
  if (max > 0) {
    if (cache.size >= max) cache.delete(cache.keys().next().value!)
    cache.set(key, value)
  }
  return value
}

function uniqueByKid(recipients: readonly EncryptionRecipient[]): EncryptionRecipient[] {
  const seen = new Set<string>()
  return recipients.filter((recipient) => !seen.has(recipient.kid) && seen.add(recipient.kid))
}

/**
 * Seals for several recipients with the sender's STATIC X25519 key as `epk`. Still a valid JWE
 * (ECDH-ES with a reused sender key), but the KEK of each (sender, recipient) pair is then fixed, so it is
 * derived once and cached: a leaf for 3-6 recipients costs a few AES operations instead of 3-6 X25519
 * agreements (~4.6k/s per core against ~100k/s for AES-GCM). What is given up is forward secrecy per
 * message: whoever gets the sender's key reads every envelope. That is accepted on purpose, since the
 * node keeps an archive key that reads everything anyway; the fresh content key per leaf still confines a
 * disclosed content key to its own leaf.
 */
export class Sealer {
  readonly #secretKey: Uint8Array
  readonly #agreement: KeyAgreement
  readonly #primitives: EnvelopePrimitives
  readonly #kekCacheMax: number
  readonly #keks = new Map<string, Uint8Array>()
  #agreements = 0

  constructor(
    sender: SigningKeyPair,
    options: { primitives?: EnvelopePrimitives; kekCacheMax?: number } = {},
  ) {
    assert(
      sender.secretKey.length === 32 && bytesEqual(x25519.getPublicKey(sender.secretKey), sender.publicKey),
      'the sender must be an X25519 key pair',
    )
    this.#secretKey = sender.secretKey
    this.#agreement = Object.freeze<KeyAgreement>({
      alg: keyManagement,
      epk: Object.freeze(publicJwk('X25519', sender.publicKey)),
    })
    this.#primitives = options.primitives ?? portablePrimitives
    this.#kekCacheMax = options.kekCacheMax ?? kekCacheDefault
  }

  /** X25519 agreements done so far: the KEK cache's misses (for tests and metrics). */
  get agreements(): number {
    return this.#agreements
  }

  /**
   * Encrypts once with a fresh content key, wraps it for each recipient (duplicates by kid removed, order
   * kept). At least one recipient. alg and epk are the same for all, so they are written once in the shared
   * unprotected header and each recipient header only names its key: a recipient then takes 137 bytes of
   * the leaf instead of 245. `random` (content key then IV, `sealRandomSize` bytes, never reused) lets a
   * caller that needs the content key before the envelope draw it itself.
   */
  seal(
    plaintext: Uint8Array,
    recipients: readonly EncryptionRecipient[],
    random?: Uint8Array,
  ): { jwe: Jwe; cek: Uint8Array } {
    return this.sealMany([{ plaintext, recipients, random }])[0]!
  }

  /**
   * Seals each request as seal does. The content keys wrapped under one KEK (a recipient of many of them,
   * such as the node's archive key) are wrapped together: node:crypto wraps a batch for the cost of a few.
   */
  sealMany(requests: readonly SealRequest[]): { jwe: Jwe; cek: Uint8Array }[] {
    const envelopes = requests.map((request) => this.#encrypt(request))
    const wraps = new Map<Uint8Array, { keys: Uint8Array[]; into: { envelope: number; slot: number }[] }>()
    // Requests often share recipient objects (the sealing thread's do): one cache look-up for each.
    const keks = new Map<EncryptionRecipient, Uint8Array>()
    envelopes.forEach(({ recipients, cek }, envelope) => {
      recipients.forEach((recipient, slot) => {
        let kek = keks.get(recipient)
        if (kek === undefined) {
          kek = this.#kek(recipient)
          keks.set(recipient, kek)
        }
        let batch = wraps.get(kek)
        if (batch === undefined) {
          batch = { keys: [], into: [] }
          wraps.set(kek, batch)
        }
        batch.keys.push(cek)
        batch.into.push({ envelope, slot })
      })
    })
    const wrapped = envelopes.map(({ recipients }) => new Array<string>(recipients.length))
    for (const [kek, batch] of wraps) {
      this.#primitives.keyWrapMany(kek, batch.keys).forEach((key, k) => {
        const { envelope, slot } = batch.into[k]!
        wrapped[envelope]![slot] = toBase64Url(key)
      })
    }
    return envelopes.map(({ recipients, cek, iv, ciphertext, tag }, envelope) => ({
      jwe: {
        protected: sealedProtected,
        unprotected: this.#agreement,
        recipients: recipients.map((recipient, slot) => ({
          header: { kid: recipient.kid },
          encrypted_key: wrapped[envelope]![slot]!,
        })),
        iv: toBase64Url(iv),
        ciphertext: toBase64Url(ciphertext),
        tag: toBase64Url(tag),
      },
      cek,
    }))
  }

  /** Checks a request and encrypts its plaintext with its content key; the key is wrapped later. */
  #encrypt({ plaintext, recipients, random }: SealRequest) {
    if (plaintext.length > jweCiphertextMax)
      throw new VmError('envelope_too_large', `at most ${jweCiphertextMax} bytes can be sealed`, {
        status: 413,
      })
    const unique = uniqueByKid(recipients)
    if (unique.length === 0) throw new VmError('no_recipients', 'an envelope needs at least one recipient')
    if (unique.length > jweRecipientsMax)
      throw new VmError('too_many_recipients', `an envelope has at most ${jweRecipientsMax} recipients`)
    if (random !== undefined && random.length !== sealRandomSize)
      throw new VmError('invalid_key', `sealing takes ${sealRandomSize} random bytes`)
    // One draw from the random source for both: it is a system call per draw.
    const drawn = random ?? this.#primitives.randomBytes(sealRandomSize)
    const cek = drawn.subarray(0, contentKeySize)
    const iv = drawn.subarray(contentKeySize)
    const { ciphertext, tag } = this.#primitives.gcmEncrypt(cek, iv, sealedAad, plaintext)
    return { recipients: unique, cek, iv, ciphertext, tag }
  }

  /**
   * Wraps an existing content key for more recipients (used to disclose old leaves to a new grantee). No
   * JWE holds these entries, so each header has its own alg and epk.
   */
  wrapFor(cek: Uint8Array, recipients: readonly EncryptionRecipient[]): JweRecipient[] {
    if (cek.length !== contentKeySize)
      throw new VmError('invalid_key', `a content key is ${contentKeySize} bytes`)
    return uniqueByKid(recipients).map((recipient) => ({
      header: { ...this.#agreement, kid: recipient.kid },
      encrypted_key: toBase64Url(this.#primitives.keyWrapMany(this.#kek(recipient), [cek])[0]!),
    }))
  }

  /** The KEK agreed with a recipient, from the cache or by an X25519 agreement. */
  #kek(recipient: EncryptionRecipient): Uint8Array {
    return cached(this.#keks, this.#kekCacheMax, toBase64Url(recipient.publicKey), () => {
      this.#agreements++
      try {
        return deriveKek(this.#primitives, this.#secretKey, recipient.publicKey)
      } catch (cause) {
        throw new VmError('invalid_key', `recipient ${recipient.kid} is not a usable X25519 key`, { cause })
      }
    })
  }
}

export class Opener {
  readonly kid: string
  readonly publicKey: Uint8Array
  readonly #secretKey: Uint8Array
  readonly #primitives: EnvelopePrimitives
  readonly #kekCacheMax: number
  readonly #keks = new Map<string, Uint8Array>()
  #agreements = 0

  constructor(
    secretKey: Uint8Array,
    options: { primitives?: EnvelopePrimitives; kekCacheMax?: number } = {},
  ) {
    if (secretKey.length !== 32) throw new VmError('invalid_key', 'an X25519 secret key is 32 bytes')
    this.#secretKey = secretKey
    this.publicKey = x25519.getPublicKey(secretKey)
    this.kid = keyId(publicJwk('X25519', this.publicKey))
    this.#primitives = options.primitives ?? portablePrimitives
    this.#kekCacheMax = options.kekCacheMax ?? kekCacheDefault
  }

  /** X25519 agreements done so far: the KEK cache's misses (for tests and metrics). */
  get agreements(): number {
    return this.#agreements
  }

  /**
   * The content key from the recipient entry with this opener's kid, using the alg and epk of its header or
   * of the shared unprotected header: pass a JWE, or a disclosed key's recipients. Null when it is not a
   * recipient. KEKs cached per epk. Throws VmError 'decryption_failed' if the entry is there but does not
   * unwrap.
   */
  unwrap({ unprotected, recipients }: WrappedKeys): Uint8Array | null {
    const entry = recipients.find(
      (recipient) => isRecord(recipient) && isRecord(recipient.header) && recipient.header.kid === this.kid,
    )
    if (entry === undefined) return null
    const shared = unprotected === undefined ? undefined : parseUnprotected(unprotected)
    const { epk, wrapped } = parseRecipient(entry, shared)
    const kek = cached(this.#keks, this.#kekCacheMax, toBase64Url(epk), () => {
      this.#agreements++
      try {
        return deriveKek(this.#primitives, this.#secretKey, epk)
      } catch (cause) {
        throw malformed('epk is not a usable X25519 public key', cause)
      }
    })
    return this.#primitives.keyUnwrap(kek, wrapped)
  }

  /** Decrypts; null when not a recipient. */
  open(jwe: Jwe): Uint8Array | null {
    const parsed = parseJwe(jwe)
    const cek = this.unwrap(parsed.jwe)
    return cek === null ? null : decryptContent(parsed, cek, this.#primitives)
  }
}

export function openWithContentKey(
  jwe: Jwe,
  cek: Uint8Array,
  primitives: EnvelopePrimitives = portablePrimitives,
): Uint8Array {
  const parsed = parseJwe(jwe)
  if (cek.length !== contentKeySize) throw decryptionFailed()
  return decryptContent(parsed, cek, primitives)
}

/** Strict shape check of an untrusted JWE: every member of this profile, and nothing else. */
export function validateJwe(value: unknown): Jwe {
  return parseJwe(value).jwe
}

interface ParsedJwe {
  readonly jwe: Jwe
  readonly iv: Uint8Array
  readonly ciphertext: Uint8Array
  readonly tag: Uint8Array
}

function decryptContent(parsed: ParsedJwe, cek: Uint8Array, primitives: EnvelopePrimitives): Uint8Array {
  // RFC 7516 §5.1 step 14: the additional data is the ASCII of the protected member as given.
  return primitives.gcmDecrypt(cek, parsed.iv, utf8(parsed.jwe.protected), parsed.ciphertext, parsed.tag)
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** An object with exactly these members. */
function hasExactly(value: unknown, members: readonly string[]): value is Record<string, unknown> {
  if (!isRecord(value)) return false
  const keys = Object.keys(value)
  return keys.length === members.length && keys.every((key) => members.includes(key))
}

function base64Url(value: unknown, what: string, maxChars = 1024): Uint8Array {
  if (typeof value !== 'string' || value.length > maxChars)
    throw malformed(`${what} must be a base64url string`)
  try {
    return fromBase64Url(value)
  } catch (cause) {
    throw malformed(`${what} is not valid base64url`, cause)
  }
}

/**
 * Members that belong in the shared unprotected header or the recipient headers in this profile (a member
 * may be in only one header, RFC 7516 §7.2.1), or that we do not support.
 */
const protectedForbidden = ['alg', 'kid', 'epk', 'apu', 'apv', 'zip', 'crit']

function checkProtected(value: unknown): string {
  const bytes = base64Url(value, 'protected')
  let header: unknown
  try {
    header = JSON.parse(fromUtf8(bytes))
  } catch (cause) {
    throw malformed('protected is not a JSON object', cause)
  }
  if (!isRecord(header) || header.enc !== 'A256GCM') throw malformed('protected must have enc A256GCM')
  const forbidden = protectedForbidden.find((member) => Object.hasOwn(header, member))
  if (forbidden !== undefined) throw malformed(`protected must not have ${forbidden}`)
  return value as string
}

/** alg and epk, checked, with the epk's raw public key. */
interface ParsedAgreement {
  readonly header: KeyAgreement
  readonly epk: Uint8Array
}

function parseAgreement(header: Record<string, unknown>): ParsedAgreement {
  if (header.alg !== keyManagement) throw malformed(`alg must be ${keyManagement}`)
  const jwk = header.epk
  if (!hasExactly(jwk, ['kty', 'crv', 'x']) || jwk.kty !== 'OKP' || jwk.crv !== 'X25519')
    throw malformed('epk must be an X25519 OKP public JWK')
  const epk = base64Url(jwk.x, 'epk.x')
  if (epk.length !== 32) throw malformed('epk.x must be 32 bytes')
  return { header: { alg: keyManagement, epk: { kty: 'OKP', crv: 'X25519', x: jwk.x as string } }, epk }
}

/** The shared unprotected header: when there is one, it has alg and epk and nothing else. */
function parseUnprotected(value: unknown): ParsedAgreement {
  if (!hasExactly(value, ['alg', 'epk'])) throw malformed('unprotected has exactly alg and epk')
  return parseAgreement(value)
}

/**
 * A recipient entry. Its header has alg, kid and epk, or, when the JWE shares alg and epk in its
 * unprotected header, only kid: no other layout is accepted.
 */
function parseRecipient(
  value: unknown,
  shared: ParsedAgreement | undefined,
): { recipient: JweRecipient; epk: Uint8Array; wrapped: Uint8Array } {
  if (!hasExactly(value, ['header', 'encrypted_key']))
    throw malformed('a recipient has header and encrypted_key')
  const header = value.header
  if (!isRecord(header)) throw malformed('a recipient header is an object')
  if (shared === undefined) {
    if (!hasExactly(header, ['alg', 'kid', 'epk'])) throw malformed('a recipient header has alg, kid and epk')
  } else {
    // RFC 7516 §7.2.1: the headers' member names are disjoint.
    const repeated = ['alg', 'epk'].find((member) => Object.hasOwn(header, member))
    if (repeated !== undefined)
      throw malformed(`${repeated} is both in unprotected and in a recipient header`)
    if (!hasExactly(header, ['kid']))
      throw malformed('with alg and epk in unprotected, a recipient header has kid only')
  }
  const kid = header.kid
  if (typeof kid !== 'string' || kid.length === 0 || kid.length > 256)
    throw malformed('kid must be a non-empty string')
  const agreement = shared ?? parseAgreement(header)
  const wrapped = base64Url(value.encrypted_key, 'encrypted_key')
  if (wrapped.length !== wrappedKeySize) throw malformed(`encrypted_key must be ${wrappedKeySize} bytes`)
  const recipient: JweRecipient = {
    header: shared === undefined ? { ...agreement.header, kid } : { kid },
    encrypted_key: value.encrypted_key as string,
  }
  return { recipient, epk: agreement.epk, wrapped }
}

function parseJwe(value: unknown): ParsedJwe {
  const members = ['protected', 'recipients', 'iv', 'ciphertext', 'tag']
  if (!hasExactly(value, members) && !hasExactly(value, [...members, 'unprotected']))
    throw malformed(
      'a JWE has exactly protected, recipients, iv, ciphertext and tag, and may have unprotected',
    )
  const protectedHeader = checkProtected(value.protected)
  const shared = Object.hasOwn(value, 'unprotected') ? parseUnprotected(value.unprotected) : undefined
  const list = value.recipients
  if (!Array.isArray(list) || list.length === 0 || list.length > jweRecipientsMax)
    throw malformed(`recipients must be a list of 1 to ${jweRecipientsMax}`)
  const recipients = list.map((entry) => parseRecipient(entry, shared).recipient)
  if (new Set(recipients.map((recipient) => recipient.header.kid)).size !== recipients.length)
    throw malformed('recipients must have distinct kids')
  const iv = base64Url(value.iv, 'iv')
  if (iv.length !== ivSize) throw malformed(`iv must be ${ivSize} bytes`)
  const tag = base64Url(value.tag, 'tag')
  if (tag.length !== tagSize) throw malformed(`tag must be ${tagSize} bytes`)
  const ciphertext = base64Url(value.ciphertext, 'ciphertext', Math.ceil((jweCiphertextMax * 4) / 3))
  const jwe: Jwe = {
    protected: protectedHeader,
    ...(shared === undefined ? {} : { unprotected: shared.header }),
    recipients,
    iv: value.iv as string,
    ciphertext: value.ciphertext as string,
    tag: value.tag as string,
  }
  return { jwe, iv, ciphertext, tag }
}
