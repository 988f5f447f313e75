import { fromBase64, toBase64, utf8 } from './encoding.js'
import { VmError } from './errors.js'
import { sign, verify } from './keys.js'

/**
 * RFC 9421 HTTP Message Signatures for authorized reads: the client signs the method, authority (so a
 * signature for one node is worthless at another), path and query of each request with a device key
 * (alg "ed25519"), and the server checks key, time and signature. Reads carry no body, so no content
 * digest is covered.
 */
export const signatureLabel = 'vm'
export const coveredComponents = ['@method', '@authority', '@path', '@query'] as const
/** A signed request is valid this long after `created` (and this far ahead, for clock skew). */
export const signatureAgeSecondsMax = 300

export interface RequestTarget {
  readonly method: string
  /** Host and port as the client addressed them (the Host header), lowercase. */
  readonly authority: string
  /** Path and query as sent, e.g. `/v1/accounts/abc?limit=10`. */
  readonly url: string
}

function signatureParams(keyId: string, created: number): string {
  return `(${coveredComponents.map((c) => `"${c}"`).join(' ')});created=${created};keyid="${keyId}";alg="ed25519"`
}

function signatureBase(target: RequestTarget, params: string): string {
  const queryStart = target.url.indexOf('?')
  const path = queryStart === -1 ? target.url : target.url.slice(0, queryStart)
  const query = queryStart === -1 ? '?' : target.url.slice(queryStart)
  return [
    `"@method": ${target.method.toUpperCase()}`,
    `"@authority": ${target.authority.toLowerCase()}`,
    `"@path": ${path}`,
    `"@query": ${query}`,
    `"@signature-params": ${params}`,
  ].join('\n')
}

/** Returns the `Signature-Input` and `Signature` headers for a request. */
export function signRequest(
  target: RequestTarget,
  keyId: string,
  secretKey: Uint8Array,
  now = Date.now(),
): { 'signature-input': string; signature: string } {
  const params = signatureParams(keyId, Math.floor(now / 1000))
  const signature = sign(utf8(signatureBase(target, params)), secretKey)
  return {
    'signature-input': `${signatureLabel}=${params}`,
    signature: `${signatureLabel}=:${toBase64(signature)}:`,
  }
}

/** Parses the headers strictly; returns the key id for the caller to look up, and a check to run. */
export function parseRequestSignature(
  target: RequestTarget,
  headers: { 'signature-input'?: string | undefined; signature?: string | undefined },
  now = Date.now(),
): { keyId: string; verifyWith(publicKey: Uint8Array): boolean } {
  const input = headers['signature-input']
  const value = headers.signature
  if (input === undefined || value === undefined) {
    throw new VmError(
      'unauthorized',
      'this read needs an RFC 9421 signature (Signature-Input and Signature headers)',
      {
        status: 401,
      },
    )
  }
  const inputMatch = new RegExp(
    `^${signatureLabel}=\\("@method" "@authority" "@path" "@query"\\);created=(\\d{1,12});keyid="([A-Za-z0-9_-]{43})";alg="ed25519"$`,
  ).exec(input)
  const valueMatch = new RegExp(`^${signatureLabel}=:([A-Za-z0-9+/]{86}==):$`).exec(value)
  if (inputMatch === null || valueMatch === null) {
    throw new VmError(
      'unauthorized',
      `Signature-Input must be ${signatureLabel}=("@method" "@authority" "@path" "@query");created=<s>;keyid="<key id>";alg="ed25519"`,
      {
        status: 401,
      },
    )
  }
  const created = Number(inputMatch[1])
  if (Math.abs(now / 1000 - created) > signatureAgeSecondsMax) {
    throw new VmError('signature_expired', 'the request signature is too old or from the future', {
      status: 401,
    })
  }
  const keyId = inputMatch[2]!
  const params = signatureParams(keyId, created)
  const signature = fromBase64(valueMatch[1]!)
  const base = utf8(signatureBase(target, params))
  return { keyId, verifyWith: (publicKey) => verify(signature, base, publicKey) }
}
