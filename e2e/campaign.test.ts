/**
 * The crash-safety campaign: runs of load from several clients, a SIGKILL of a random process (an api
 * replica, the funnel process or the block browser) at a random moment, a restart, and the checks that nothing acknowledged was lost
 * or doubled, the chain has no gap or fork, the audit passes, money is conserved and browser and node
 * agree. `npm test` runs a short profile per dialect; `npm run campaign` runs 50 runs per dialect.
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { NodeClient, type Outcome } from '../src/client/client.js'
import { type DeviceKeys, readKeyFile } from '../src/client/key-file.js'
import { type DemoWorld, seedDemo } from '../src/node/demo.js'
import { openDatabase } from '../src/node/storage/database.js'
import { type BlockHeader, headerHash } from '../src/protocol/block.js'
import { toBase64 } from '../src/protocol/encoding.js'
import type { SignedTransaction } from '../src/protocol/transaction.js'
import {
  createTestDatabase,
  dropTestDatabase,
  testDatabaseArgs,
  testDatabaseUrl,
  testDialect,
} from '../src/testing/databases.js'
import { exited, freePort, runCli, spawnBrowser, spawnServer } from '../src/testing/node-process.js'

type Started = { readonly child: ChildProcess; readonly url: string }

/** Runs in this profile: `VMONEY_CAMPAIGN_RUNS` (npm run campaign sets 50). */
const runs = Number(process.env.VMONEY_CAMPAIGN_RUNS ?? 10)
const clients = 4
const batchSize = 25
/** The kill comes this long after the load starts, at random within the bounds. */
const killAfterMsMin = 100
const killAfterMsMax = 1_500
/** How long outcomes, and the browser's catching up, may take after the restart. */
const settleMs = 20_000
/** Outcomes also read through the api, per run. */
const apiSample = 20

interface Tally {
  runs: number
  kills: Record<Target, number>
  acknowledged: number
  accepted: number
  lost: number
  doubled: number
}

test(`crash campaign on ${testDialect}: ${runs} runs of load, SIGKILL, restart and checks`, {
  timeout: runs * 60_000,
}, async () => {
  const tally: Tally = {
    runs: 0,
    kills: { api: 0, funnel: 0, browser: 0 },
    acknowledged: 0,
    accepted: 0,
    lost: 0,
    doubled: 0,
  }
  for (let run = 0; run < runs; run++) await campaignRun(tally)
  process.stdout.write(
    `campaign ${testDialect}: runs ${tally.runs}, kills ${tally.kills.api + tally.kills.funnel + tally.kills.browser} (api ${tally.kills.api}, funnel ${tally.kills.funnel}, browser ${tally.kills.browser}), acknowledged ${tally.acknowledged}, accepted ${tally.accepted}, lost ${tally.lost}, doubled ${tally.doubled}\n`,
  )
  assert.equal(tally.lost, 0)
  assert.equal(tally.doubled, 0)
  assert.ok(tally.acknowledged > 0, 'the load got transactions acknowledged before the kills')
})

type Target = 'api' | 'funnel' | 'browser'
const targets: readonly Target[] = ['api', 'funnel', 'browser']

async function campaignRun(tally: Tally): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-campaign-'))
  const ports = { api: await freePort(), funnel: await freePort(), browser: await freePort() }
  const browserUrl = `http://127.0.0.1:${ports.browser}`
  const processes: Partial<Record<Target, Started>> = {}
  const nodeArgs = [
    '--data-dir',
    dataDir,
    '--database-url',
    await createTestDatabase(dataDir),
    '--log-level',
    'warn',
  ]
  let nodeKey = ''
  const start = async (target: Target): Promise<Started> => {
    if (target === 'browser') {
      const follow = `${processes.api!.url}=${nodeKey}`
      return spawnBrowser([
        '--data-dir',
        dataDir,
        '--follow',
        follow,
        '--browser-port',
        String(ports.browser),
      ])
    }
    const args = ['node', ...nodeArgs, '--role', target, '--port', String(ports[target])]
    return spawnServer(args, 'node', target === 'funnel' ? { VMONEY_PUBLISH_TO: browserUrl } : {})
  }
  try {
    // The funnel first: on a fresh database it pools the genesis and commits it, which the api waits for.
    processes.funnel = await start('funnel')
    processes.api = await start('api')
    const apiUrl = processes.api.url
    nodeKey = ((await (await fetch(`${apiUrl}/v1/node`)).json()) as { signingKey: { x: string } }).signingKey
      .x
    processes.browser = await start('browser')
    const world = await seedDemo(apiUrl, join(dataDir, 'admin.key.json'), dataDir)
    const person = (name: string) => world.persons.find((p) => p.name === name)!
    const keysOf = (name: string) => readKeyFile(join(dataDir, 'demo', person(name).keyFile))
    const parties: { keys: DeviceKeys; from: string; to: string }[] = [
      { keys: keysOf('Alice'), from: person('Alice').accounts[0]!, to: person('Bob').accounts[0]! },
      { keys: keysOf('Bob'), from: person('Bob').accounts[0]!, to: person('Alice').accounts[0]! },
    ]
    const acknowledged = await loadAndKill(apiUrl, world, parties, async () => {
      const target = targets[Math.floor(Math.random() * targets.length)]!
      processes[target]!.child.kill('SIGKILL')
      tally.kills[target]++
      await exited(processes[target]!.child)
      processes[target] = await start(target)
    })
    const node = processes.api

    const outcomes = await settledOutcomes(dataDir, [...acknowledged.keys()])
    for (const outcome of outcomes.values())
      if (outcome.status !== 'accepted' && outcome.status !== 'rejected') tally.lost++
    // The api tells the same outcomes as the pool table (a sample: each answer is a signed read).
    const admin = readKeyFile(join(dataDir, 'admin.key.json'))
    const client = new NodeClient(node.url)
    for (const id of [...outcomes.keys()].sort(() => Math.random() - 0.5).slice(0, apiSample)) {
      const told = (await client.get(admin, `/v1/transactions/${id}`)) as Outcome
      assert.equal(told.status, outcomes.get(id)!.status, `the api's outcome of ${id}`)
    }
    await checkDatabase(dataDir, world, outcomes, tally)
    const audited = await runCli(['audit', '--data-dir', dataDir, ...testDatabaseArgs(dataDir), '--json'])
    assert.equal(audited.code, 0, audited.stdout + audited.stderr)
    await agree(node.url, browserUrl, dataDir)
    tally.runs++
    tally.acknowledged += acknowledged.size
    tally.accepted += [...outcomes.values()].filter((o) => o.status === 'accepted').length
  } finally {
    const running = Object.values(processes)
    for (const started of running) started.child.kill('SIGKILL')
    await Promise.all(running.map((started) => exited(started.child)))
    await dropTestDatabase(dataDir)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/** Load from several clients until the kill, which comes at a random moment; returns what was acknowledged. */
async function loadAndKill(
  url: string,
  world: DemoWorld,
  parties: readonly { keys: DeviceKeys; from: string; to: string }[],
  kill: () => Promise<void>,
): Promise<Map<string, SignedTransaction>> {
  const client = new NodeClient(url)
  // Asked once before the load, so that signing needs no request that the kill could cut.
  await client.node()
  const acknowledged = new Map<string, SignedTransaction>()
  let stop = false
  const load = Array.from({ length: clients }, async (_, c) => {
    const party = parties[c % parties.length]!
    while (!stop) {
      // Small amounts, and now and then more than the balance: both outcomes must survive the crash.
      const batch = await Promise.all(
        Array.from({ length: batchSize }, (_, i) =>
          client.sign(party.keys, {
            type: 'transfer',
            debit: party.from,
            credit: party.to,
            amount: i === 0 && c === 0 ? '999999999' : String(1 + i),
            asset: world.asset,
          }),
        ),
      )
      try {
        for (const outcome of await client.submit(batch))
          acknowledged.set(outcome.id, batch.find((s) => s.tx.id === outcome.id)!)
      } catch {
        // Cut by the kill (or refused while the node restarts): not acknowledged, so not counted.
        if (stop) return
      }
    }
  })
  await new Promise((resolve) =>
    setTimeout(resolve, killAfterMsMin + Math.random() * (killAfterMsMax - killAfterMsMin)),
  )
  await kill()
  stop = true
  await Promise.all(load)
  return acknowledged
}

/**
 * The pool's outcome of every acknowledged id once none is pending any more (or `settleMs` passed): an id
 * the pool does not hold is lost.
 */
async function settledOutcomes(dataDir: string, ids: readonly string[]): Promise<Map<string, Outcome>> {
  const database = await openDatabase(testDatabaseUrl(dataDir))
  try {
    const deadline = Date.now() + settleMs
    for (;;) {
      const outcomes = new Map<string, Outcome>(ids.map((id) => [id, { id, status: 'missing' as never }]))
      for (let start = 0; start < ids.length; start += 500) {
        const rows = await database.db
          .selectFrom('pool')
          .select(['id', 'status'])
          .where('id', 'in', ids.slice(start, start + 500))
          .execute()
        for (const row of rows) outcomes.set(row.id, { id: row.id, status: row.status })
      }
      const pending = [...outcomes.values()].some((outcome) => outcome.status === 'pending')
      if (!pending || Date.now() > deadline) return outcomes
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  } finally {
    await database.close()
  }
}

/** Each acknowledged transaction in the log once if accepted, never if rejected; no gap, no fork; money kept. */
async function checkDatabase(
  dataDir: string,
  world: DemoWorld,
  outcomes: ReadonlyMap<string, Outcome>,
  tally: Tally,
): Promise<void> {
  const database = await openDatabase(testDatabaseUrl(dataDir))
  try {
    const { db } = database
    const ids = [...outcomes.keys()]
    const counts = new Map<string, number>()
    for (let start = 0; start < ids.length; start += 500) {
      const rows = await db
        .selectFrom('chain_leaves')
        .select('transaction_id')
        .where('transaction_id', 'in', ids.slice(start, start + 500))
        .execute()
      for (const row of rows) counts.set(row.transaction_id, (counts.get(row.transaction_id) ?? 0) + 1)
    }
    for (const [id, outcome] of outcomes) {
      const n = counts.get(id) ?? 0
      if (n > 1) tally.doubled++
      assert.equal(n, outcome.status === 'accepted' ? 1 : 0, `transaction ${id} is in the log ${n} times`)
    }
    const headers = (await db.selectFrom('chain_blocks').select('header').orderBy('height').execute()).map(
      (row) => JSON.parse(row.header) as BlockHeader,
    )
    headers.forEach((header, height) => {
      assert.equal(header.height, height, 'no gap in block heights')
      if (height > 0) {
        assert.equal(header.previous, toBase64(headerHash(headers[height - 1]!)), 'no fork')
        assert.equal(header.firstLeaf, headers[height - 1]!.logSize)
      }
    })
    // The asset's total is what issuance put in: the issuer's account is as negative as the others hold.
    const totals = await db
      .selectFrom('ledger_accounts')
      .select(['credits_posted', 'debits_posted'])
      .where('asset', '=', world.asset)
      .execute()
    const sum = totals.reduce(
      (total, row) => total + BigInt(row.credits_posted) - BigInt(row.debits_posted),
      0n,
    )
    assert.equal(sum, 0n, 'transfers neither create nor destroy money')
  } finally {
    await database.close()
  }
}

/** The browser catches up with the node, and the verifier finds them in agreement. */
async function agree(nodeUrl: string, browserUrl: string, dataDir: string): Promise<void> {
  const deadline = Date.now() + settleMs
  for (;;) {
    const [atNode, atBrowser] = await Promise.all(
      [nodeUrl, browserUrl].map(async (url) => (await fetch(`${url}/v1/log/checkpoint`)).text()),
    )
    if (atNode === atBrowser) break
    assert.ok(Date.now() < deadline, 'the browser did not catch up with the node')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const state = join(dataDir, 'verify.json')
  const verified = await runCli([
    'verify',
    '--node',
    nodeUrl,
    '--browser',
    browserUrl,
    '--state',
    state,
    '--json',
  ])
  assert.equal(verified.code, 0, verified.stdout + verified.stderr)
}
