import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { GeneralEncrypt, type GeneralJWE, generalDecrypt, importJWK } from 'jose'
import { fromBase64Url, fromUtf8, toBase64Url, utf8 } from './encoding.js'
import {
  contentKeySize,
  encryptionRecipient,
  type Jwe,
  type JweRecipient,
  jweRecipientsMax,
  Opener,
  openWithContentKey,
  portableAes,
  Sealer,
  validateJwe,
} from './envelope.js'
import { VmError } from './errors.js'
import { generateEncryptionKey, keyId, privateJwk, publicJwk, type SigningKeyPair } from './keys.js'

const node = generateEncryptionKey()
const people = Array.from({ length: 6 }, () => generateEncryptionKey())
const stranger = generateEncryptionKey()
const recipientOf = (pair: SigningKeyPair) => encryptionRecipient(pair.publicKey)
const plaintext = utf8('{"amount":"12.50","memo":"rent"}')

function rejects(code: string, run: () => unknown) {
  assert.throws(run, (error: unknown) => error instanceof VmError && error.code === code)
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends object ? Mutable<T[K]> : T[K] }
type Tampered = Mutable<Omit<Jwe, 'recipients'>> & { recipients: Mutable<JweRecipient>[] }

/** A deep, mutable copy to tamper with. */
function copy(jwe: Jwe): Tampered {
  return structuredClone(jwe) as Tampered
}

/** Flips one bit of a base64url member's bytes. */
function flip(text: string, index = 0): string {
  const bytes = fromBase64Url(text)
  bytes[index]! ^= 1
  return toBase64Url(bytes)
}

describe('Sealer and Opener', () => {
  for (let count = 1; count <= people.length; count++) {
    test(`round trip for ${count} recipient(s)`, () => {
      const sealer = new Sealer(node)
      const chosen = people.slice(0, count)
      const { jwe, cek } = sealer.seal(plaintext, chosen.map(recipientOf))
      assert.equal(cek.length, contentKeySize)
      assert.equal(jwe.recipients.length, count)
      assert.equal(jwe.protected, 'eyJlbmMiOiJBMjU2R0NNIn0')
      assert.deepEqual(validateJwe(JSON.parse(JSON.stringify(jwe))), jwe)
      for (const person of chosen) assert.deepEqual(new Opener(person.secretKey).open(jwe), plaintext)
      assert.equal(new Opener(stranger.secretKey).open(jwe), null)
      assert.equal(new Opener(stranger.secretKey).unwrap(jwe.recipients), null)
      assert.deepEqual(openWithContentKey(jwe, cek), plaintext)
    })
  }

  test('the recipient header names the recipient and carries the sender key', () => {
    const { jwe } = new Sealer(node).seal(plaintext, [recipientOf(people[0]!)])
    assert.deepEqual(jwe.recipients[0]!.header, {
      alg: 'ECDH-ES+A256KW',
      kid: keyId(publicJwk('X25519', people[0]!.publicKey)),
      epk: publicJwk('X25519', node.publicKey),
    })
    assert.equal(new Opener(people[0]!.secretKey).kid, jwe.recipients[0]!.header.kid)
  })

  test('duplicates by kid are removed, order kept; no recipient is refused', () => {
    const sealer = new Sealer(node)
    const [a, b] = [recipientOf(people[0]!), recipientOf(people[1]!)]
    const { jwe } = sealer.seal(plaintext, [b, a, b, a])
    assert.deepEqual(
      jwe.recipients.map((recipient) => recipient.header.kid),
      [b.kid, a.kid],
    )
    rejects('no_recipients', () => sealer.seal(plaintext, []))
    rejects('invalid_key', () => encryptionRecipient(new Uint8Array(31)))
    // A low-order point would give an all-zero shared secret.
    rejects('invalid_key', () => sealer.seal(plaintext, [encryptionRecipient(new Uint8Array(32))]))
  })

  test('an empty plaintext round-trips', () => {
    const { jwe } = new Sealer(node).seal(new Uint8Array(0), [recipientOf(people[0]!)])
    assert.deepEqual(new Opener(people[0]!.secretKey).open(jwe), new Uint8Array(0))
  })

  test('wrapFor discloses an old envelope to a new grantee', () => {
    const sealer = new Sealer(node)
    const { jwe, cek } = sealer.seal(plaintext, [recipientOf(people[0]!)])
    const added = sealer.wrapFor(cek, [recipientOf(people[1]!)])
    assert.equal(added.length, 1)
    assert.equal(new Opener(people[1]!.secretKey).open(jwe), null)
    const widened: Jwe = { ...jwe, recipients: [...jwe.recipients, ...added] }
    assert.deepEqual(new Opener(people[1]!.secretKey).open(widened), plaintext)
    assert.deepEqual(new Opener(people[1]!.secretKey).unwrap(added), cek)
    rejects('invalid_key', () => sealer.wrapFor(cek.subarray(1), [recipientOf(people[1]!)]))
  })

  test('the KEK cache: one X25519 agreement per recipient, bounded', () => {
    const sealer = new Sealer(node)
    const [a, b] = [recipientOf(people[0]!), recipientOf(people[1]!)]
    const first = sealer.seal(plaintext, [a])
    sealer.seal(plaintext, [a])
    assert.equal(sealer.agreements, 1)
    sealer.seal(plaintext, [a, b])
    sealer.wrapFor(first.cek, [b])
    assert.equal(sealer.agreements, 2)

    const opener = new Opener(people[0]!.secretKey)
    opener.open(first.jwe)
    opener.open(sealer.seal(plaintext, [a]).jwe)
    assert.equal(opener.agreements, 1)

    const small = new Sealer(node, { kekCacheMax: 1 })
    for (const recipient of [a, b, a]) small.seal(plaintext, [recipient])
    assert.equal(small.agreements, 3)
    const none = new Sealer(node, { kekCacheMax: 0 })
    for (const recipient of [a, a]) none.seal(plaintext, [recipient])
    assert.equal(none.agreements, 2)
  })
})

describe('interop with jose', () => {
  test('jose decrypts what Sealer produced, for each recipient', async () => {
    const chosen = people.slice(0, 3)
    const { jwe } = new Sealer(node).seal(plaintext, chosen.map(recipientOf))
    for (const person of chosen) {
      const key = await importJWK(privateJwk('X25519', person), 'ECDH-ES+A256KW')
      const result = await generalDecrypt(structuredClone(jwe) as unknown as GeneralJWE, key)
      assert.deepEqual(new Uint8Array(result.plaintext), plaintext)
      assert.deepEqual(result.protectedHeader, { enc: 'A256GCM' })
    }
    const outsider = await importJWK(privateJwk('X25519', stranger), 'ECDH-ES+A256KW')
    await assert.rejects(generalDecrypt(structuredClone(jwe) as unknown as GeneralJWE, outsider))
  })

  test('Opener opens what jose produced (a fresh epk per recipient, its own protected header)', async () => {
    const chosen = people.slice(0, 2)
    const encrypt = new GeneralEncrypt(plaintext).setProtectedHeader({ enc: 'A256GCM', cty: 'json' })
    for (const person of chosen) {
      const key = await importJWK(publicJwk('X25519', person.publicKey), 'ECDH-ES+A256KW')
      encrypt
        .addRecipient(key)
        .setUnprotectedHeader({ alg: 'ECDH-ES+A256KW', kid: keyId(publicJwk('X25519', person.publicKey)) })
    }
    const jwe = validateJwe(await encrypt.encrypt())
    assert.notEqual(jwe.recipients[0]!.header.epk.x, jwe.recipients[1]!.header.epk.x)
    for (const person of chosen) assert.deepEqual(new Opener(person.secretKey).open(jwe), plaintext)
    assert.equal(new Opener(stranger.secretKey).open(jwe), null)
  })
})

describe('tampering and malformed input', () => {
  const person = people[0]!
  const opener = new Opener(person.secretKey)
  const { jwe, cek } = new Sealer(node).seal(plaintext, [recipientOf(person), recipientOf(people[1]!)])

  test('a flipped bit is refused', () => {
    const cases: [string, (tampered: Tampered) => void, string][] = [
      ['ciphertext', (t) => (t.ciphertext = flip(t.ciphertext, 5)), 'decryption_failed'],
      ['tag', (t) => (t.tag = flip(t.tag, 15)), 'decryption_failed'],
      ['iv', (t) => (t.iv = flip(t.iv)), 'decryption_failed'],
      [
        'encrypted_key',
        (t) => (t.recipients[0]!.encrypted_key = flip(t.recipients[0]!.encrypted_key, 20)),
        'decryption_failed',
      ],
      [
        'epk',
        (t) => (t.recipients[0]!.header.epk = publicJwk('X25519', stranger.publicKey)),
        'decryption_failed',
      ],
      [
        'protected, still valid',
        (t) => (t.protected = toBase64Url(utf8('{"enc":"A256GCM","cty":"x"}'))),
        'decryption_failed',
      ],
      ['protected, broken', (t) => (t.protected = flip(t.protected, 2)), 'jwe_malformed'],
    ]
    for (const [name, tamper, code] of cases) {
      const tampered = copy(jwe)
      tamper(tampered)
      assert.throws(
        () => opener.open(tampered),
        (error: unknown) => error instanceof VmError && error.code === code,
        name,
      )
    }
    const tampered = copy(jwe)
    tampered.ciphertext = flip(tampered.ciphertext)
    rejects('decryption_failed', () => openWithContentKey(tampered, cek))
    rejects('decryption_failed', () => openWithContentKey(jwe, new Uint8Array(contentKeySize)))
    rejects('decryption_failed', () => openWithContentKey(jwe, cek.subarray(1)))
  })

  test('validateJwe refuses what is not this profile', () => {
    const recipient = jwe.recipients[0]!
    const header = (changes: Record<string, unknown>) => ({
      ...recipient,
      header: { ...recipient.header, ...changes },
    })
    const epk = (changes: Record<string, unknown>) => header({ epk: { ...recipient.header.epk, ...changes } })
    const protectedOf = (json: string) => ({ ...jwe, protected: toBase64Url(utf8(json)) })
    const cases: [string, unknown][] = [
      ['not an object', 'jwe'],
      ['null', null],
      ['an array', [jwe]],
      ['an extra member', { ...jwe, aad: 'AA' }],
      ['unprotected', { ...jwe, unprotected: {} }],
      ['no tag', { ...jwe, tag: undefined }],
      ['protected not base64url', { ...jwe, protected: 'eyJ+' }],
      ['protected not JSON', protectedOf('enc')],
      ['protected an array', protectedOf('["A256GCM"]')],
      ['enc A128GCM', protectedOf('{"enc":"A128GCM"}')],
      ['zip', protectedOf('{"enc":"A256GCM","zip":"DEF"}')],
      ['crit', protectedOf('{"enc":"A256GCM","crit":["b64"]}')],
      ['alg in protected', protectedOf('{"enc":"A256GCM","alg":"ECDH-ES+A256KW"}')],
      ['no recipients', { ...jwe, recipients: [] }],
      ['recipients not a list', { ...jwe, recipients: recipient }],
      [
        'too many recipients',
        { ...jwe, recipients: Array.from({ length: jweRecipientsMax + 1 }, () => recipient) },
      ],
      ['duplicate kid', { ...jwe, recipients: [recipient, recipient] }],
      ['alg ECDH-ES', { ...jwe, recipients: [header({ alg: 'ECDH-ES' })] }],
      ['alg RSA-OAEP', { ...jwe, recipients: [header({ alg: 'RSA-OAEP' })] }],
      ['no kid', { ...jwe, recipients: [header({ kid: undefined })] }],
      ['empty kid', { ...jwe, recipients: [header({ kid: '' })] }],
      ['extra header member', { ...jwe, recipients: [header({ apu: 'AA' })] }],
      ['epk not OKP', { ...jwe, recipients: [epk({ kty: 'EC' })] }],
      ['epk Ed25519', { ...jwe, recipients: [epk({ crv: 'Ed25519' })] }],
      ['epk with d', { ...jwe, recipients: [epk({ d: recipient.header.epk.x })] }],
      ['epk 31 bytes', { ...jwe, recipients: [epk({ x: toBase64Url(new Uint8Array(31)) })] }],
      ['epk padded', { ...jwe, recipients: [epk({ x: `${recipient.header.epk.x}=` })] }],
      [
        'encrypted_key short',
        { ...jwe, recipients: [{ ...recipient, encrypted_key: toBase64Url(new Uint8Array(32)) }] },
      ],
      ['encrypted_key a number', { ...jwe, recipients: [{ ...recipient, encrypted_key: 7 }] }],
      ['iv 16 bytes', { ...jwe, iv: toBase64Url(new Uint8Array(16)) }],
      ['tag 12 bytes', { ...jwe, tag: toBase64Url(new Uint8Array(12)) }],
      ['ciphertext standard base64', { ...jwe, ciphertext: '+/+/' }],
      ['ciphertext over 1 MiB', { ...jwe, ciphertext: toBase64Url(new Uint8Array(1024 * 1024 + 1)) }],
    ]
    for (const [name, value] of cases) {
      assert.throws(
        () => validateJwe(JSON.parse(JSON.stringify(value) ?? 'null')),
        (error: unknown) =>
          error instanceof VmError && error.code === 'jwe_malformed' && error.status === 400,
        name,
      )
    }
    assert.deepEqual(validateJwe({ ...jwe, ciphertext: toBase64Url(new Uint8Array(1024 * 1024)) }).iv, jwe.iv)
  })

  test('unwrap checks the entry it uses', () => {
    const entry = jwe.recipients[0]!
    const bad = { ...entry, encrypted_key: 'AAAA' }
    rejects('jwe_malformed', () => opener.unwrap([bad]))
    const lowOrder = { ...entry, header: { ...entry.header, epk: publicJwk('X25519', new Uint8Array(32)) } }
    rejects('jwe_malformed', () => opener.unwrap([lowOrder]))
    assert.deepEqual(opener.unwrap(jwe.recipients), cek)
    assert.equal(
      fromUtf8(
        portableAes.gcmDecrypt(
          cek,
          fromBase64Url(jwe.iv),
          utf8(jwe.protected),
          fromBase64Url(jwe.ciphertext),
          fromBase64Url(jwe.tag),
        ),
      ),
      fromUtf8(plaintext),
    )
  })
})
