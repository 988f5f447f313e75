import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { type RunningBrowser, startBrowser } from '../src/browser/browser.js'
import { NodeClient } from '../src/client/client.js'
import { newKeyFile, readKeyFile, writeKeyFile } from '../src/client/key-file.js'
import { loadConfig } from '../src/node/config.js'
import { type DemoWorld, demoAsset, seedDemo } from '../src/node/demo.js'
import { createLogger } from '../src/node/logger.js'
import { toBase64Url } from '../src/protocol/encoding.js'
import { generateSigningKey, keyId, publicJwk } from '../src/protocol/keys.js'
import { startTestNode } from '../src/testing/node-harness.js'
import { freePort, vmoneyBin } from '../src/testing/node-process.js'
import { parseState } from '../src/verifier/state.js'

/** An honest node publishing to its block browser, and `vmoney verify` run against both as a user runs it. */
const syncTimeoutMs = 15_000
const cliTimeoutMs = 120_000
const password = 'correct horse battery staple'

let harness: Awaited<ReturnType<typeof startTestNode>>
let browser: RunningBrowser
let browserDir: string
let world: DemoWorld
let workDir: string
const demoKey = (name: string) =>
  join(harness.dataDir, 'demo', world.persons.find((p) => p.name === name)!.keyFile)
const personOf = (name: string) => readKeyFile(demoKey(name)).person!
const accountOf = (name: string) => world.persons.find((p) => p.name === name)!.accounts[0]!

before(async () => {
  harness = await startTestNode()
  browserDir = mkdtempSync(join(tmpdir(), 'vmoney-browser-'))
  workDir = mkdtempSync(join(tmpdir(), 'vmoney-verify-'))
  const nodeKey = toBase64Url(harness.node.identity.signing.publicKey)
  const config = loadConfig(
    {
      dataDir: browserDir,
      browserPort: '0',
      browserNodes: `${harness.node.url}=${nodeKey}`,
      logLevel: 'silent',
    },
    {},
  )
  browser = await startBrowser(config, createLogger('silent'))
  harness.node.publishTo(browser.url)
  world = await seedDemo(harness.node.url, harness.node.adminKeyFile, harness.dataDir)
  await synced()
})
after(async () => {
  await browser?.close()
  await harness?.close()
  rmSync(browserDir, { recursive: true, force: true })
  rmSync(workDir, { recursive: true, force: true })
})

/** Waits until the browser holds the node's newest checkpoint. */
async function synced(): Promise<void> {
  const deadline = Date.now() + syncTimeoutMs
  for (;;) {
    const [atNode, atBrowser] = await Promise.all(
      [harness.node.url, browser.url].map(async (url) => (await fetch(`${url}/v1/log/checkpoint`)).text()),
    )
    if (atNode === atBrowser) return
    if (Date.now() > deadline) throw new Error('the browser did not catch up with the node')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function transfer(from: string, to: string, amount: string): Promise<void> {
  const client = new NodeClient(harness.node.url)
  const keys = readKeyFile(demoKey(from))
  const signed = await client.sign(keys, {
    type: 'transfer',
    debit: accountOf(from),
    credit: accountOf(to),
    amount,
    asset: demoAsset,
  })
  const [outcome] = await client.submitAndWait(keys, [signed])
  assert.equal(outcome?.status, 'accepted')
  await synced()
}

/** `vmoney <args>` as a real process, with extra environment and stdin. */
function vmoney(
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [vmoneyBin, ...args], {
    env: { ...process.env, VMONEY_PASSWORD: '', ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
    timeout: cliTimeoutMs,
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  child.stdin.end(options.input ?? '')
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code: code ?? 1, stdout, stderr })))
}

interface Report {
  ok: boolean
  checkpoint: { size: number; root: string } | null
  checks: { name: string; ok: boolean; detail: string }[]
  findings: { kind: string; severity: string; message: string }[]
  leavesPerSecond?: number
  stateWritten: boolean
}

async function verify(...args: string[]): Promise<{ code: number; report: Report; stderr: string }> {
  const result = await vmoney([
    'verify',
    '--node',
    harness.node.url,
    '--browser',
    browser.url,
    '--json',
    ...args,
  ])
  assert.ok(result.stdout.length > 0, `no report: ${result.stderr}`)
  return { code: result.code, report: JSON.parse(result.stdout) as Report, stderr: result.stderr }
}

const check = (report: Report, name: string) => report.checks.find((c) => c.name === name)

test('a plain run verifies, keeps the state, and a second run checks consistency from it', async () => {
  const state = join(workDir, 'plain.json')
  const first = await verify('--state', state)
  assert.equal(first.code, 0, JSON.stringify(first.report, null, 1) + first.stderr)
  assert.equal(first.report.ok, true)
  assert.equal(first.report.stateWritten, true)
  assert.match(check(first.report, 'node consistency')!.detail, /first run/)
  assert.equal(check(first.report, 'browser head block')?.ok, true)
  const kept = parseState(readFileSync(state, 'utf8'))
  assert.equal(kept.nodes[harness.node.identity.nodeId]?.checkpoint?.size, first.report.checkpoint!.size)

  await transfer('Alice', 'Bob', '125')
  const second = await verify('--state', state)
  assert.equal(second.code, 0, JSON.stringify(second.report, null, 1))
  assert.ok(second.report.checkpoint!.size > first.report.checkpoint!.size)
  assert.match(
    check(second.report, 'browser consistency')!.detail,
    new RegExp(
      `extends the verified size ${first.report.checkpoint!.size} to ${second.report.checkpoint!.size}`,
    ),
  )

  const human = await vmoney([
    'verify',
    '--node',
    harness.node.url,
    '--browser',
    browser.url,
    '--state',
    state,
  ])
  assert.equal(human.code, 0, human.stdout + human.stderr)
  assert.match(human.stdout, /✓ node and browser agree/)
  assert.match(human.stdout, /verified: log size \d+/)
})

test('a full run checks every block and measures leaves/s; the next one downloads only new blocks', async () => {
  const state = join(workDir, 'full.json')
  const first = await verify('--state', state, '--full')
  assert.equal(first.code, 0, JSON.stringify(first.report, null, 1))
  assert.ok((first.report.leavesPerSecond ?? 0) > 0)
  assert.match(
    check(first.report, 'blocks')!.detail,
    new RegExp(`${first.report.checkpoint!.size} leaves re-hashed`),
  )
  assert.equal(check(first.report, 'node leaves match browser')?.ok, true)
  const kept = parseState(readFileSync(state, 'utf8')).nodes[harness.node.identity.nodeId]!
  assert.equal(kept.full?.frontier.size, first.report.checkpoint!.size)

  await transfer('Bob', 'Alice', '50')
  const second = await verify('--state', state, '--full')
  assert.equal(second.code, 0, JSON.stringify(second.report, null, 1))
  assert.match(
    check(second.report, 'stored headers')!.detail,
    new RegExp(`${kept.full!.headers.length} headers`),
  )
  assert.match(check(second.report, 'blocks')!.detail, /^1 new blocks, 1 leaves re-hashed/)
})

test('with a key file, the person’s transactions are decrypted, signed, and match the node', async () => {
  const { code, report } = await verify('--state', join(workDir, 'key.json'), '--key', demoKey('Alice'))
  assert.equal(code, 0, JSON.stringify(report, null, 1))
  for (const name of ['readable leaves', 'client signatures', 'accounts', 'statements', 'balances'])
    assert.equal(check(report, name)?.ok, true, name)
  assert.match(check(report, 'balances')!.detail, /^1 accounts/)
  assert.match(check(report, 'statements')!.detail, /^\d+ entries match their leaves, 0 older/)
})

test('a view Alice grants Bob discloses her history to his key, which reads and checks it too', async () => {
  const granted = await vmoney([
    'view',
    'grant',
    '--key',
    demoKey('Alice'),
    '--accounts',
    accountOf('Alice'),
    '--to',
    personOf('Bob'),
    '--node',
    harness.node.url,
  ])
  assert.equal(granted.code, 0, granted.stdout + granted.stderr)
  await synced()
  const { code, report } = await verify('--state', join(workDir, 'view.json'), '--key', demoKey('Bob'))
  assert.equal(code, 0, JSON.stringify(report, null, 1))
  const disclosed = Number(/\((\d+) disclosed by views\)/.exec(check(report, 'readable leaves')!.detail)?.[1])
  assert.ok(disclosed > 0, check(report, 'readable leaves')!.detail)
})

test('a password key registered with `keys password` verifies what it can read, the password from stdin', async () => {
  const registered = await vmoney(['keys', 'password', '--key', demoKey('Bob'), '--node', harness.node.url], {
    env: { VMONEY_PASSWORD: password },
  })
  assert.equal(registered.code, 0, registered.stdout + registered.stderr)
  assert.match(registered.stdout, /registered the password key/)
  await transfer('Alice', 'Bob', '10')
  const args = ['verify', '--node', harness.node.url, '--browser', browser.url, '--json']
  const result = await vmoney(
    [...args, '--state', join(workDir, 'password.json'), '--password', '--person', personOf('Bob')],
    {
      input: `${password}\n`,
    },
  )
  assert.equal(result.code, 0, result.stdout + result.stderr)
  const report = JSON.parse(result.stdout) as Report
  assert.match(check(report, 'statements')!.detail, /^1 entries match their leaves, \d+ older than the key/)
  assert.ok(report.findings.some((f) => f.severity === 'note' && /older than this key/.test(f.message)))
})

test('a wrong key or password is refused with a clear message, and the state stays as it was', async () => {
  const state = join(workDir, 'wrong.json')
  assert.equal((await verify('--state', state)).code, 0)
  const before = readFileSync(state, 'utf8')
  const stranger = join(workDir, 'stranger.key.json')
  writeKeyFile(stranger, newKeyFile())
  const unknown = await vmoney([
    'verify',
    '--node',
    harness.node.url,
    '--browser',
    browser.url,
    '--state',
    state,
    '--key',
    stranger,
  ])
  assert.equal(unknown.code, 2)
  assert.match(unknown.stderr, /does not accept key .*signer_key_not_found/)
  const guessed = await vmoney(
    [
      'verify',
      '--node',
      harness.node.url,
      '--browser',
      browser.url,
      '--state',
      state,
      '--password',
      '--person',
      personOf('Alice'),
    ],
    { env: { VMONEY_PASSWORD: 'not the password at all' } },
  )
  assert.equal(guessed.code, 2)
  assert.match(guessed.stderr, /right key or password/)
  const notAKey = join(workDir, 'not-a-key.json')
  writeFileSync(notAKey, '{"hello": "world"}')
  const garbage = await vmoney([
    'verify',
    '--node',
    harness.node.url,
    '--browser',
    browser.url,
    '--state',
    state,
    '--key',
    notAKey,
  ])
  assert.equal(garbage.code, 2)
  assert.match(garbage.stderr, /key/)
  assert.equal(readFileSync(state, 'utf8'), before)
})

test('another key at the URL of a pinned node fails the run', async () => {
  const other = generateSigningKey()
  const state = join(workDir, 'pinned.json')
  const pinned = {
    v: 1,
    nodes: {
      [keyId(publicJwk('Ed25519', other.publicKey))]: {
        url: harness.node.url,
        publicKey: toBase64Url(other.publicKey),
        checkpoint: null,
        full: null,
      },
    },
  }
  writeFileSync(state, JSON.stringify(pinned))
  const { code, report } = await verify('--state', state)
  assert.equal(code, 1)
  assert.equal(check(report, 'node key')?.ok, false)
  assert.match(
    report.findings.find((f) => f.kind === 'key_changed')!.message,
    /now shows key .* pinned before/,
  )
  assert.deepEqual(JSON.parse(readFileSync(state, 'utf8')), pinned)
})

test('a corrupt state file exits 2 and is left untouched', async () => {
  const state = join(workDir, 'corrupt.json')
  for (const text of [
    '{"v": 1, "nodes": {',
    '{"v": 2, "nodes": {}}',
    '{"v": 1, "nodes": {}, "extra": true}',
  ]) {
    writeFileSync(state, text)
    const result = await vmoney([
      'verify',
      '--node',
      harness.node.url,
      '--browser',
      browser.url,
      '--state',
      state,
    ])
    assert.equal(result.code, 2, result.stdout + result.stderr)
    assert.match(result.stderr, /not a valid verifier state.*left as it is/)
    assert.equal(readFileSync(state, 'utf8'), text)
  }
})

test('an unreachable node or browser exits 3', async () => {
  const nowhere = `http://127.0.0.1:${await freePort()}`
  const state = join(workDir, 'unreachable.json')
  for (const [node, browserUrl] of [
    [nowhere, browser.url],
    [harness.node.url, nowhere],
  ] as const) {
    const result = await vmoney(['verify', '--node', node, '--browser', browserUrl, '--state', state])
    assert.equal(result.code, 3, result.stdout + result.stderr)
    assert.match(result.stderr, /cannot reach the (node|browser)/)
  }
})

test('`vmoney verify --help` documents the exit codes', async () => {
  const help = await vmoney(['verify', '--help'])
  assert.equal(help.code, 0)
  assert.match(help.stdout, /--password/)
  assert.match(help.stdout, /3 a server is unreachable/)
})
