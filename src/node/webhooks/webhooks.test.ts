import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { NodeClient } from '../../client/client.js'
import { type DeviceKeys, readKeyFile } from '../../client/key-file.js'
import { fromBase64Url } from '../../protocol/encoding.js'
import type { VmError } from '../../protocol/errors.js'
import { newId } from '../../protocol/transaction.js'
import { testDatabaseArgs } from '../../testing/databases.js'
import { startTestNode } from '../../testing/node-harness.js'
import { runCli } from '../../testing/node-process.js'
import { seedDemo } from '../demo.js'
import { loadMasterKey } from '../identity.js'
import {
  addWebhook,
  eventTypes,
  listDeadLetters,
  listWebhooks,
  removeWebhook,
  replayDeadLetters,
  signatureHeader,
  signDelivery,
  verifyDelivery,
} from './webhooks.js'

interface Delivered {
  readonly webhook: string
  readonly events: { id: string; type: string; transactionId?: string; account?: string }[]
}

/** A receiver on loopback that checks every signature and answers 200, or 503 while `failing`. */
class Receiver {
  readonly server: Server
  readonly received: { body: Delivered; verified: boolean; status: number }[] = []
  secret: Uint8Array = new Uint8Array(32)
  failing = false

  constructor() {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = []
      request.on('data', (chunk: Buffer) => chunks.push(chunk))
      request.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8')
        const verified = verifyDelivery(this.secret, body, String(request.headers[signatureHeader]))
        const status = this.failing ? 503 : 200
        this.received.push({ body: JSON.parse(body) as Delivered, verified, status })
        response.writeHead(status).end()
      })
    })
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks`
  }

  /** Events of deliveries answered 200, in the order received. */
  accepted() {
    return this.received.filter((r) => r.status === 200).flatMap((r) => r.body.events)
  }
}

let harness: Awaited<ReturnType<typeof startTestNode>>
let client: NodeClient
let alice: DeviceKeys
let bob: DeviceKeys
let aliceAccount: string
let bobAccount: string
let masterKey: Uint8Array
const receiver = new Receiver()
let receiverUrl: string

before(async () => {
  // Two attempts before a batch is dead-lettered: the first retry comes 1 s after the first failure.
  harness = await startTestNode({ webhookAttempts: '2' })
  client = harness.client
  const world = await seedDemo(harness.node.url, harness.node.adminKeyFile, harness.dataDir)
  const person = (name: string) => world.persons.find((p) => p.name === name)!
  alice = readKeyFile(join(harness.dataDir, 'demo', person('Alice').keyFile))
  bob = readKeyFile(join(harness.dataDir, 'demo', person('Bob').keyFile))
  aliceAccount = person('Alice').accounts[0]!
  bobAccount = person('Bob').accounts[0]!
  masterKey = loadMasterKey(undefined, harness.dataDir, false).key
  receiverUrl = await receiver.listen()
})
after(async () => {
  await harness.close()
  receiver.server.close()
})

async function pay(keys: DeviceKeys, debit: string, credit: string): Promise<string> {
  const signed = await client.sign(keys, {
    type: 'transfer',
    debit,
    credit,
    amount: '1',
    asset: 'demo:EUR',
  } as never)
  const [outcome] = await client.submitAndWait(keys, [signed])
  assert.equal(outcome?.status, 'accepted', outcome?.code)
  return signed.tx.id
}

async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  ms = 15_000,
): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, `${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe('webhooks', () => {
  let hook: string

  test('deliver signed batches of the committed entries and blocks, in order, from registration on', async () => {
    const added = await addWebhook(harness.node.database.db, masterKey, receiverUrl, ['entry', 'block'])
    hook = added.id
    receiver.secret = fromBase64Url(added.secret)
    const paid = await pay(bob, bobAccount, aliceAccount)
    await waitFor(
      () =>
        receiver.accepted().some((e) => e.type === 'block') &&
        receiver.accepted().some((e) => e.transactionId === paid),
      'the transfer delivered',
    )
    assert.ok(receiver.received.every((r) => r.verified && r.body.webhook === hook))
    const events = receiver.accepted()
    assert.deepEqual(
      new Set(events.filter((e) => e.transactionId === paid).map((e) => e.account)),
      new Set([bobAccount, aliceAccount]),
    )
    // Nothing from before the registration: the demo world's entries are not delivered.
    assert.ok(events.every((e) => e.type === 'block' || e.transactionId === paid))
    const ids = events.map((e) => e.id)
    assert.equal(new Set(ids).size, ids.length, 'each event once')
    // The cursor moves once the receiver's answer is in.
    await waitFor(
      async () => (await listWebhooks(harness.node.database.db))[0]?.cursor === ids.at(-1),
      'the cursor at the last event delivered',
    )
    const [listed] = await listWebhooks(harness.node.database.db)
    assert.equal(listed?.id, hook)
    assert.equal(listed?.lastError, null)
  })

  test('a receiver that keeps failing gets retries, then a dead letter; replay delivers the same events', async () => {
    const { db } = harness.node.database
    receiver.failing = true
    const attemptsBefore = receiver.received.length
    const lost = await pay(alice, aliceAccount, bobAccount)
    await waitFor(async () => (await listDeadLetters(db, hook)).length === 1, 'a dead letter')
    const failed = receiver.received.slice(attemptsBefore)
    assert.ok(failed.length >= 2 && failed.every((r) => r.status === 503))
    assert.deepEqual(
      failed[0]!.body.events.map((e) => e.id),
      failed[1]!.body.events.map((e) => e.id),
      'a retry carries the same event ids',
    )
    const [letter] = await listDeadLetters(db, hook)
    assert.equal(letter?.state, 'dead')
    assert.equal(letter?.attempts, 2)
    assert.equal(letter?.lastError, 'HTTP 503')
    assert.equal((await listWebhooks(db))[0]?.deadLetters, 1)

    // The webhook went on past the dead letter: a later transfer arrives once the receiver is back.
    receiver.failing = false
    const later = await pay(bob, bobAccount, aliceAccount)
    await waitFor(() => receiver.accepted().some((e) => e.transactionId === later), 'the later transfer')
    assert.ok(
      !receiver.accepted().some((e) => e.transactionId === lost),
      'the dead batch was not delivered yet',
    )

    assert.equal(await replayDeadLetters(db, hook), 1)
    await waitFor(() => receiver.accepted().some((e) => e.transactionId === lost), 'the replay')
    const replayed = receiver.received.filter((r) => r.status === 200).at(-1)!
    assert.deepEqual(
      replayed.body.events.map((e) => e.id),
      failed[0]!.body.events.map((e) => e.id),
      'replayed with the original ids',
    )
    await waitFor(async () => (await listDeadLetters(db, hook))[0]?.state === 'replayed', 'marked replayed')
    assert.equal((await listWebhooks(db))[0]?.deadLetters, 0)
  })

  test('bad input is refused with a code, and signatures bind secret, body and time', async () => {
    const { db } = harness.node.database
    const refused = (code: string) => (e: VmError) => e.code === code
    await assert.rejects(
      addWebhook(db, masterKey, 'ftp://example.org/x', ['entry']),
      refused('invalid_webhook'),
    )
    await assert.rejects(
      addWebhook(db, masterKey, 'http://user:pw@127.0.0.1/x', ['entry']),
      refused('invalid_webhook'),
    )
    await assert.rejects(addWebhook(db, masterKey, 'not a url', ['entry']), refused('invalid_webhook'))
    await assert.rejects(addWebhook(db, masterKey, receiverUrl, []), refused('invalid_webhook'))
    assert.throws(() => eventTypes('entry,transfer'), refused('invalid_webhook'))
    await assert.rejects(replayDeadLetters(db, newId()), refused('not_found'))
    await assert.rejects(replayDeadLetters(db, hook, 999_999), refused('not_found'))
    await assert.rejects(removeWebhook(db, newId()), refused('not_found'))

    const secret = new Uint8Array(32).fill(7)
    const now = 1_800_000_000
    const header = signDelivery(secret, '{"a":1}', now)
    assert.ok(verifyDelivery(secret, '{"a":1}', header, now))
    assert.ok(!verifyDelivery(secret, '{"a":2}', header, now), 'another body')
    assert.ok(!verifyDelivery(new Uint8Array(32), '{"a":1}', header, now), 'another secret')
    assert.ok(!verifyDelivery(secret, '{"a":1}', header, now + 301), 'too old')
    assert.ok(!verifyDelivery(secret, '{"a":1}', 'garbage', now))
  })

  test('operators manage webhooks with the CLI', async () => {
    const args = ['--data-dir', harness.dataDir, ...testDatabaseArgs(harness.dataDir)]
    const added = await runCli([
      'webhooks',
      'add',
      '--url',
      receiverUrl,
      '--events',
      'block',
      '--json',
      ...args,
    ])
    assert.equal(added.code, 0, added.stderr)
    const { id, secret } = JSON.parse(added.stdout) as { id: string; secret: string }
    assert.equal(fromBase64Url(secret).length, 32)
    const listed = await runCli(['webhooks', 'list', ...args])
    assert.match(listed.stdout, new RegExp(`${id} ${receiverUrl} \\[block\\]`))
    const letters = await runCli(['webhooks', 'dead-letters', hook, ...args])
    assert.match(letters.stdout, /replayed: \d+ events/)
    const removed = await runCli(['webhooks', 'remove', id, ...args])
    assert.equal(removed.code, 0, removed.stderr)
    assert.ok(!(await listWebhooks(harness.node.database.db)).some((w) => w.id === id))
    const bad = await runCli(['webhooks', 'add', '--url', 'ftp://x', ...args])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /invalid_webhook/)
    const unknown = await runCli(['webhooks', 'replay', newId(), ...args])
    assert.equal(unknown.code, 2)
    assert.match(unknown.stderr, /not_found/)
  })
})
