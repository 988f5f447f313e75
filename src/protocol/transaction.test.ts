import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { canonicalize } from './canonical.js'
import { generateSigningKey, keyId, publicJwk } from './keys.js'
import { encodeLeafText } from './leaf.js'
import {
  encodeSignedTransaction,
  idPattern,
  newId,
  signTransaction,
  validateSignedTransaction,
} from './transaction.js'

const key = generateSigningKey()
const signer = keyId(publicJwk('Ed25519', key.publicKey))

test('the fast encodings equal RFC 8785 of the whole object', () => {
  fc.assert(
    fc.property(
      fc.string({ maxLength: 256 }),
      fc.bigInt({ min: 1n, max: (1n << 128n) - 1n }),
      (memo, amount) => {
        const signed = signTransaction(
          {
            v: 1,
            id: newId(),
            node: signer,
            created: '2026-11-23T10:00:00.000Z',
            signer,
            type: 'transfer',
            debit: newId(),
            credit: newId(),
            amount: amount.toString(),
            asset: 'bank:EUR',
            memo,
          },
          key.secretKey,
        )
        const encoded = encodeSignedTransaction(signed)
        assert.equal(encoded.signedText, canonicalize(signed))
        assert.equal(new TextDecoder().decode(encoded.txBytes), canonicalize(signed.tx))
        const time = new Date().toISOString()
        assert.equal(encodeLeafText(time, encoded.signedText), canonicalize({ v: 1, time, signed }))
      },
    ),
  )
})

test('validation refuses unknown types, unknown fields and bad amounts', () => {
  const signed = signTransaction(
    {
      v: 1,
      id: newId(),
      node: signer,
      created: '2026-11-23T10:00:00Z',
      signer,
      type: 'void_pending',
      pending: newId(),
    },
    key.secretKey,
  )
  assert.deepEqual(validateSignedTransaction(JSON.parse(JSON.stringify(signed))), signed)
  const refuse = (value: unknown, code: string) =>
    assert.throws(
      () => validateSignedTransaction(value),
      (e: { code: string }) => e.code === code,
    )
  refuse({ ...signed, tx: { ...signed.tx, type: 'mint' } }, 'invalid_schema')
  refuse({ ...signed, tx: { ...signed.tx, extra: 1 } }, 'unknown_field')
  refuse({ ...signed, extra: 1 }, 'unknown_field')
  refuse({ ...signed, tx: { ...signed.tx, id: '0'.repeat(32) } }, 'invalid_schema')
  refuse({ tx: signed.tx }, 'invalid_schema')
  const withMemo = (memo: string) => ({
    ...signed,
    tx: {
      ...signed.tx,
      type: 'transfer',
      debit: newId(),
      credit: newId(),
      amount: '1',
      asset: 'bank:EUR',
      memo,
      pending: undefined,
    },
  })
  refuse(JSON.parse(JSON.stringify(withMemo('half \ud800 a pair'))), 'invalid_schema')
  validateSignedTransaction(JSON.parse(JSON.stringify(withMemo('a whole pair \ud83d\ude00'))))
})

test('views and read-only keys have their shapes', () => {
  const base = { v: 1, id: newId(), node: signer, created: '2026-11-23T10:00:00Z', signer } as const
  const grant = {
    ...base,
    type: 'grant_view',
    view: newId(),
    accounts: [newId()],
    grantee: 'everyone',
    from: '1970-01-01T00:00:00.000Z',
    until: '2027-11-23T10:00:00Z',
  } as const
  const valid = (tx: unknown) => validateSignedTransaction(signTransaction(tx as never, key.secretKey))
  const refused = (tx: unknown) =>
    assert.throws(
      () => valid(tx),
      (e: { code: string }) => e.code === 'invalid_schema' || e.code === 'unknown_field',
    )
  valid(grant)
  valid({ ...grant, grantee: newId() })
  valid({ ...base, type: 'revoke_view', view: newId() })
  refused({ ...grant, grantee: 'someone' })
  refused({ ...grant, accounts: [] })
  const twice = newId()
  refused({ ...grant, accounts: [twice, twice] })
  refused({ ...grant, accounts: Array.from({ length: 65 }, newId) })
  refused({ ...grant, until: 'tomorrow' })

  const signing = { kty: 'OKP', crv: 'Ed25519', x: publicJwk('Ed25519', key.publicKey).x } as const
  const addKey = (deviceKey: unknown) => ({ ...base, type: 'add_key', person: newId(), key: deviceKey })
  valid(addKey({ signing, use: 'read' }))
  refused(addKey({ signing, use: 'write' }))
})

test('new ids are valid, unique, and sort by the time they were made', () => {
  const pattern = new RegExp(idPattern)
  const made = Array.from({ length: 1000 }, (_, i) => newId(1_790_000_000_000 + i))
  for (const id of made) assert.match(id, pattern)
  assert.equal(new Set(made).size, made.length)
  assert.deepEqual([...made].sort(), made)
  // Within one millisecond the 80 random bits keep them apart.
  const sameTime = Array.from({ length: 1000 }, () => newId(1_790_000_000_000))
  assert.equal(new Set(sameTime).size, sameTime.length)
  assert.ok(sameTime.every((id) => id.startsWith((1_790_000_000_000).toString(16).padStart(12, '0'))))
})

test('an id is not made from a time that does not fit its 48 bits', () => {
  for (const now of [0, -1, 1.5, 2 ** 48, Number.NaN])
    assert.throws(() => newId(now), /invariant violated: an id's time/)
})
