import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { NodeClient } from '../../client/client.js'
import { type DeviceKeys, newKeyFile, openKeyFile } from '../../client/key-file.js'
import { fromBase64, fromBase64Url, toBase64Url } from '../../protocol/encoding.js'
import { encryptionRecipient, Opener } from '../../protocol/envelope.js'
import { generateEncryptionKey } from '../../protocol/keys.js'
import {
  type DisclosureLeaf,
  decodeLeaf,
  type Leaf,
  leafRecipients,
  leafTransaction,
} from '../../protocol/leaf.js'
import { newId, type Person, type SignedTransaction } from '../../protocol/transaction.js'
import { startTestNode } from '../../testing/node-harness.js'
import { transactionsPerRequestMax } from '../api/routes/transactions.js'
import { audit } from '../audit.js'
import { blockTransactionsMax } from './funnel.js'

type Harness = Awaited<ReturnType<typeof startTestNode>>

const asset = 'seal:EUR'
const auditor = generateEncryptionKey()

function natural(name: string): Person {
  return { id: newId(), kind: 'natural', names: [{ primaryIdentifier: name, nameIdentifierType: 'LEGL' }] }
}

function kidOf(keys: DeviceKeys): string {
  return encryptionRecipient(keys.encryption.publicKey).kid
}

async function leafAt(client: NodeClient, index: number): Promise<Leaf> {
  const { leaf } = (await client.publicGet(`/v1/log/leaves/${index}`)) as { leaf: string }
  return decodeLeaf(fromBase64(leaf))
}

/** A small world: an issuer, Alice, Bob and Carol with device keys, accounts for Alice, Bob and the issuer. */
async function world(harness: Harness) {
  const { client, admin } = harness
  const persons = {
    issuer: {
      person: {
        ...natural('Issuer'),
        kind: 'legal',
        names: [{ legalPersonName: 'Issuer', legalPersonNameIdentifierType: 'LEGL' }],
      } as Person,
      keys: openKeyFile(newKeyFile()),
    },
    alice: { person: natural('Alice'), keys: openKeyFile(newKeyFile()) },
    bob: { person: natural('Bob'), keys: openKeyFile(newKeyFile()) },
    carol: { person: natural('Carol'), keys: openKeyFile(newKeyFile()) },
  }
  const accounts = { issuer: newId(), alice: newId(), bob: newId() }
  const setup: SignedTransaction[] = []
  for (const { person, keys } of Object.values(persons)) {
    setup.push(await client.sign(admin, { type: 'register_person', person, keys: [keys.deviceKey] }))
    setup.push(await client.sign(admin, { type: 'set_kyc', person: person.id, status: 'verified' }))
  }
  setup.push(
    await client.sign(admin, {
      type: 'create_asset',
      asset,
      issuer: persons.issuer.person.id,
      scale: 2,
      name: 'Sealed euro',
    }),
  )
  for (const name of ['issuer', 'alice', 'bob'] as const) {
    setup.push(
      await client.sign(admin, {
        type: 'open_account',
        account: accounts[name],
        owner: persons[name].person.id,
        asset,
        flags: name === 'issuer' ? [] : ['debits_must_not_exceed_credits'],
        ...(name === 'issuer' ? { issuanceLimit: '1000000' } : {}),
      }),
    )
  }
  await accept(client, admin, setup)
  const issue = await client.sign(persons.issuer.keys, {
    type: 'transfer',
    debit: accounts.issuer,
    credit: accounts.alice,
    amount: '10000',
    asset,
  })
  await accept(client, persons.issuer.keys, [issue])
  return { persons, accounts }
}

async function accept(client: NodeClient, keys: DeviceKeys, transactions: SignedTransaction[]) {
  const outcomes = await client.submitAndWait(keys, transactions)
  for (const outcome of outcomes) assert.equal(outcome.status, 'accepted', `${outcome.id}: ${outcome.code}`)
  return outcomes
}

describe('sealed leaves', () => {
  let harness: Harness
  let w: Awaited<ReturnType<typeof world>>
  const leafIndex = async (id: string) =>
    ((await harness.client.get(harness.admin, `/v1/transactions/${id}`)) as { leafIndex: number }).leafIndex

  const pay = async (memo: string) => {
    const { alice } = w.persons
    const signed = await harness.client.sign(alice.keys, {
      type: 'transfer',
      debit: w.accounts.alice,
      credit: w.accounts.bob,
      amount: '125',
      asset,
      memo,
    })
    await accept(harness.client, alice.keys, [signed])
    return { signed, index: await leafIndex(signed.tx.id) }
  }

  /** The disclosure leaves of `view` in the log, newest last. */
  const disclosuresOf = async (view: string) => {
    const size = (await harness.client.publicGet('/v1/blocks')) as { header: { logSize: number } }
    const found: DisclosureLeaf[] = []
    for (let i = 0; i < size.header.logSize; i++) {
      const leaf = await leafAt(harness.client, i)
      if (leaf.v === 2 && leaf.type === 'disclosure' && leaf.view === view) found.push(leaf)
    }
    return found
  }

  before(async () => {
    harness = await startTestNode({ auditorKeys: toBase64Url(auditor.publicKey) })
    w = await world(harness)
  })
  after(() => harness.close())

  test('a transfer is sealed for the archive key, the auditor and both parties, and for nobody else', async () => {
    const { alice, bob, carol } = w.persons
    const { signed, index } = await pay('rent')
    const leaf = await leafAt(harness.client, index)
    assert.equal(leaf.v, 2)
    const text = JSON.stringify(leaf)
    assert.ok(!text.includes(w.accounts.alice) && !text.includes('rent'), 'parties and memo are not public')
    const archive = encryptionRecipient(harness.node.identity.encryption.publicKey).kid
    assert.deepEqual(
      new Set(leafRecipients(leaf)),
      new Set([archive, encryptionRecipient(auditor.publicKey).kid, kidOf(alice.keys), kidOf(bob.keys)]),
    )
    for (const reader of [
      alice.keys.encryption.secretKey,
      bob.keys.encryption.secretKey,
      auditor.secretKey,
    ]) {
      assert.deepEqual(leafTransaction(leaf, { opener: new Opener(reader) }), signed)
    }
    assert.equal(leafTransaction(leaf, { opener: new Opener(carol.keys.encryption.secretKey) }), null)
  })

  test('a view discloses the history to its grantee, seals new leaves for them, and stops at revocation', async () => {
    const { alice, carol } = w.persons
    const before = await pay('before the view')
    const view = newId()
    const grant = await harness.client.sign(alice.keys, {
      type: 'grant_view',
      view,
      accounts: [w.accounts.alice],
      grantee: carol.person.id,
      from: '2000-01-01T00:00:00.000Z',
      until: '2100-01-01T00:00:00.000Z',
    })
    await accept(harness.client, alice.keys, [grant])
    const carolOpener = new Opener(carol.keys.encryption.secretKey)

    // The old leaf's bytes never change: a disclosure leaf wraps its content key for Carol.
    const [disclosure] = await disclosuresOf(view)
    assert.ok(disclosure !== undefined, 'the grant appended a disclosure leaf')
    const key = disclosure.keys.find((k) => k.leaf === before.index)
    assert.ok(key !== undefined && 'recipients' in key, 'the earlier transfer is disclosed')
    const cek = carolOpener.unwrap({ recipients: key.recipients })
    assert.ok(cek !== null)
    assert.deepEqual(leafTransaction(await leafAt(harness.client, before.index), { cek }), before.signed)
    const grantLeaf = await leafIndex(grant.tx.id)
    assert.ok(
      disclosure.keys.every((k) => k.leaf < grantLeaf),
      'only leaves before the grant are disclosed',
    )

    // From the grant on, Carol is a recipient of new leaves on the account.
    const during = await pay('during the view')
    assert.deepEqual(
      leafTransaction(await leafAt(harness.client, during.index), { opener: carolOpener }),
      during.signed,
    )

    // After revocation: no new leaf for Carol, and no new disclosure.
    await accept(harness.client, alice.keys, [
      await harness.client.sign(alice.keys, { type: 'revoke_view', view }),
    ])
    const later = await pay('after the revocation')
    assert.equal(leafTransaction(await leafAt(harness.client, later.index), { opener: carolOpener }), null)
    assert.equal((await disclosuresOf(view)).length, 1)
  })

  test('a view to everyone discloses content keys themselves, for old and new leaves', async () => {
    const { alice } = w.persons
    const old = await pay('public history')
    const view = newId()
    await accept(harness.client, alice.keys, [
      await harness.client.sign(alice.keys, {
        type: 'grant_view',
        view,
        accounts: [w.accounts.alice],
        grantee: 'everyone',
        from: '2000-01-01T00:00:00.000Z',
        until: '2100-01-01T00:00:00.000Z',
      }),
    ])
    const fresh = await pay('public from now on')
    const keys = (await disclosuresOf(view)).flatMap((leaf) => leaf.keys)
    for (const { signed, index } of [old, fresh]) {
      const key = keys.find((k) => k.leaf === index)
      assert.ok(key !== undefined && 'cek' in key, `leaf ${index} is disclosed to everyone`)
      const leaf = await leafAt(harness.client, index)
      assert.deepEqual(leafTransaction(leaf, { cek: fromBase64Url(key.cek) }), signed)
    }
  })

  test('the audit opens every sealed leaf with the archive key and rebuilds the ledger', async () => {
    const report = await audit(harness.node.database.db, harness.node.identity)
    assert.deepEqual(report.findings, [])
    assert.ok(report.ok)
  })
})

describe('public leaves', () => {
  test('with leaf encryption off, leaves carry the signed transaction in the clear', async () => {
    const harness = await startTestNode({ leafEncryption: 'off' })
    try {
      // The genesis is pooled at start and committed by the funnel soon after.
      const deadline = Date.now() + 10_000
      while ((await fetch(`${harness.node.url}/v1/log/checkpoint`)).status !== 200) {
        assert.ok(Date.now() < deadline, 'the genesis was not committed')
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      const leaf = await leafAt(harness.client, 0)
      assert.equal(leaf.v, 1)
      assert.equal(leafTransaction(leaf, {})?.tx.type, 'genesis')
    } finally {
      await harness.close()
    }
  })
})

describe('a backlog of sealed leaves', () => {
  let harness: Harness
  before(async () => {
    harness = await startTestNode()
  })
  after(() => harness.close())

  test('more than a block of pooled transactions is sealed and written in order, a grant disclosing it all', async () => {
    const w = await world(harness)
    const { issuer, alice, carol } = w.persons
    // Pooled while no funnel runs: a full block waits, then a grant and the rest.
    await harness.restart({ role: 'api' })
    const transfers: SignedTransaction[] = []
    for (let i = 0; i < blockTransactionsMax + 100; i++) {
      transfers.push(
        await harness.client.sign(issuer.keys, {
          type: 'transfer',
          debit: w.accounts.issuer,
          credit: w.accounts.alice,
          amount: '1',
          asset,
        }),
      )
    }
    const view = newId()
    const grant = await harness.client.sign(alice.keys, {
      type: 'grant_view',
      view,
      accounts: [w.accounts.alice],
      grantee: carol.person.id,
      from: '2000-01-01T00:00:00.000Z',
      until: '2100-01-01T00:00:00.000Z',
    })
    const pooled = [
      ...transfers.slice(0, blockTransactionsMax),
      grant,
      ...transfers.slice(blockTransactionsMax),
    ]
    for (let start = 0; start < pooled.length; start += transactionsPerRequestMax) {
      const outcomes = await harness.client.submit(pooled.slice(start, start + transactionsPerRequestMax))
      assert.ok(outcomes.every((outcome) => outcome.status === 'pending'))
    }

    await harness.restart({})
    const pending = (signed: SignedTransaction) => ({ id: signed.tx.id, status: 'pending' as const })
    const deadline = Date.now() + 120_000
    const [first, granted, last] = await harness.client.awaitFinal(
      harness.admin,
      [pending(transfers[0]!), pending(grant), pending(transfers.at(-1)!)],
      deadline,
    )
    for (const outcome of [first, granted, last]) assert.equal(outcome?.status, 'accepted', outcome?.code)
    // The full block first, then the grant's block: leaves follow each other, heights too.
    assert.equal(granted!.blockHeight, first!.blockHeight! + 1)
    assert.equal(granted!.leafIndex, first!.leafIndex! + blockTransactionsMax)
    assert.equal(last!.leafIndex, granted!.leafIndex! + 100)

    // The grant read the full block as committed history: Carol opens its first transfer.
    const { header } = (await harness.client.publicGet(`/v1/blocks/${granted!.blockHeight}`)) as {
      header: { firstLeaf: number; leafCount: number }
    }
    const carolOpener = new Opener(carol.keys.encryption.secretKey)
    let opened = null
    for (let index = last!.leafIndex! + 1; index < header.firstLeaf + header.leafCount; index++) {
      const leaf = await leafAt(harness.client, index)
      if (leaf.v !== 2 || leaf.type !== 'disclosure' || leaf.view !== view) continue
      const key = leaf.keys.find((k) => k.leaf === first!.leafIndex)
      if (key === undefined || !('recipients' in key)) continue
      const cek = carolOpener.unwrap({ recipients: key.recipients })
      assert.ok(cek !== null)
      opened = leafTransaction(await leafAt(harness.client, first!.leafIndex!), { cek })
    }
    assert.deepEqual(opened, transfers[0])

    const report = await audit(harness.node.database.db, harness.node.identity)
    assert.deepEqual(report.findings, [])
  })
})
