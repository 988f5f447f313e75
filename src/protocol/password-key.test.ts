import assert from 'node:assert/strict'
import { scryptSync } from 'node:crypto'
import { describe, test } from 'node:test'
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { utf8 } from './encoding.js'
import { encryptionRecipient, Opener, Sealer } from './envelope.js'
import { VmError } from './errors.js'
import { generateEncryptionKey, sign, verify } from './keys.js'
import { derivePasswordKeys, passwordKdf, passwordLengthMax, passwordLengthMin } from './password-key.js'

const person = '0123456789abcdef0123456789abcdef'
const other = 'fedcba9876543210fedcba9876543210'
const password = 'correct horse battery staple'

async function refused(code: string, run: () => Promise<unknown>) {
  await assert.rejects(
    run,
    (error: unknown) => error instanceof VmError && error.code === code && error.status === 400,
  )
}

describe('derivePasswordKeys', () => {
  test('deterministic, equal to node:crypto scrypt, and usable keys', async () => {
    const keys = await derivePasswordKeys(password, person)
    assert.deepEqual(await derivePasswordKeys(password, person), keys)

    const { N, r, p, dkLen } = passwordKdf
    const expected = scryptSync(utf8(password), utf8(`vmoney/password-key/v1/${person}`), dkLen, {
      N,
      r,
      p,
      maxmem: 256 * 1024 * 1024,
    })
    assert.deepEqual(keys.signing.secretKey, new Uint8Array(expected.subarray(0, 32)))
    assert.deepEqual(keys.encryption.secretKey, new Uint8Array(expected.subarray(32)))
    assert.deepEqual(keys.signing.publicKey, ed25519.getPublicKey(expected.subarray(0, 32)))
    assert.deepEqual(keys.encryption.publicKey, x25519.getPublicKey(expected.subarray(32)))

    const message = utf8('hello')
    assert.ok(verify(sign(message, keys.signing.secretKey), message, keys.signing.publicKey))
    const { jwe } = new Sealer(generateEncryptionKey()).seal(message, [
      encryptionRecipient(keys.encryption.publicKey),
    ])
    assert.deepEqual(new Opener(keys.encryption.secretKey).open(jwe), message)
  })

  test('another person or password gives other keys; NFKC makes equivalent spellings equal', async () => {
    const keys = await derivePasswordKeys(password, person)
    const otherPerson = await derivePasswordKeys(password, other)
    const otherPassword = await derivePasswordKeys(`${password}!`, person)
    for (const different of [otherPerson, otherPassword]) {
      assert.notDeepEqual(different.signing.publicKey, keys.signing.publicKey)
      assert.notDeepEqual(different.encryption.publicKey, keys.encryption.publicKey)
    }
    // U+FB01 (the "fi" ligature) and fullwidth letters normalise to plain ASCII.
    assert.deepEqual(
      await derivePasswordKeys('\ufb01ne \uff21\uff22\uff23 password', person),
      await derivePasswordKeys('fine ABC password', person),
    )
  })

  test('bad inputs are refused', async () => {
    await refused('password_invalid', () => derivePasswordKeys('x'.repeat(passwordLengthMin - 1), person))
    await refused('password_invalid', () => derivePasswordKeys('x'.repeat(passwordLengthMax + 1), person))
    // Eleven characters, though twenty-two UTF-16 units.
    await refused('password_invalid', () => derivePasswordKeys('😀'.repeat(passwordLengthMin - 1), person))
    for (const id of [
      '',
      person.toUpperCase(),
      person.slice(1),
      `${person}0`,
      `${person.slice(1)}g`,
      ` ${person.slice(1)}`,
    ])
      await refused('invalid_person', () => derivePasswordKeys(password, id))
  })
})
