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
interface Libsodium {
  crypto_hash_sha256(out: Uint8Array, input: Uint8Array): void
}
interface NodeProcess {
  getBuiltinModule?: (id: string) => unknown
}

const nodeProcess = (globalThis as { process?: NodeProcess }).process
/** Node's OpenSSL, when the code runs in Node (20.16 and later); detected at run time, so browsers never load it. */
const nativeCrypto = nodeProcess?.getBuiltinModule?.('node:crypto') as NativeCrypto | undefined

/**
 * libsodium (sodium-native, which the servers depend on), when the code runs in Node and finds it: it
 * hashes into memory the caller gives. A log hashes a tree node per leaf, and for 65 bytes a digest
 * allocated per call (as node:crypto returns) costs twice the hashing. OpenSSL's SHA extensions win on
 * inputs above `libsodiumInputBytesMax`, such as leaves.
 */
function loadLibsodium(): Libsodium | undefined {
  try {
    const module = nodeProcess?.getBuiltinModule?.('node:module') as
      | { createRequire(from: string): (id: string) => unknown }
      | undefined
    return module?.createRequire(import.meta.url)('sodium-native') as Libsodium | undefined
  } catch {
    return undefined
  }
}
const libsodium = loadLibsodium()
const libsodiumInputBytesMax = 512

/** Small inputs (leaves, tree nodes) are joined here and hashed in one native call. */
const scratch = new Uint8Array(16 * 1024)
/** Digests are cut from slabs: one allocation per 256 digests. */
const digestSlabBytes = 8 * 1024
let digestSlab = new Uint8Array(digestSlabBytes)
let digestSlabUsed = digestSlabBytes

export function sha256(...parts: readonly Uint8Array[]): Uint8Array {
  let length = 0
  for (const part of parts) length += part.length
  if (nativeCrypto !== undefined && length <= scratch.length) {
    let offset = 0
    for (const part of parts) {
      scratch.set(part, offset)
      offset += part.length
    }
    const input = scratch.subarray(0, length)
    if (libsodium !== undefined && length <= libsodiumInputBytesMax) {
      if (digestSlabUsed === digestSlabBytes) {
        digestSlab = new Uint8Array(digestSlabBytes)
        digestSlabUsed = 0
      }
      const digest = digestSlab.subarray(digestSlabUsed, digestSlabUsed + hashSize)
      digestSlabUsed += hashSize
      libsodium.crypto_hash_sha256(digest, input)
      return digest
    }
    if (nativeCrypto.hash !== undefined) {
      const digest = nativeCrypto.hash('sha256', input, 'buffer')
      return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength)
    }
  }
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
