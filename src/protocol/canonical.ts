import canonicalizeModule from 'canonicalize'
import { utf8 } from './encoding.js'
import { VmError } from './errors.js'

// The package is CommonJS whose export is the function itself; its typings claim a default export.
const canonicalizeJson = canonicalizeModule as unknown as (value: unknown) => string | undefined

/** RFC 8785 JSON Canonicalization Scheme: the only bytes anything here is ever signed over. */
export function canonicalize(value: unknown): string {
  const text = canonicalizeJson(value)
  if (text === undefined) throw new VmError('invalid_schema', 'value has no JSON form')
  return text
}

export function canonicalBytes(value: unknown): Uint8Array {
  return utf8(canonicalize(value))
}
