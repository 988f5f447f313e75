import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { canonicalize } from './canonical.js'
import { toBase64Url, utf8 } from './encoding.js'
import { encryptionRecipient, type Jwe, Opener, Sealer } from './envelope.js'
import { VmError } from './errors.js'
import { generateEncryptionKey, generateSigningKey } from './keys.js'
import {
  decodeLeaf,
  encodeDisclosureLeafText,
  encodeJweText,
  encodeLeafText,
  encodeSealedLeafText,
  leafRecipients,
  leafSummary,
  leafTransaction,
} from './leaf.js'
import { encodeSignedTransaction, newId, signTransaction, type Transaction } from './transaction.js'

const signer = generateSigningKey()
const node = generateEncryptionKey()
const alice = generateEncryptionKey()
const stranger = generateEncryptionKey()
const time = '2026-01-02T03:04:05.678Z'
const kid = 'A'.repeat(43)

function transfer(): Transaction {
  return {
    v: 1,
    id: newId(),
    node: kid,
    created: time,
    signer: kid,
    type: 'transfer',
    debit: newId(),
    credit: newId(),
    amount: '125',
    asset: 'demo:EUR',
    memo: 'rent "März" \u2028',
  }
}

function sealed() {
  const signed = signTransaction(transfer(), signer.secretKey)
  const { signedText } = encodeSignedTransaction(signed)
  const sealer = new Sealer(node)
  const { jwe, cek } = sealer.seal(utf8(signedText), [
    encryptionRecipient(node.publicKey),
    encryptionRecipient(alice.publicKey),
  ])
  const text = encodeSealedLeafText(signed.tx.id, signed.tx.type, time, jwe)
  return { signed, jwe, cek, text, sealer }
}

/** The same JWE with alg and epk repeated in each recipient header. */
function perRecipient({ unprotected, ...jwe }: Jwe): Jwe {
  return {
    ...jwe,
    recipients: jwe.recipients.map((recipient) => ({
      ...recipient,
      header: { ...unprotected, ...recipient.header },
    })),
  }
}

function refusedWith(code: string) {
  return (error: unknown) => error instanceof VmError && error.code === code
}

describe('leaves', () => {
  test('a sealed leaf is RFC 8785 text and shows only id, type, time and recipient key ids', () => {
    const { signed, jwe, text } = sealed()
    assert.ok(jwe.unprotected !== undefined, 'alg and epk are shared')
    assert.equal(encodeJweText(jwe), canonicalize(jwe))
    assert.equal(text, canonicalize(JSON.parse(text)))
    assert.ok(
      !text.includes(signed.tx.type === 'transfer' ? signed.tx.debit : ''),
      'the account stays secret',
    )
    assert.ok(!text.includes('125'))
    const leaf = decodeLeaf(utf8(text))
    assert.deepEqual(leafSummary(leaf), { id: signed.tx.id, type: 'transfer', time })
    assert.deepEqual(leafRecipients(leaf), [
      encryptionRecipient(node.publicKey).kid,
      encryptionRecipient(alice.publicKey).kid,
    ])
  })

  test('with alg and epk in every recipient header instead, a sealed leaf is RFC 8785 text and opens', () => {
    const { signed, jwe } = sealed()
    const full = perRecipient(jwe)
    assert.equal(encodeJweText(full), canonicalize(full))
    const text = encodeSealedLeafText(signed.tx.id, signed.tx.type, time, full)
    assert.equal(text, canonicalize(JSON.parse(text)))
    const leaf = decodeLeaf(utf8(text))
    assert.deepEqual(leafTransaction(leaf, { opener: new Opener(alice.secretKey) }), signed)
    assert.equal(leafRecipients(leaf).length, 2)
  })

  test('a recipient, or a disclosed content key, opens the signed transaction; others cannot', () => {
    const { signed, cek, text } = sealed()
    const leaf = decodeLeaf(utf8(text))
    assert.deepEqual(leafTransaction(leaf, { opener: new Opener(alice.secretKey) }), signed)
    assert.deepEqual(leafTransaction(leaf, { cek }), signed)
    assert.equal(leafTransaction(leaf, { opener: new Opener(stranger.secretKey) }), null)
  })

  test('a sealed leaf whose content is another transaction is refused', () => {
    const { jwe, signed } = sealed()
    const other = decodeLeaf(utf8(encodeSealedLeafText(newId(), 'transfer', time, jwe)))
    assert.throws(
      () => leafTransaction(other, { opener: new Opener(alice.secretKey) }),
      refusedWith('leaf_content_mismatch'),
    )
    const retyped = decodeLeaf(utf8(encodeSealedLeafText(signed.tx.id, 'open_account', time, jwe)))
    assert.throws(
      () => leafTransaction(retyped, { opener: new Opener(alice.secretKey) }),
      refusedWith('leaf_content_mismatch'),
    )
  })

  test('public leaves and disclosure leaves round-trip', () => {
    const signed = signTransaction(transfer(), signer.secretKey)
    const publicLeaf = decodeLeaf(utf8(encodeLeafText(time, encodeSignedTransaction(signed).signedText)))
    assert.deepEqual(leafTransaction(publicLeaf, {}), signed)
    const { cek, sealer } = sealed()
    const id = newId()
    const view = newId()
    const text = encodeDisclosureLeafText({
      id,
      time,
      view,
      keys: [
        { leaf: 3, recipients: sealer.wrapFor(cek, [encryptionRecipient(stranger.publicKey)]) },
        { leaf: 4, cek: toBase64Url(cek) },
      ],
    })
    const leaf = decodeLeaf(utf8(text))
    assert.deepEqual(leafSummary(leaf), { id, type: 'disclosure', time })
    assert.deepEqual(leafRecipients(leaf), [encryptionRecipient(stranger.publicKey).kid])
    assert.equal(leafTransaction(leaf, {}), null)
  })

  test('malformed leaves are refused with leaf_malformed', () => {
    const { text } = sealed()
    const value = JSON.parse(text)
    const cases: unknown[] = [
      'not json',
      [],
      { ...value, v: 3 },
      { ...value, id: 'X' },
      { ...value, time: 'yesterday' },
      { ...value, type: 'unknown' },
      { ...value, extra: 1 },
      { ...value, jwe: { ...value.jwe, iv: '***' } },
      { ...value, jwe: { ...value.jwe, recipients: [] } },
      // alg and epk both shared and in the recipient headers.
      { ...value, jwe: { ...perRecipient(value.jwe), unprotected: value.jwe.unprotected } },
      { v: 2, id: newId(), type: 'disclosure', time, view: newId(), keys: [] },
      { v: 2, id: newId(), type: 'disclosure', time, view: newId(), keys: [{ leaf: -1, cek: 'AA' }] },
      // A disclosed key's recipients have no JWE to share alg and epk with.
      {
        v: 2,
        id: newId(),
        type: 'disclosure',
        time,
        view: newId(),
        keys: [{ leaf: 3, recipients: value.jwe.recipients }],
      },
      { v: 1, time, signed: { tx: {}, sig: 'x' } },
    ]
    for (const item of cases) {
      const bytes = utf8(typeof item === 'string' ? item : JSON.stringify(item))
      assert.throws(
        () => decodeLeaf(bytes),
        (error: unknown) => error instanceof VmError && error.status === 400,
        JSON.stringify(item).slice(0, 80),
      )
    }
  })
})
