import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { canonicalBytes } from './canonical.js'
import { fromBase64Url, toBase64Url } from './encoding.js'
import { VmError } from './errors.js'
import { sha256 } from './hash.js'

/** Public keys travel as JWK (RFC 8037 OKP). Private JWKs carry `d`. */
export interface OkpJwk {
  readonly kty: 'OKP'
  readonly crv: 'Ed25519' | 'X25519'
  readonly x: string
  readonly d?: string
}

export interface SigningKeyPair {
  readonly publicKey: Uint8Array
  readonly secretKey: Uint8Array
}

export const ed25519PublicKeySize = 32
export const ed25519SignatureSize = 64

export function generateSigningKey(): SigningKeyPair {
  const secretKey = ed25519.utils.randomSecretKey()
  return { secretKey, publicKey: ed25519.getPublicKey(secretKey) }
}

export function generateEncryptionKey(): SigningKeyPair {
  const secretKey = x25519.utils.randomSecretKey()
  return { secretKey, publicKey: x25519.getPublicKey(secretKey) }
}

export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  return ed25519.sign(message, secretKey)
}

interface NativeCrypto {
  createPublicKey(key: { key: OkpJwk; format: 'jwk' }): unknown
  verify(algorithm: null, data: Uint8Array, key: unknown, signature: Uint8Array): boolean
}
/** Node's OpenSSL, when the code runs in Node (20.16 and later); detected at run time, as in hash.ts. */
const nativeCrypto = (
  globalThis as { process?: { getBuiltinModule?: (id: string) => NativeCrypto | undefined } }
).process?.getBuiltinModule?.('node:crypto')
/** Public keys prepared for OpenSSL, by key: a verifier checks many signatures of few keys. */
const nativeKeys = new Map<string, unknown>()
const nativeKeysMax = 1_024

/**
 * RFC 8032 verification, strict in both ways it runs: natively in Node (a verifier checks two signatures
 * per block, and a JS verification costs about a millisecond), in pure JS elsewhere (ZIP 215's permissive
 * rules off, so that both accept the same signatures). Servers may use a faster Ed25519Verifier.
 */
export function verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== ed25519SignatureSize || publicKey.length !== ed25519PublicKeySize) return false
  try {
    if (nativeCrypto === undefined) return ed25519.verify(signature, message, publicKey, { zip215: false })
    const x = toBase64Url(publicKey)
    let key = nativeKeys.get(x)
    if (key === undefined) {
      key = nativeCrypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' })
      if (nativeKeys.size >= nativeKeysMax) nativeKeys.clear()
      nativeKeys.set(x, key)
    }
    return nativeCrypto.verify(null, message, key, signature)
  } catch {
    return false
  }
}

export function publicJwk(crv: OkpJwk['crv'], publicKey: Uint8Array): OkpJwk {
  return { kty: 'OKP', crv, x: toBase64Url(publicKey) }
}

export function privateJwk(crv: OkpJwk['crv'], pair: SigningKeyPair): OkpJwk {
  return { kty: 'OKP', crv, x: toBase64Url(pair.publicKey), d: toBase64Url(pair.secretKey) }
}

/** Decodes and checks an OKP JWK of the expected curve; returns the raw public key. */
export function jwkPublicKey(jwk: OkpJwk, crv: OkpJwk['crv']): Uint8Array {
  if (jwk.kty !== 'OKP' || jwk.crv !== crv) throw new VmError('invalid_key', `expected an OKP ${crv} JWK`)
  const key = fromBase64Url(jwk.x)
  if (key.length !== 32) throw new VmError('invalid_key', `${crv} public key must be 32 bytes`)
  if (crv === 'Ed25519') {
    try {
      ed25519.Point.fromBytes(key)
    } catch {
      throw new VmError('invalid_key', 'Ed25519 public key is not a curve point')
    }
  }
  return key
}

export function jwkKeyPair(jwk: OkpJwk, crv: OkpJwk['crv']): SigningKeyPair {
  const publicKey = jwkPublicKey(jwk, crv)
  if (jwk.d === undefined) throw new VmError('invalid_key', 'the key file holds no private key')
  const secretKey = fromBase64Url(jwk.d)
  const derived = crv === 'Ed25519' ? ed25519.getPublicKey(secretKey) : x25519.getPublicKey(secretKey)
  if (toBase64Url(derived) !== jwk.x) throw new VmError('invalid_key', 'private and public key do not match')
  return { publicKey, secretKey }
}

/** Key id: the RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key. */
export function keyId(jwk: OkpJwk): string {
  return toBase64Url(sha256(canonicalBytes({ crv: jwk.crv, kty: jwk.kty, x: jwk.x })))
}

export interface SignatureCheck {
  readonly message: Uint8Array
  readonly signature: Uint8Array
  readonly publicKey: Uint8Array
}

/** Verifies many Ed25519 signatures at once. Servers plug a native implementation in behind it. */
export interface BatchVerifier {
  verify(checks: readonly SignatureCheck[]): Promise<boolean[]>
}

/** The portable implementation, for browsers and tools. */
export const portableVerifier: BatchVerifier = {
  async verify(checks) {
    return checks.map((check) => verify(check.signature, check.message, check.publicKey))
  },
}
