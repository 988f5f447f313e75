import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'

export const hashSize = 32

export function sha256(...parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return nobleSha256(parts[0]!)
  const hasher = nobleSha256.create()
  for (const part of parts) hasher.update(part)
  return hasher.digest()
}
