import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { DemoWorld } from '../src/node/demo.js'
import { dropTestDatabase, testDatabaseArgs } from '../src/testing/databases.js'
import { exited, freePort, runCli, spawnNode } from '../src/testing/node-process.js'

/** The README's walkthrough, as a new user runs it: `vmoney start`, then the CLI against it. */
let dataDir: string
let node: Awaited<ReturnType<typeof spawnNode>>
let world: DemoWorld
const demo = (file: string) => join(dataDir, 'demo', file)

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'vmoney-cli-'))
  node = await spawnNode('start', dataDir, await freePort())
  world = JSON.parse(readFileSync(demo('demo.json'), 'utf8')) as DemoWorld
})
after(async () => {
  node.child.kill('SIGTERM')
  await exited(node.child)
  await dropTestDatabase(dataDir)
  rmSync(dataDir, { recursive: true, force: true })
})

const vmoney = (...args: string[]) => runCli([...args, '--node', node.url])
const account = (name: string) => world.persons.find((p) => p.name === name)!.accounts[0]!
const aliceToBob = (amount: string, ...more: string[]) =>
  vmoney(
    'tx',
    'transfer',
    '--key',
    demo('alice.key.json'),
    '--from',
    account('Alice'),
    '--to',
    account('Bob'),
    '--amount',
    amount,
    '--asset',
    'demo:EUR',
    ...more,
  )

test('start prints the node id and URLs and seeds the demo world with private key files', () => {
  assert.match(node.output(), /VisibleMoney node [A-Za-z0-9_-]{43}/)
  assert.match(node.output(), /node:\s+http:\/\/127\.0\.0\.1:\d+/)
  assert.equal(world.asset, 'demo:EUR')
  assert.deepEqual(
    world.persons.map((p) => p.name),
    ['Alice', 'Bob', 'Issuer'],
  )
  for (const person of world.persons) assert.equal(statSync(demo(person.keyFile)).mode & 0o777, 0o600)
})

test('a transfer is signed, submitted and final, and shows in the balances', async () => {
  const result = await aliceToBob('1.25', '--json')
  assert.equal(result.code, 0, result.stderr)
  const outcome = JSON.parse(result.stdout) as {
    id: string
    status: string
    blockHeight: number
    leafIndex: number
  }
  assert.equal(outcome.status, 'accepted')
  assert.ok(Number.isInteger(outcome.blockHeight) && Number.isInteger(outcome.leafIndex))
  const shown = await vmoney('account', 'show', account('Bob'), '--key', demo('bob.key.json'), '--json')
  assert.equal(shown.code, 0, shown.stderr)
  // 25.00 from Alice, 5.50 back, 8.00 posted of a hold, 1.25 now.
  assert.equal((JSON.parse(shown.stdout) as { balance: string }).balance, String(2500 - 550 + 800 + 125))
  const proved = await vmoney('log', 'prove', '--index', String(outcome.leafIndex), '--json')
  assert.equal(proved.code, 0, proved.stderr)
  assert.equal((JSON.parse(proved.stdout) as { verified: boolean }).verified, true)
})

test('a rejected transfer exits 1 with its code', async () => {
  const result = await aliceToBob('99999', '--json')
  assert.equal(result.code, 1)
  assert.equal((JSON.parse(result.stdout) as { code: string }).code, 'exceeds_credits')
})

test('an operator registers a customer with a new key, opens an account, and the customer reads it', async () => {
  const keyFile = join(dataDir, 'carol.key.json')
  const created = await runCli(['keys', 'new', '--out', keyFile, '--json'])
  assert.equal(created.code, 0, created.stderr)
  assert.equal(statSync(keyFile).mode & 0o777, 0o600)
  assert.equal((await runCli(['keys', 'new', '--out', keyFile])).code, 2, 'never overwrites a key')
  const registered = await vmoney(
    'person',
    'register',
    '--key',
    join(dataDir, 'admin.key.json'),
    '--device-key',
    keyFile,
    '--name',
    'Carol Example',
    '--kyc',
    'verified',
    '--json',
  )
  assert.equal(registered.code, 0, registered.stderr)
  const person = (JSON.parse(readFileSync(keyFile, 'utf8')) as { person: string }).person
  const opened = await vmoney(
    'account',
    'open',
    '--key',
    join(dataDir, 'admin.key.json'),
    '--owner',
    person,
    '--asset',
    'demo:EUR',
  )
  assert.equal(opened.code, 0, opened.stderr)
  const shown = await vmoney('account', 'show', '--key', keyFile, '--json')
  assert.equal(shown.code, 0, shown.stderr)
  assert.equal((JSON.parse(shown.stdout) as { accounts: { balance: string }[] }).accounts[0]!.balance, '0')
  const forbidden = await vmoney('account', 'show', account('Alice'), '--key', keyFile)
  assert.equal(forbidden.code, 4)
  assert.match(forbidden.stderr, /forbidden/)
})

test('the checkpoint verifies, and the audit passes against the running node', async () => {
  const checkpoint = await vmoney('log', 'checkpoint', '--json')
  assert.equal(checkpoint.code, 0, checkpoint.stderr)
  assert.ok((JSON.parse(checkpoint.stdout) as { size: number }).size > 10)
  const audited = await runCli(['audit', '--data-dir', dataDir, ...testDatabaseArgs(dataDir)])
  assert.equal(audited.code, 0, audited.stdout + audited.stderr)
  assert.match(audited.stdout, /audit passed/)
})

test('start runs a block browser that holds every block, and verify passes with and without a key', async () => {
  const browser = node.browserUrl()
  assert.ok(browser !== null, 'start prints the block browser URL')
  const state = join(dataDir, 'verify-state.json')
  const verify = (...args: string[]) => vmoney('verify', '--browser', browser, '--state', state, ...args)
  // The browser receives blocks as they are committed; wait until it holds the node's newest.
  const deadline = Date.now() + 20_000
  const checkpointOf = async (url: string) => (await fetch(`${url}/v1/log/checkpoint`)).text()
  while ((await checkpointOf(browser)) !== (await checkpointOf(node.url))) {
    assert.ok(Date.now() < deadline, 'the browser did not catch up')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const plain = await verify('--json')
  assert.equal(plain.code, 0, plain.stdout + plain.stderr)
  assert.equal((JSON.parse(plain.stdout) as { ok: boolean }).ok, true)
  const withKey = await verify('--key', demo('alice.key.json'))
  assert.equal(withKey.code, 0, withKey.stdout + withKey.stderr)
  const full = await verify('--full')
  assert.equal(full.code, 0, full.stdout + full.stderr)
})

test("a view lets Bob read Alice's account until Alice revokes it", async () => {
  const bob = (JSON.parse(readFileSync(demo('bob.key.json'), 'utf8')) as { person: string }).person
  const before = await vmoney('account', 'show', account('Alice'), '--key', demo('bob.key.json'))
  assert.equal(before.code, 4)
  const granted = await vmoney(
    'view',
    'grant',
    '--key',
    demo('alice.key.json'),
    '--accounts',
    account('Alice'),
    '--to',
    bob,
  )
  assert.equal(granted.code, 0, granted.stderr)
  const shown = await vmoney('account', 'show', account('Alice'), '--key', demo('bob.key.json'))
  assert.equal(shown.code, 0, shown.stderr)
  const view = /view ([0-9a-f]{32})/.exec(granted.stdout)?.[1]
  assert.ok(view !== undefined, granted.stdout)
  const revoked = await vmoney('view', 'revoke', '--key', demo('alice.key.json'), '--view', view)
  assert.equal(revoked.code, 0, revoked.stderr)
  const after = await vmoney('account', 'show', account('Alice'), '--key', demo('bob.key.json'))
  assert.equal(after.code, 4)
})

test('bad usage exits 2, an unreachable node 3, a taken port 5, each with a message', async () => {
  const usage = await vmoney('tx', 'transfer', '--key', demo('alice.key.json'))
  assert.equal(usage.code, 2)
  assert.match(usage.stderr, /required option/)
  const amount = await aliceToBob('1.255')
  assert.equal(amount.code, 2)
  assert.match(amount.stderr, /decimal places/)
  const missingKey = await vmoney('account', 'show', '--key', join(dataDir, 'nope.json'))
  assert.equal(missingKey.code, 2)
  const unreachable = await runCli(['log', 'checkpoint', '--node', `http://127.0.0.1:${await freePort()}`])
  assert.equal(unreachable.code, 3)
  assert.match(unreachable.stderr, /cannot reach/)
  const port = new URL(node.url).port
  const taken = await runCli([
    'node',
    '--data-dir',
    join(dataDir, 'second'),
    '--port',
    port,
    '--log-level',
    'silent',
  ])
  assert.equal(taken.code, 5)
  assert.match(taken.stderr, /listen_failed: cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/)
  const badPort = await runCli(['node', '--data-dir', join(dataDir, 'third'), '--port', 'abc'])
  assert.equal(badPort.code, 2)
  assert.match(badPort.stderr, /config_invalid/)
  const help = await runCli(['--help'])
  assert.equal(help.code, 0)
  assert.match(help.stdout, /Exit codes/)
  assert.ok(existsSync(join(dataDir, 'admin.key.json')))
})
