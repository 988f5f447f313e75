import { VmError } from './errors.js'

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder('utf-8', { fatal: true })

export function utf8(text: string): Uint8Array {
  return textEncoder.encode(text)
}

export function fromUtf8(bytes: Uint8Array): string {
  return textDecoder.decode(bytes)
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

export function toHex(bytes: Uint8Array): string {
  let out = ''
  for (const byte of bytes) out += HEX[byte]
  return out
}

export function fromHex(text: string): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(text))
    throw new VmError('invalid_encoding', 'not a hex string')
  const out = new Uint8Array(text.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16)
  return out
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
const B64_LOOKUP = new Int16Array(128).fill(-1)
for (let i = 0; i < B64.length; i++) B64_LOOKUP[B64.charCodeAt(i)] = i
B64_LOOKUP['-'.charCodeAt(0)] = 62
B64_LOOKUP['_'.charCodeAt(0)] = 63

function encode64(bytes: Uint8Array, alphabet: string, pad: boolean): string {
  let out = ''
  let i = 0
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!
    out +=
      alphabet[(n >> 18) & 63]! + alphabet[(n >> 12) & 63]! + alphabet[(n >> 6) & 63]! + alphabet[n & 63]!
  }
  const rest = bytes.length - i
  if (rest === 1) {
    const n = bytes[i]! << 16
    out += alphabet[(n >> 18) & 63]! + alphabet[(n >> 12) & 63]! + (pad ? '==' : '')
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8)
    out += alphabet[(n >> 18) & 63]! + alphabet[(n >> 12) & 63]! + alphabet[(n >> 6) & 63]! + (pad ? '=' : '')
  }
  return out
}

/**
 * Node's native base64, when the code runs in Node: logs move millions of leaves as base64, and the
 * portable coder below is several times slower. Detected at run time, so browsers use the portable one.
 */
interface NativeBuffer {
  from(bytes: ArrayBufferLike, offset: number, length: number): { toString(encoding: string): string }
  from(text: string, encoding: string): Uint8Array
  compare(a: Uint8Array, b: Uint8Array): number
}
const nativeBuffer = (globalThis as { Buffer?: NativeBuffer }).Buffer

function nativeEncode(bytes: Uint8Array, encoding: 'base64' | 'base64url'): string {
  return nativeBuffer!.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString(encoding)
}

/** Standard base64 with padding (RFC 4648 §4), as C2SP notes and the log API use. */
export function toBase64(bytes: Uint8Array): string {
  return nativeBuffer === undefined ? encode64(bytes, B64, true) : nativeEncode(bytes, 'base64')
}

/** base64url without padding (RFC 4648 §5), as JWK and signatures use. */
export function toBase64Url(bytes: Uint8Array): string {
  return nativeBuffer === undefined
    ? encode64(bytes, `${B64.slice(0, 62)}-_`, false)
    : nativeEncode(bytes, 'base64url')
}

/** Strict decoder: one alphabet, canonical padding, no whitespace. */
function decode64(text: string, url: boolean): Uint8Array {
  if (nativeBuffer !== undefined) {
    // The native decoder is lenient; the text is valid exactly when it is what encoding the bytes gives.
    const bytes = nativeBuffer.from(text, url ? 'base64url' : 'base64')
    const out = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    if (nativeEncode(out, url ? 'base64url' : 'base64') !== text)
      throw new VmError('invalid_encoding', 'not valid, canonical base64')
    return out
  }
  const body = url ? text : text.replace(/={1,2}$/, '')
  const valid = url ? /^[A-Za-z0-9_-]*$/ : /^[A-Za-z0-9+/]*$/
  if (!valid.test(body) || body.length % 4 === 1) throw new VmError('invalid_encoding', 'not valid base64')
  if (!url && text.length % 4 !== 0) throw new VmError('invalid_encoding', 'base64 padding is missing')
  const out = new Uint8Array(Math.floor((body.length * 3) / 4))
  let bits = 0
  let value = 0
  let o = 0
  for (let i = 0; i < body.length; i++) {
    value = (value << 6) | B64_LOOKUP[body.charCodeAt(i)]!
    bits += 6
    if (bits >= 8) {
      bits -= 8
      out[o++] = (value >> bits) & 0xff
    }
  }
  if ((value & ((1 << bits) - 1)) !== 0)
    throw new VmError('invalid_encoding', 'base64 has non-zero trailing bits')
  return out
}

export function fromBase64(text: string): Uint8Array {
  return decode64(text, false)
}

export function fromBase64Url(text: string): Uint8Array {
  return decode64(text, true)
}

export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let length = 0
  for (const part of parts) length += part.length
  const out = new Uint8Array(length)
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

/** Equality of public bytes (roots, leaves): not constant-time; natively in Node, where logs are compared. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  if (nativeBuffer !== undefined) return nativeBuffer.compare(a, b) === 0
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!
  return diff === 0
}
