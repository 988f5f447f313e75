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
  portablePrimitives,
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

/** The same JWE with alg and epk repeated in each recipient header, as jose writes it. */
function perRecipient({ unprotected, ...jwe }: Jwe): Jwe {
  return {
    ...jwe,
    recipients: jwe.recipients.map((recipient) => ({
      ...recipient,
      header: { ...unprotected, ...recipient.header },
    })),
  }
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
      for (const person of chosen) {
        assert.deepEqual(new Opener(person.secretKey).open(jwe), plaintext)
        assert.deepEqual(new Opener(person.secretKey).open(perRecipient(jwe)), plaintext)
      }
      assert.equal(new Opener(stranger.secretKey).open(jwe), null)
      assert.equal(new Opener(stranger.secretKey).unwrap(jwe), null)
      assert.deepEqual(openWithContentKey(jwe, cek), plaintext)
    })
  }

  test('the shared unprotected header carries alg and the sender key; a recipient header only names the recipient', () => {
    const { jwe } = new Sealer(node).seal(plaintext, [recipientOf(people[0]!), recipientOf(people[1]!)])
    assert.deepEqual(jwe.unprotected, { alg: 'ECDH-ES+A256KW', epk: publicJwk('X25519', node.publicKey) })
    assert.deepEqual(
      jwe.recipients.map((recipient) => recipient.header),
      people.slice(0, 2).map((person) => ({ kid: keyId(publicJwk('X25519', person.publicKey)) })),
    )
    assert.equal(new Opener(people[0]!.secretKey).kid, jwe.recipients[0]!.header.kid)
    assert.deepEqual(validateJwe(JSON.parse(JSON.stringify(perRecipient(jwe)))), perRecipient(jwe))
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
    // No JWE around them: each entry carries its own alg and epk.
    assert.deepEqual(added[0]!.header, {
      alg: 'ECDH-ES+A256KW',
      kid: keyId(publicJwk('X25519', people[1]!.publicKey)),
      epk: publicJwk('X25519', node.publicKey),
    })
    assert.equal(new Opener(people[1]!.secretKey).open(jwe), null)
    const widened = perRecipient({ ...jwe, recipients: [...jwe.recipients, ...added] })
    assert.deepEqual(new Opener(people[1]!.secretKey).open(widened), plaintext)
    assert.deepEqual(new Opener(people[1]!.secretKey).unwrap({ recipients: added }), cek)
    // Entries with their own alg and epk do not go next to a shared one.
    rejects('jwe_malformed', () => new Opener(people[1]!.secretKey).unwrap({ ...jwe, recipients: added }))
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
      assert.deepEqual(result.sharedUnprotectedHeader, jwe.unprotected)
      assert.deepEqual(result.unprotectedHeader, { kid: keyId(publicJwk('X25519', person.publicKey)) })
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
    assert.equal(jwe.unprotected, undefined)
    assert.notEqual(jwe.recipients[0]!.header.epk?.x, jwe.recipients[1]!.header.epk?.x)
    for (const person of chosen) assert.deepEqual(new Opener(person.secretKey).open(jwe), plaintext)
    assert.equal(new Opener(stranger.secretKey).open(jwe), null)
  })

  test('a jose JWE with only alg shared and an epk per recipient is not this profile', async () => {
    const chosen = people.slice(0, 2)
    const encrypt = new GeneralEncrypt(plaintext)
      .setProtectedHeader({ enc: 'A256GCM' })
      .setSharedUnprotectedHeader({ alg: 'ECDH-ES+A256KW' })
    for (const person of chosen) {
      const key = await importJWK(publicJwk('X25519', person.publicKey), 'ECDH-ES+A256KW')
      encrypt.addRecipient(key).setUnprotectedHeader({ kid: keyId(publicJwk('X25519', person.publicKey)) })
    }
    const jwe = await encrypt.encrypt()
    assert.deepEqual(jwe.unprotected, { alg: 'ECDH-ES+A256KW' })
    for (const recipient of jwe.recipients)
      assert.deepEqual(Object.keys(recipient.header ?? {}).sort(), ['epk', 'kid'])
    // Only two layouts are accepted: alg and epk both shared, or both in every recipient header.
    rejects('jwe_malformed', () => validateJwe(jwe))
    rejects('jwe_malformed', () => new Opener(chosen[0]!.secretKey).open(jwe as unknown as Jwe))
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
        (t) => (t.unprotected = { ...t.unprotected!, epk: publicJwk('X25519', stranger.publicKey) }),
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

  function refusedAsMalformed(cases: [string, unknown][]) {
    for (const [name, value] of cases) {
      assert.throws(
        () => validateJwe(JSON.parse(JSON.stringify(value) ?? 'null')),
        (error: unknown) =>
          error instanceof VmError && error.code === 'jwe_malformed' && error.status === 400,
        name,
      )
    }
  }

  test('validateJwe refuses what is not this profile', () => {
    // Recipient headers with alg, kid and epk: every member of the profile checked in one place.
    const full = perRecipient(jwe)
    const recipient = full.recipients[0]!
    const header = (changes: Record<string, unknown>) => ({
      ...recipient,
      header: { ...recipient.header, ...changes },
    })
    const epk = (changes: Record<string, unknown>) => header({ epk: { ...recipient.header.epk, ...changes } })
    const protectedOf = (json: string) => ({ ...full, protected: toBase64Url(utf8(json)) })
    refusedAsMalformed([
      ['not an object', 'jwe'],
      ['null', null],
      ['an array', [full]],
      ['an extra member', { ...full, aad: 'AA' }],
      ['unprotected empty', { ...full, unprotected: {} }],
      ['no tag', { ...full, tag: undefined }],
      ['protected not base64url', { ...full, protected: 'eyJ+' }],
      ['protected not JSON', protectedOf('enc')],
      ['protected an array', protectedOf('["A256GCM"]')],
      ['enc A128GCM', protectedOf('{"enc":"A128GCM"}')],
      ['zip', protectedOf('{"enc":"A256GCM","zip":"DEF"}')],
      ['crit', protectedOf('{"enc":"A256GCM","crit":["b64"]}')],
      ['alg in protected', protectedOf('{"enc":"A256GCM","alg":"ECDH-ES+A256KW"}')],
      ['no recipients', { ...full, recipients: [] }],
      ['recipients not a list', { ...full, recipients: recipient }],
      [
        'too many recipients',
        { ...full, recipients: Array.from({ length: jweRecipientsMax + 1 }, () => recipient) },
      ],
      ['duplicate kid', { ...full, recipients: [recipient, recipient] }],
      ['alg ECDH-ES', { ...full, recipients: [header({ alg: 'ECDH-ES' })] }],
      ['alg RSA-OAEP', { ...full, recipients: [header({ alg: 'RSA-OAEP' })] }],
      ['no kid', { ...full, recipients: [header({ kid: undefined })] }],
      ['empty kid', { ...full, recipients: [header({ kid: '' })] }],
      ['extra header member', { ...full, recipients: [header({ apu: 'AA' })] }],
      ['epk not OKP', { ...full, recipients: [epk({ kty: 'EC' })] }],
      ['epk Ed25519', { ...full, recipients: [epk({ crv: 'Ed25519' })] }],
      ['epk with d', { ...full, recipients: [epk({ d: recipient.header.epk?.x })] }],
      ['epk 31 bytes', { ...full, recipients: [epk({ x: toBase64Url(new Uint8Array(31)) })] }],
      ['epk padded', { ...full, recipients: [epk({ x: `${recipient.header.epk?.x}=` })] }],
      [
        'encrypted_key short',
        { ...full, recipients: [{ ...recipient, encrypted_key: toBase64Url(new Uint8Array(32)) }] },
      ],
      ['encrypted_key a number', { ...full, recipients: [{ ...recipient, encrypted_key: 7 }] }],
      ['iv 16 bytes', { ...full, iv: toBase64Url(new Uint8Array(16)) }],
      ['tag 12 bytes', { ...full, tag: toBase64Url(new Uint8Array(12)) }],
      ['ciphertext standard base64', { ...full, ciphertext: '+/+/' }],
      ['ciphertext over 1 MiB', { ...full, ciphertext: toBase64Url(new Uint8Array(1024 * 1024 + 1)) }],
    ])
    assert.deepEqual(validateJwe({ ...jwe, ciphertext: toBase64Url(new Uint8Array(1024 * 1024)) }).iv, jwe.iv)
  })

  test('validateJwe takes alg and epk shared by all or in every recipient header, nothing in between', () => {
    const shared = jwe.unprotected!
    const [first, second] = jwe.recipients as [JweRecipient, JweRecipient]
    const full = perRecipient(jwe)
    const { kid } = first.header
    const firstHeader = (header: Record<string, unknown>) => ({
      ...jwe,
      recipients: [{ ...first, header }, second],
    })
    refusedAsMalformed([
      ['unprotected null', { ...jwe, unprotected: null }],
      ['unprotected a string', { ...jwe, unprotected: shared.alg }],
      ['unprotected an array', { ...jwe, unprotected: [shared] }],
      ['unprotected empty', { ...jwe, unprotected: {} }],
      ['unprotected without epk', { ...jwe, unprotected: { alg: shared.alg } }],
      ['unprotected without alg', { ...jwe, unprotected: { epk: shared.epk } }],
      ['unprotected with an unknown member', { ...jwe, unprotected: { ...shared, cty: 'json' } }],
      ['unprotected with kid', { ...jwe, unprotected: { ...shared, kid } }],
      ['unprotected with enc, also protected', { ...jwe, unprotected: { ...shared, enc: 'A256GCM' } }],
      ['unprotected alg ECDH-ES', { ...jwe, unprotected: { ...shared, alg: 'ECDH-ES' } }],
      [
        'unprotected epk Ed25519',
        { ...jwe, unprotected: { ...shared, epk: { ...shared.epk, crv: 'Ed25519' } } },
      ],
      [
        'unprotected epk with d',
        { ...jwe, unprotected: { ...shared, epk: { ...shared.epk, d: shared.epk.x } } },
      ],
      [
        'alg in protected and unprotected',
        { ...jwe, protected: toBase64Url(utf8('{"enc":"A256GCM","alg":"ECDH-ES+A256KW"}')) },
      ],
      ['alg in unprotected and a recipient header', firstHeader({ alg: shared.alg, kid })],
      ['epk in unprotected and a recipient header', firstHeader({ kid, epk: shared.epk })],
      ['both in unprotected and a recipient header', { ...jwe, recipients: [full.recipients[0], second] }],
      ['both in unprotected and every recipient header', { ...jwe, recipients: full.recipients }],
      ['an unknown member next to kid', firstHeader({ kid, apu: 'AA' })],
      ['no kid', firstHeader({})],
      [
        'neither in unprotected nor in a recipient header',
        { ...full, recipients: [full.recipients[0], second] },
      ],
      // Each of these splits alg and epk between the headers without repeating one.
      [
        'unprotected alg, recipient kid and epk',
        {
          ...jwe,
          unprotected: { alg: shared.alg },
          recipients: [{ ...first, header: { kid, epk: shared.epk } }],
        },
      ],
      [
        'unprotected epk, recipient alg and kid',
        {
          ...jwe,
          unprotected: { epk: shared.epk },
          recipients: [{ ...first, header: { alg: shared.alg, kid } }],
        },
      ],
    ])
  })

  test('unwrap checks the entry it uses, with the headers it is given', () => {
    const entry = perRecipient(jwe).recipients[0]!
    const bad = { ...entry, encrypted_key: 'AAAA' }
    rejects('jwe_malformed', () => opener.unwrap({ recipients: [bad] }))
    const lowOrder = publicJwk('X25519', new Uint8Array(32))
    rejects('jwe_malformed', () =>
      opener.unwrap({ recipients: [{ ...entry, header: { ...entry.header, epk: lowOrder } }] }),
    )
    rejects('jwe_malformed', () =>
      opener.unwrap({ ...jwe, unprotected: { ...jwe.unprotected!, epk: lowOrder } }),
    )
    // A recipient header with kid only, and nothing shared to complete it.
    rejects('jwe_malformed', () => opener.unwrap({ recipients: jwe.recipients }))
    assert.deepEqual(opener.unwrap(jwe), cek)
    assert.deepEqual(opener.unwrap({ recipients: [entry] }), cek)
    assert.equal(
      fromUtf8(
        portablePrimitives.gcmDecrypt(
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
