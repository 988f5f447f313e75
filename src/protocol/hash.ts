import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'

export const hashSize = 32

interface NativeHash {
  update(data: Uint8Array): NativeHash
  digest(): Uint8Array
}
/**
 * Node's native SHA-256, when the code runs in Node (20.16 and later): a log is hashed leaf by leaf, and
 * native hashing is several times faster. Detected at run time, so browsers use the portable one.
 */
const nativeCrypto = (
  globalThis as {
    process?: { getBuiltinModule?: (id: string) => { createHash(algorithm: string): NativeHash } | undefined }
  }
).process?.getBuiltinModule?.('node:crypto')

export function sha256(...parts: readonly Uint8Array[]): Uint8Array {
  if (nativeCrypto !== undefined) {
    const hasher = nativeCrypto.createHash('sha256')
    for (const part of parts) hasher.update(part)
    const digest = hasher.digest()
    return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength)
  }
  if (parts.length === 1) return nobleSha256(parts[0]!)
  const hasher = nobleSha256.create()
  for (const part of parts) hasher.update(part)
  return hasher.digest()
}
