import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { type RunningBrowser, startBrowser } from '../src/browser/browser.js'
import { audit } from '../src/node/audit.js'
import { loadConfig } from '../src/node/config.js'
import { type DemoWorld, seedDemo } from '../src/node/demo.js'
import type { NodeIdentity } from '../src/node/identity.js'
import { createLogger } from '../src/node/logger.js'
import { type Block, logOrigin, signHeader } from '../src/protocol/block.js'
import { signCheckpoint } from '../src/protocol/checkpoint.js'
import { fromBase64, fromUtf8, toBase64, toBase64Url, utf8 } from '../src/protocol/encoding.js'
import { Frontier, leafHash } from '../src/protocol/merkle.js'
import { startTestNode } from '../src/testing/node-harness.js'
import { freePort, runCli } from '../src/testing/node-process.js'

/**
 * Each forgery on its own fresh node and browser, and the check that catches it. The CLI runs as a real
 * process, so the exit codes and reports are what a user sees.
 */
const syncTimeoutMs = 15_000

interface World {
  readonly harness: Awaited<ReturnType<typeof startTestNode>>
  readonly browser: RunningBrowser
  readonly demo: DemoWorld
  readonly dir: string
  close(): Promise<void>
}

async function startBrowserFor(
  identity: NodeIdentity,
  nodeUrl: string,
  dir: string,
): Promise<RunningBrowser> {
  const key = toBase64Url(identity.signing.publicKey)
  const config = loadConfig(
    { dataDir: dir, browserPort: '0', browserNodes: `${nodeUrl}=${key}`, logLevel: 'silent' },
    {},
  )
  return startBrowser(config, createLogger('silent'))
}

async function startWorld(): Promise<World> {
  const harness = await startTestNode()
  const dir = mkdtempSync(join(tmpdir(), 'vmoney-tamper-'))
  const browser = await startBrowserFor(harness.node.identity, harness.node.url, dir)
  harness.node.publishTo(browser.url)
  const demo = await seedDemo(harness.node.url, harness.node.adminKeyFile, harness.dataDir)
  await synced(harness.node.url, browser.url)
  return {
    harness,
    browser,
    demo,
    dir,
    async close() {
      await browser.close()
      await harness.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

async function synced(nodeUrl: string, browserUrl: string): Promise<void> {
  const deadline = Date.now() + syncTimeoutMs
  for (;;) {
    const [atNode, atBrowser] = await Promise.all(
      [nodeUrl, browserUrl].map(async (url) => (await fetch(`${url}/v1/log/checkpoint`)).text()),
    )
    if (atNode === atBrowser) return
    if (Date.now() > deadline) throw new Error('the browser did not catch up with the node')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

const keyFile = (world: World, name: string) =>
  join(world.harness.dataDir, 'demo', world.demo.persons.find((p) => p.name === name)!.keyFile)
const accountOf = (world: World, name: string) =>
  world.demo.persons.find((p) => p.name === name)!.accounts[0]!

interface Report {
  ok: boolean
  checks: { name: string; ok: boolean; detail: string }[]
  findings: {
    kind: string
    severity: string
    message: string
    leafIndex?: number
    block?: { node?: number; browser?: number }
    leafHash?: { node?: string; browser?: string }
    account?: string
    field?: string
    nodeSays?: string
    logSays?: string
  }[]
}

async function verify(nodeUrl: string, browserUrl: string, state: string, ...args: string[]) {
  const result = await runCli([
    'verify',
    '--node',
    nodeUrl,
    '--browser',
    browserUrl,
    '--state',
    state,
    '--json',
    ...args,
  ])
  assert.ok(result.stdout.length > 0, result.stderr)
  return { code: result.code, report: JSON.parse(result.stdout) as Report }
}

async function getBlock(url: string, height: number): Promise<Block> {
  return (await (await fetch(`${url}/v1/blocks/${height}`)).json()) as Block
}

/** The leaf's text with one character of its ciphertext changed: same shape, other bytes. */
function alteredLeaf(text: string): string {
  return text.replace(
    /"ciphertext":"(.)/,
    (_match, first: string) => `"ciphertext":"${first === 'A' ? 'B' : 'A'}`,
  )
}

/** The same, for a leaf in base64 as blocks carry it. */
function alteredLeafBase64(leaf: string): string {
  return toBase64(utf8(alteredLeaf(fromUtf8(fromBase64(leaf)))))
}

/**
 * A block the node's key signs at `height` in place of the real one: the same previous header, other
 * leaves, and the header, root and checkpoint that go with them.
 */
async function forkedBlock(
  nodeUrl: string,
  identity: NodeIdentity,
  height: number,
  leaves: string[],
): Promise<Block> {
  const real = await getBlock(nodeUrl, height)
  const frontier = new Frontier()
  for (let h = 0; h < height; h++)
    for (const leaf of (await getBlock(nodeUrl, h)).leaves) frontier.append(leafHash(fromBase64(leaf)))
  for (const leaf of leaves) frontier.append(leafHash(fromBase64(leaf)))
  const header = {
    ...real.header,
    leafCount: leaves.length,
    logSize: frontier.size,
    logRoot: toBase64(frontier.root()),
  }
  const origin = logOrigin(identity.nodeId)
  return {
    header,
    signature: signHeader(header, identity.signing.secretKey),
    checkpoint: signCheckpoint(
      { origin, size: frontier.size, root: frontier.root(), extensions: [] },
      origin,
      identity.signing.secretKey,
    ),
    leaves,
  }
}

async function post(
  browserUrl: string,
  block: Block,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${browserUrl}/v1/blocks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(block),
  })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

test('an amount changed in the ledger tables is named by the audit and by verify --key', async (t) => {
  await t.test('ledger_accounts.credits_posted', async () => {
    const world = await startWorld()
    try {
      const { db } = world.harness.node.database
      const alice = accountOf(world, 'Alice')
      const row = await db
        .selectFrom('ledger_accounts')
        .select('credits_posted')
        .where('id', '=', alice)
        .executeTakeFirstOrThrow()
      const forged = String(BigInt(row.credits_posted) + 100_000n)
      await db
        .updateTable('ledger_accounts')
        .set({ credits_posted: forged })
        .where('id', '=', alice)
        .execute()

      const audited = await audit(db, world.harness.node.identity)
      assert.equal(audited.ok, false)
      assert.ok(
        audited.findings.some((f) => f.where === `account ${alice}` && /^creditsPosted: /.test(f.message)),
        JSON.stringify(audited.findings),
      )

      const { code, report } = await verify(
        world.harness.node.url,
        world.browser.url,
        join(world.dir, 's.json'),
        '--key',
        keyFile(world, 'Alice'),
      )
      assert.equal(code, 1)
      const finding = report.findings.find((f) => f.kind === 'balance')
      assert.deepEqual(
        {
          account: finding?.account,
          field: finding?.field,
          nodeSays: finding?.nodeSays,
          logSays: finding?.logSays,
        },
        { account: alice, field: 'creditsPosted', nodeSays: forged, logSays: row.credits_posted },
      )
      assert.equal(report.checks.find((c) => c.name === 'balances')?.ok, false)
    } finally {
      await world.close()
    }
  })

  await t.test('ledger_entries.amount', async () => {
    const world = await startWorld()
    try {
      const { db } = world.harness.node.database
      const bob = accountOf(world, 'Bob')
      // Bob's credit of Alice's 25.00 "lunch".
      const entry = await db
        .selectFrom('ledger_entries')
        .selectAll()
        .where('account', '=', bob)
        .where('amount', '=', '2500')
        .executeTakeFirstOrThrow()
      await db.updateTable('ledger_entries').set({ amount: '250' }).where('seq', '=', entry.seq).execute()

      const { code, report } = await verify(
        world.harness.node.url,
        world.browser.url,
        join(world.dir, 's.json'),
        '--key',
        keyFile(world, 'Bob'),
      )
      assert.equal(code, 1)
      const finding = report.findings.find((f) => f.kind === 'entry')
      assert.deepEqual(
        {
          account: finding?.account,
          field: finding?.field,
          leafIndex: finding?.leafIndex,
          nodeSays: finding?.nodeSays,
          logSays: finding?.logSays,
        },
        { account: bob, field: 'amount', leafIndex: entry.leaf, nodeSays: '250', logSays: '2500' },
      )
      // The balances were not touched: only the statement lies.
      assert.equal(report.checks.find((c) => c.name === 'balances')?.ok, true)
      // audit() rebuilds balances, not statements (src/node/audit.ts): this forgery is the verifier's to name.
    } finally {
      await world.close()
    }
  })
})

test("a leaf changed in the node's chain tables is a split view that verify --full names", async () => {
  const world = await startWorld()
  try {
    const { db } = world.harness.node.database
    const lunch = await db
      .selectFrom('ledger_entries')
      .select('leaf')
      .where('account', '=', accountOf(world, 'Bob'))
      .where('amount', '=', '2500')
      .executeTakeFirstOrThrow()
    const row = await db
      .selectFrom('chain_leaves')
      .selectAll()
      .where('leaf_index', '=', lunch.leaf)
      .executeTakeFirstOrThrow()
    await db
      .updateTable('chain_leaves')
      .set({ leaf: alteredLeaf(row.leaf) })
      .where('leaf_index', '=', lunch.leaf)
      .execute()

    const { code, report } = await verify(
      world.harness.node.url,
      world.browser.url,
      join(world.dir, 's.json'),
      '--full',
    )
    assert.equal(code, 1, JSON.stringify(report, null, 1))
    const split = report.findings.find((f) => f.kind === 'split_view')
    assert.ok(split !== undefined, JSON.stringify(report.findings))
    assert.equal(split.leafIndex, lunch.leaf)
    assert.deepEqual(split.block, { node: row.block_height, browser: row.block_height })
    assert.notEqual(split.leafHash?.node, split.leafHash?.browser)
    assert.match(split.message, new RegExp(`leaf ${lunch.leaf} .*block ${row.block_height}`))
    assert.equal(existsSync(join(world.dir, 's.json')), false, 'no state is kept after a failed run')
  } finally {
    await world.close()
  }
})

test('a rewritten block, signed by the node, is refused by the browser with an alarm', async () => {
  const world = await startWorld()
  try {
    const { url } = world.harness.node
    const head = (await (await fetch(`${url}/v1/blocks`)).json()) as Block
    const height = head.header.height
    const real = await getBlock(url, height)
    const forged = await forkedBlock(url, world.harness.node.identity, height, [
      alteredLeafBase64(real.leaves[0]!),
    ])
    const refused = await post(world.browser.url, forged)
    assert.equal(refused.status, 409)
    assert.equal(refused.body['code'], 'block_rewrite')

    const { alarms } = (await (await fetch(`${world.browser.url}/v1/alarms`)).json()) as {
      alarms: { node: string; height: number; kind: string }[]
    }
    assert.deepEqual(
      alarms.map(({ node, height, kind }) => ({ node, height, kind })),
      [{ node: world.harness.node.identity.nodeId, height, kind: 'rewrite' }],
    )
    const metrics = await (await fetch(`${world.browser.url}/metrics`)).text()
    assert.match(metrics, /vmoney_browser_alarms\{[^}]*kind="rewrite"[^}]*\} 1/)
    assert.match(metrics, /vmoney_browser_refusals_total\{code="block_rewrite"\} 1/)
    // What the browser holds did not change.
    assert.deepEqual(await getBlock(world.browser.url, height), real)
  } finally {
    await world.close()
  }
})

test('a browser that serves a forked log is caught against the node and against the state of another browser', async () => {
  const world = await startWorld()
  // A second browser for the same node key, that can never reach the node: it holds only what it is fed.
  const forkDir = mkdtempSync(join(tmpdir(), 'vmoney-fork-'))
  const forkBrowser = await startBrowserFor(
    world.harness.node.identity,
    `http://127.0.0.1:${await freePort()}`,
    forkDir,
  )
  try {
    const { url, identity } = world.harness.node
    const head = (await (await fetch(`${url}/v1/blocks`)).json()) as Block
    const forkHeight = head.header.height - 1
    assert.ok(forkHeight >= 1, 'the demo world has blocks to fork from')
    for (let h = 0; h < forkHeight; h++)
      assert.equal((await post(forkBrowser.url, await getBlock(url, h))).status, 201)
    // The fork keeps the first leaf of the real block and changes the one after it.
    const real = await getBlock(url, forkHeight)
    const firstLeaf = real.header.firstLeaf
    const second = alteredLeafBase64(real.leaves[0]!)
    assert.equal(
      (await post(forkBrowser.url, await forkedBlock(url, identity, forkHeight, [real.leaves[0]!, second])))
        .status,
      201,
    )

    const state = join(world.dir, 'state.json')
    const split = await verify(url, forkBrowser.url, join(world.dir, 'fresh.json'))
    assert.equal(split.code, 1)
    const finding = split.report.findings.find((f) => f.kind === 'split_view')
    assert.ok(finding !== undefined, JSON.stringify(split.report, null, 1))
    assert.equal(finding.leafIndex, firstLeaf + 1)
    assert.deepEqual(finding.block, {
      node: real.header.logSize > firstLeaf + 1 ? forkHeight : forkHeight + 1,
      browser: forkHeight,
    })
    assert.ok(finding.leafHash?.node !== undefined && finding.leafHash.browser !== undefined)
    assert.notEqual(finding.leafHash.node, finding.leafHash.browser)

    // A verifier that checked the honest browser before sees that the forked one does not extend it.
    assert.equal((await verify(url, world.browser.url, state)).code, 0)
    const later = await verify(url, forkBrowser.url, state)
    assert.equal(later.code, 1)
    assert.equal(later.report.checks.find((c) => c.name === 'browser consistency')?.ok, false)
  } finally {
    await forkBrowser.close()
    rmSync(forkDir, { recursive: true, force: true })
    await world.close()
  }
})
