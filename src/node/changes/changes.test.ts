import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import WebSocket from 'ws'
import { type NodeClient, requestTarget } from '../../client/client.js'
import type { StreamEvent } from '../../client/event-stream.js'
import { type DeviceKeys, readKeyFile } from '../../client/key-file.js'
import type { VmError } from '../../protocol/errors.js'
import { signRequest } from '../../protocol/http-signature.js'
import { newId, nowTimestamp } from '../../protocol/transaction.js'
import { startTestNode } from '../../testing/node-harness.js'
import { seedDemo } from '../demo.js'
import type { EntryChange } from './change-feed.js'

let harness: Awaited<ReturnType<typeof startTestNode>>
let client: NodeClient
let alice: DeviceKeys
let bob: DeviceKeys
let issuer: DeviceKeys
let aliceAccount: string
let bobAccount: string
let issuerAccount: string
const asset = 'demo:EUR'

before(async () => {
  harness = await startTestNode()
  client = harness.client
  const world = await seedDemo(harness.node.url, harness.node.adminKeyFile, harness.dataDir)
  const person = (name: string) => world.persons.find((p) => p.name === name)!
  const keys = (name: string) => readKeyFile(join(harness.dataDir, 'demo', person(name).keyFile))
  alice = keys('Alice')
  bob = keys('Bob')
  issuer = keys('Issuer')
  aliceAccount = person('Alice').accounts[0]!
  bobAccount = person('Bob').accounts[0]!
  issuerAccount = person('Issuer').accounts[0]!
})
after(async () => harness.close())

async function transfer(keys: DeviceKeys, debit: string, credit: string, amount = '1'): Promise<string> {
  const signed = await client.sign(keys, { type: 'transfer', debit, credit, amount, asset } as never)
  const [outcome] = await client.submitAndWait(keys, [signed])
  assert.equal(outcome?.status, 'accepted', outcome?.code)
  return signed.tx.id
}

/**
 * Events of a stream until `until` holds (looked at once `whileOpen`, started when the stream is live, is
 * done) or 10 s pass; then the stream is closed. The `ready` event is not among those returned.
 */
async function collect(
  keys: DeviceKeys,
  options: Parameters<NodeClient['changes']>[1],
  until: (events: readonly StreamEvent[]) => boolean,
  whileOpen: () => Promise<unknown> = async () => {},
): Promise<StreamEvent[]> {
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 10_000)
  const events: StreamEvent[] = []
  let acted: Promise<unknown> = Promise.resolve()
  let actedDone = false
  try {
    for await (const event of client.changes(keys, { ...options, signal: abort.signal })) {
      if (event.event === 'ready') {
        acted = whileOpen().then(() => {
          actedDone = true
          if (until(events)) abort.abort()
        })
        continue
      }
      events.push(event)
      if (actedDone && until(events)) break
    }
  } catch (error) {
    if (!abort.signal.aborted) throw error
  } finally {
    clearTimeout(timer)
  }
  await acted
  return events
}

async function waitFor(condition: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const entries = (events: readonly StreamEvent[]) =>
  events.filter((e) => e.event === 'entry').map((e) => JSON.parse(e.data) as EntryChange)
const hasEntryOf = (transactionId: string) => (events: readonly StreamEvent[]) =>
  entries(events).some((e) => e.transactionId === transactionId)
/** The block holding the transaction's entries has come: all of them were delivered. */
const hasBlockAfter = (transactionId: string) => (events: readonly StreamEvent[]) => {
  const at = events.findIndex(
    (e) => e.event === 'entry' && (JSON.parse(e.data) as EntryChange).transactionId === transactionId,
  )
  return at !== -1 && events.slice(at).some((e) => e.event === 'block')
}

describe('the changefeed', () => {
  test("streams the entries of the reader's own accounts and every block, nothing of others", async () => {
    let paid = ''
    const events = await collect(
      alice,
      { after: '0-0' },
      (seen) => paid !== '' && hasEntryOf(paid)(seen),
      async () => {
        await transfer(issuer, issuerAccount, bobAccount, '3')
        paid = await transfer(bob, bobAccount, aliceAccount, '2')
      },
    )
    const own = entries(events)
    assert.ok(own.length > 0)
    assert.ok(own.every((e) => e.account === aliceAccount && e.owner === alice.person))
    const credit = own.find((e) => e.transactionId === paid)!
    assert.equal(credit.amount, '2')
    assert.equal(credit.kind, 'credit')
    // From the start: the same entries as the statement, in the same order.
    const statement = (await client.get(alice, `/v1/accounts/${aliceAccount}/statement?limit=1000`)) as {
      entries: { seq: number }[]
    }
    assert.deepEqual(
      own.map((e) => e.seq),
      statement.entries.map((e) => e.seq).filter((seq) => seq <= credit.seq),
    )
    const blocks = events
      .filter((e) => e.event === 'block')
      .map((e) => JSON.parse(e.data) as { height: number })
    assert.deepEqual(
      blocks.map((b) => b.height),
      blocks.map((_, i) => i + 1),
      'every block from the first, in order',
    )
    // Ids only grow, and each entry comes before the block that holds it.
    const ids = events.map((e) => e.id!.split('-').map(Number) as [number, number])
    for (let i = 1; i < ids.length; i++) {
      const [h0, s0] = ids[i - 1]!
      const [h1, s1] = ids[i]!
      assert.ok(h1 > h0 || (h1 === h0 && s1 > s0), `ids grow: ${events[i - 1]!.id} then ${events[i]!.id}`)
    }
  })

  test('a stream resumed from its last id gets exactly what it missed', async () => {
    let first = ''
    const before = await collect(
      alice,
      {},
      (seen) => first !== '' && hasEntryOf(first)(seen),
      async () => {
        first = await transfer(bob, bobAccount, aliceAccount)
      },
    )
    const lastId = before.at(-1)!.id!
    // Committed while nobody listened.
    const missed = [
      await transfer(bob, bobAccount, aliceAccount),
      await transfer(alice, aliceAccount, bobAccount),
    ]
    const resumed = await collect(alice, { after: lastId }, hasEntryOf(missed[1]!))
    assert.deepEqual(
      entries(resumed).map((e) => e.transactionId),
      missed,
      'both missed transactions, once each, in order',
    )
    assert.ok(!entries(resumed).some((e) => e.transactionId === first), 'nothing delivered twice')
  })

  test('a view opens the granted account to its grantee, and its revocation closes the stream', async () => {
    await assert.rejects(
      collect(bob, { accounts: [aliceAccount] }, () => true),
      (e: VmError) => e.code === 'forbidden' && e.status === 403,
    )
    const view = newId()
    const grant = await client.sign(alice, {
      type: 'grant_view',
      view,
      accounts: [aliceAccount],
      grantee: bob.person!,
      from: '1970-01-01T00:00:00.000Z',
      until: nowTimestamp(Date.now() + 3_600_000),
    })
    assert.equal((await client.submitAndWait(alice, [grant]))[0]?.status, 'accepted')
    let paid = ''
    const events = await collect(
      bob,
      { accounts: [aliceAccount] },
      (seen) => seen.some((e) => e.event === 'error'),
      async () => {
        paid = await transfer(issuer, issuerAccount, aliceAccount)
        const revoke = await client.sign(alice, { type: 'revoke_view', view })
        assert.equal((await client.submitAndWait(alice, [revoke]))[0]?.status, 'accepted')
      },
    )
    assert.ok(hasEntryOf(paid)(events), 'the grantee saw the entry while the view stood')
    assert.ok(entries(events).every((e) => e.account === aliceAccount))
    const error = events.at(-1)!
    assert.equal(error.event, 'error')
    assert.equal((JSON.parse(error.data) as { code: string }).code, 'forbidden')
  })

  test('staff follow every account; others may not', async () => {
    await assert.rejects(
      collect(alice, { all: true }, () => true),
      (e: VmError) => e.code === 'forbidden',
    )
    let paid = ''
    const events = await collect(
      harness.admin,
      { all: true },
      (seen) => paid !== '' && hasBlockAfter(paid)(seen),
      async () => {
        paid = await transfer(bob, bobAccount, aliceAccount)
      },
    )
    assert.deepEqual(
      new Set(
        entries(events)
          .filter((e) => e.transactionId === paid)
          .map((e) => e.account),
      ),
      new Set([bobAccount, aliceAccount]),
    )
  })

  test('bad requests are refused with a code', async () => {
    const url = `${harness.node.url}/v1/changes`
    assert.equal((await fetch(url)).status, 401)
    await assert.rejects(
      collect(alice, { after: 'yesterday' }, () => true),
      (e: VmError) => e.code === 'invalid_cursor' && e.status === 400,
    )
    await assert.rejects(
      collect(alice, { accounts: [newId()] }, () => true),
      (e: VmError) => e.code === 'not_found',
    )
    await assert.rejects(
      collect(harness.admin, { all: true, accounts: [aliceAccount] }, () => true),
      (e: VmError) => e.code === 'invalid_query',
    )
  })

  test('the same feed over WebSocket, signed on the upgrade request', async () => {
    const url = `${harness.node.url.replace(/^http/, 'ws')}/v1/changes`
    const unsigned = new WebSocket(url)
    const refused = await new Promise<number>((resolve, reject) => {
      unsigned.on('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0))
      unsigned.on('open', () => reject(new Error('an unsigned upgrade was accepted')))
      unsigned.on('error', () => {})
    })
    assert.equal(refused, 401)

    const headers = signRequest(
      requestTarget('GET', `${harness.node.url}/v1/changes`),
      alice.keyId,
      alice.signing.secretKey,
    )
    const socket = new WebSocket(url, { headers })
    const messages: { id: string; type: string; transactionId?: string }[] = []
    socket.on('message', (data) => messages.push(JSON.parse(String(data)) as (typeof messages)[number]))
    await waitFor(() => messages.some((m) => m.type === 'ready'))
    const paid = await transfer(bob, bobAccount, aliceAccount)
    await waitFor(() => messages.some((m) => m.type === 'entry' && m.transactionId === paid))
    socket.close()
    assert.ok(messages.some((m) => m.type === 'block'))
    assert.match(messages.at(-1)!.id, /^\d+-\d+$/)
  })
})
