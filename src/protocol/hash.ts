import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'

export const hashSize = 32

interface NativeHash {
  update(data: Uint8Array): NativeHash
  digest(): Uint8Array
}
interface NativeCrypto {
  createHash(algorithm: string): NativeHash
  /** One-shot hashing (Node 20.12 and later): no hasher object per call. */
  hash?(algorithm: string, data: Uint8Array, outputEncoding: 'buffer'): Uint8Array
}
/**
 * Node's native SHA-256, when the code runs in Node (20.16 and later): a log is hashed leaf by leaf, and
 * native hashing is several times faster. Detected at run time, so browsers use the portable one.
 */
const nativeCrypto = (
  globalThis as { process?: { getBuiltinModule?: (id: string) => NativeCrypto | undefined } }
).process?.getBuiltinModule?.('node:crypto')

/** Small inputs (leaves, tree nodes) are joined here and hashed in one native call. */
const scratch = new Uint8Array(16 * 1024)

export function sha256(...parts: readonly Uint8Array[]): Uint8Array {
  if (nativeCrypto !== undefined) {
    let length = 0
    for (const part of parts) length += part.length
    let digest: Uint8Array
    if (nativeCrypto.hash !== undefined && length <= scratch.length) {
      let offset = 0
      for (const part of parts) {
        scratch.set(part, offset)
        offset += part.length
      }
      digest = nativeCrypto.hash('sha256', scratch.subarray(0, length), 'buffer')
    } else {
      const hasher = nativeCrypto.createHash('sha256')
      for (const part of parts) hasher.update(part)
      digest = hasher.digest()
    }
    return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength)
  }
  if (parts.length === 1) return nobleSha256(parts[0]!)
  const hasher = nobleSha256.create()
  for (const part of parts) hasher.update(part)
  return hasher.digest()
}
