import { canonicalize } from './canonical.js'
import { fromUtf8 } from './encoding.js'
import { type Jwe, type JweRecipient, type Opener, openWithContentKey, validateJwe } from './envelope.js'
import { VmError } from './errors.js'
import type { OkpJwk } from './keys.js'
import {
  type SignedTransaction,
  type TransactionType,
  transactionSchemas,
  validateSignedTransaction,
} from './transaction.js'

/**
 * A leaf of the log. Its RFC 8785 bytes are what the leaf hash covers. Three kinds:
 *
 * - A public leaf (v 1): the transaction as the client signed it, in the clear, and the block time. A
 *   node runs with public leaves only when it keeps a fully public ledger.
 * - A sealed leaf (v 2): what everyone may see (transaction id, type, block time) and, as a JWE, the
 *   signed transaction encrypted once with a fresh content key that is wrapped for each recipient. The
 *   recipients' key ids are in the JWE.
 * - A disclosure leaf (v 2, type "disclosure"): after a view is granted, the content keys of earlier
 *   leaves wrapped for the grantee, or, for a public view, the content keys themselves. Published bytes
 *   never change; disclosure only adds.
 */
export type Leaf = PublicLeaf | SealedLeaf | DisclosureLeaf

export interface PublicLeaf {
  readonly v: 1
  readonly time: string
  readonly signed: SignedTransaction
}

export interface SealedLeaf {
  readonly v: 2
  readonly id: string
  readonly type: TransactionType
  readonly time: string
  readonly jwe: Jwe
}

export type DisclosedKey =
  | { readonly leaf: number; readonly recipients: readonly JweRecipient[] }
  /** A public view: the content key itself, base64url. */
  | { readonly leaf: number; readonly cek: string }

export interface DisclosureLeaf {
  readonly v: 2
  readonly id: string
  readonly type: 'disclosure'
  readonly time: string
  /** The view (grant_view transaction id) that discloses these keys. */
  readonly view: string
  readonly keys: readonly DisclosedKey[]
}

/**
 * Content keys per disclosure leaf: bounds a leaf's size (about 250 bytes per key and recipient, each
 * recipient with its own alg and epk).
 */
export const disclosedKeysPerLeafMax = 1_000

/**
 * The public leaf's RFC 8785 text (its UTF-8 bytes are what the leaf hash covers), built from the signed
 * transaction's canonical text without encoding it again.
 */
export function encodeLeafText(time: string, signedText: string): string {
  // Keys in RFC 8785 order: "signed" < "time" < "v". The time is RFC 3339, which needs no escaping.
  return `{"signed":${signedText},"time":"${time}","v":1}`
}

export function encodeSealedLeafText(id: string, type: TransactionType, time: string, jwe: Jwe): string {
  // Keys in RFC 8785 order: "id" < "jwe" < "time" < "type" < "v"; id, time and type need no escaping.
  return `{"id":"${id}","jwe":${encodeJweText(jwe)},"time":"${time}","type":"${type}","v":2}`
}

function encodeEpkText(epk: OkpJwk): string {
  return `{"crv":"${epk.crv}","kty":"${epk.kty}","x":"${epk.x}"}`
}

/**
 * The RFC 8785 text of a JWE of this profile, written out directly: the funnel seals every leaf, and every
 * member is a base64url string or a fixed name, so nothing needs escaping and the key order is fixed.
 * alg and epk are in the shared unprotected header (what Sealer.seal writes) or in each recipient header.
 */
export function encodeJweText(jwe: Jwe): string {
  const recipients = jwe.recipients.map(({ header, encrypted_key }) => {
    // Keys in RFC 8785 order: "alg" < "epk" < "kid".
    const alg = header.alg === undefined ? '' : `"alg":"${header.alg}",`
    const epk = header.epk === undefined ? '' : `"epk":${encodeEpkText(header.epk)},`
    return `{"encrypted_key":"${encrypted_key}","header":{${alg}${epk}"kid":"${header.kid}"}}`
  })
  // "unprotected" sorts last.
  const unprotected =
    jwe.unprotected === undefined
      ? ''
      : `,"unprotected":{"alg":"${jwe.unprotected.alg}","epk":${encodeEpkText(jwe.unprotected.epk)}}`
  return `{"ciphertext":"${jwe.ciphertext}","iv":"${jwe.iv}","protected":"${jwe.protected}","recipients":[${recipients.join(',')}],"tag":"${jwe.tag}"${unprotected}}`
}

export function encodeDisclosureLeafText(leaf: Omit<DisclosureLeaf, 'v' | 'type'>): string {
  return canonicalize({ ...leaf, type: 'disclosure', v: 2 })
}

function malformed(message: string): VmError {
  return new VmError('leaf_malformed', message, { status: 400 })
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

const idPattern = /^[0-9a-f]{32}$/
const keyIdPattern = /^[A-Za-z0-9_-]{43}$/
const base64UrlPattern = /^[A-Za-z0-9_-]*$/

function isTime(value: unknown): value is string {
  return typeof value === 'string' && !Number.isNaN(Date.parse(value))
}

/** A disclosed key's recipients: no JWE around them shares alg and epk, so each header has its own. */
function checkRecipients(value: unknown, where: string): void {
  if (!Array.isArray(value) || value.length === 0)
    throw malformed(`${where}: recipients must be a non-empty array`)
  for (const recipient of value) {
    if (
      !isObject(recipient) ||
      !isObject(recipient.header) ||
      recipient.header.alg !== 'ECDH-ES+A256KW' ||
      typeof recipient.header.kid !== 'string' ||
      !keyIdPattern.test(recipient.header.kid) ||
      !isObject(recipient.header.epk) ||
      typeof recipient.encrypted_key !== 'string' ||
      !base64UrlPattern.test(recipient.encrypted_key)
    ) {
      throw malformed(`${where}: each recipient is {header: {alg: ECDH-ES+A256KW, kid, epk}, encrypted_key}`)
    }
  }
}

/** Parses a leaf's bytes and checks its shape; it does not decrypt. */
export function decodeLeaf(bytes: Uint8Array): Leaf {
  let value: unknown
  try {
    value = JSON.parse(fromUtf8(bytes))
  } catch (error) {
    throw new VmError('leaf_malformed', 'leaf is not UTF-8 JSON', { status: 400, cause: error })
  }
  if (!isObject(value)) throw malformed('leaf is not an object')
  if (value.v === 1) {
    const { v, time, signed, ...rest } = value
    if (!isTime(time) || Object.keys(rest).length > 0) throw malformed('a v1 leaf is {v: 1, time, signed}')
    return { v, time, signed: validateSignedTransaction(signed) }
  }
  if (value.v !== 2) throw malformed('unknown leaf version')
  const { id, type, time } = value
  if (typeof id !== 'string' || !idPattern.test(id))
    throw malformed('leaf id must be 32 lowercase hex digits')
  if (!isTime(time)) throw malformed('leaf time must be RFC 3339')
  if (type === 'disclosure') {
    const { v: _v, id: _id, type: _type, time: _time, view, keys, ...rest } = value
    if (Object.keys(rest).length > 0 || typeof view !== 'string' || !idPattern.test(view))
      throw malformed('a disclosure leaf is {v: 2, id, type, time, view, keys}')
    if (!Array.isArray(keys) || keys.length === 0 || keys.length > disclosedKeysPerLeafMax)
      throw malformed(`a disclosure leaf holds 1 to ${disclosedKeysPerLeafMax} keys`)
    for (const key of keys) {
      if (!isObject(key) || !Number.isSafeInteger(key.leaf) || (key.leaf as number) < 0)
        throw malformed('each disclosed key names a leaf index')
      if ('cek' in key) {
        if (typeof key.cek !== 'string' || !base64UrlPattern.test(key.cek) || Object.keys(key).length !== 2)
          throw malformed('a public disclosed key is {leaf, cek}')
      } else {
        if (Object.keys(key).length !== 2) throw malformed('a disclosed key is {leaf, recipients}')
        checkRecipients(key.recipients, `disclosed key of leaf ${key.leaf}`)
      }
    }
    return value as unknown as DisclosureLeaf
  }
  const { v: _v, id: _id, type: _type, time: _time, jwe, ...rest } = value
  if (typeof type !== 'string' || !Object.hasOwn(transactionSchemas, type) || Object.keys(rest).length > 0)
    throw malformed('a sealed leaf is {v: 2, id, type, time, jwe} with a known transaction type')
  try {
    validateJwe(jwe)
  } catch (error) {
    throw new VmError('leaf_malformed', `leaf ${id}: ${(error as Error).message}`, {
      status: 400,
      cause: error,
    })
  }
  return value as unknown as SealedLeaf
}

/** Key ids that can open this leaf (or, for a disclosure leaf, the keys it discloses to); public: none. */
export function leafRecipients(leaf: Leaf): string[] {
  if (leaf.v === 1) return []
  if (leaf.type === 'disclosure') {
    const kids = new Set<string>()
    for (const key of leaf.keys)
      if ('recipients' in key) for (const r of key.recipients) kids.add(r.header.kid)
    return [...kids]
  }
  return leaf.jwe.recipients.map((recipient) => recipient.header.kid)
}

/** The public part every leaf shows: transaction id (or disclosure id), type and block time. */
export function leafSummary(leaf: Leaf): { id: string; type: string; time: string } {
  if (leaf.v === 1) return { id: leaf.signed.tx.id, type: leaf.signed.tx.type, time: leaf.time }
  return { id: leaf.id, type: leaf.type, time: leaf.time }
}

/**
 * The signed transaction a leaf carries: in the clear (v1), or decrypted (v2) with the reader's key or a
 * disclosed content key. Null for a disclosure leaf, or a sealed leaf this reader cannot open. The
 * decrypted transaction must be the one the leaf's public part names, or the leaf is refused.
 */
export function leafTransaction(
  leaf: Leaf,
  key: { readonly opener?: Opener; readonly cek?: Uint8Array },
): SignedTransaction | null {
  if (leaf.v === 1) return leaf.signed
  if (leaf.type === 'disclosure') return null
  let plaintext: Uint8Array | null = null
  if (key.cek !== undefined) plaintext = openWithContentKey(leaf.jwe, key.cek)
  else if (key.opener !== undefined) plaintext = key.opener.open(leaf.jwe)
  if (plaintext === null) return null
  let signed: SignedTransaction
  try {
    signed = validateSignedTransaction(JSON.parse(fromUtf8(plaintext)))
  } catch (error) {
    throw new VmError('leaf_content_invalid', `leaf ${leaf.id} decrypts to no valid signed transaction`, {
      status: 400,
      cause: error,
    })
  }
  if (signed.tx.id !== leaf.id || signed.tx.type !== leaf.type) {
    throw new VmError(
      'leaf_content_mismatch',
      `leaf ${leaf.id} holds transaction ${signed.tx.id} (${signed.tx.type})`,
      {
        status: 400,
      },
    )
  }
  return signed
}
