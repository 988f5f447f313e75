/**
 * Keys from a password ("crypto password"): a person can verify from any device with nothing but their
 * person id and password. The salt is per person and derivable anywhere, so no stored state is needed;
 * scrypt's cost is what stands between a leaked public key and a guessed password.
 */
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { scryptAsync } from '@noble/hashes/scrypt.js'
import { utf8 } from './encoding.js'
import { VmError } from './errors.js'
import type { SigningKeyPair } from './keys.js'

export const passwordLengthMin = 12
export const passwordLengthMax = 1024
/** 128 MiB and about a second per derivation: one person, one device, rarely; a guesser pays it every time. */
export const passwordKdf = { name: 'scrypt', N: 2 ** 17, r: 8, p: 1, dkLen: 64 } as const

export async function derivePasswordKeys(
  password: string,
  personId: string,
): Promise<{ signing: SigningKeyPair; encryption: SigningKeyPair }> {
  if (!/^[0-9a-f]{32}$/.test(personId))
    throw new VmError('invalid_person', 'a person id is 32 lowercase hex digits', { status: 400 })
  // NFKC so that the same password typed on another keyboard or system gives the same keys.
  const normalized = password.normalize('NFKC')
  const length = [...normalized].length // code points, not UTF-16 units
  if (length < passwordLengthMin || length > passwordLengthMax)
    throw new VmError(
      'password_invalid',
      `a password has ${passwordLengthMin} to ${passwordLengthMax} characters`,
      { status: 400 },
    )
  const { N, r, p, dkLen } = passwordKdf
  const derived = await scryptAsync(utf8(normalized), utf8(`vmoney/password-key/v1/${personId}`), {
    N,
    r,
    p,
    dkLen,
  })
  const signingSecret = derived.slice(0, 32)
  const encryptionSecret = derived.slice(32, 64)
  derived.fill(0)
  return {
    signing: { secretKey: signingSecret, publicKey: ed25519.getPublicKey(signingSecret) },
    // x25519 clamps the secret itself (RFC 7748 §5), so any 32 bytes are a valid key.
    encryption: { secretKey: encryptionSecret, publicKey: x25519.getPublicKey(encryptionSecret) },
  }
}
