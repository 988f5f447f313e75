import type { ChildProcess } from 'node:child_process'
import { createPrivateKey, sign as nodeSign } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { CliExit, exitCodes } from '../cli/output.js'
import { encodeSubmission, NodeClient } from '../client/client.js'
import { type DeviceKeys, newKeyFile, openKeyFile, readKeyFile } from '../client/key-file.js'
import { nodePrimitives } from '../node/crypto/node-primitives.js'
import { toBase64Url } from '../protocol/encoding.js'
import { type EnvelopePrimitives, portablePrimitives } from '../protocol/envelope.js'
import { assert } from '../protocol/errors.js'
import { generateEncryptionKey } from '../protocol/keys.js'
import {
  newId,
  nowTimestamp,
  type SignedTransaction,
  type Transaction,
  transactionBytes,
} from '../protocol/transaction.js'
import type { Dialect } from '../storage/connect.js'
import { dropTestDatabase } from '../testing/databases.js'
import { exited, freePort, spawnNode } from '../testing/node-process.js'
import { logBenchLeaves, measureConsistency, measureFull, measureProofs, startLogBench } from './log-bench.js'
import { measureSqlBaseline } from './sql-baseline.js'

/** Bounds of one bench run: everything stops by itself. */
export const benchAccounts = 256
export const benchTransfers = 60_000
export const benchBatchSize = 500
export const benchConcurrency = 16
export const finalityRatePerS = 1_000
export const finalityDurationMs = 10_000
/** Transfers pooled while no funnel runs, then decided by a funnel alone: about 15 full blocks. */
export const drainTransfers = 60_000
/**
 * Leaf encryption of each funnel-alone round, on one database: public and sealed in turn, ABBABAAB, so
 * that neither runs more often on the larger database and a drift as it grows cancels out. Each pair of
 * rounds (1–2, 3–4, …) gives one cost: their median is the figure, their range its noise.
 */
export const funnelRounds: readonly boolean[] = [false, true, true, false, true, false, false, true]
/** The first of them warm the new funnel process (its compiled code, its page cache): not counted. */
export const drainWarmUp = 12_000
const drainTimeoutMs = 120_000
const drainPollMs = 100
const verifyMeasureMs = 1_000

interface Result {
  readonly name: string
  readonly value: number
  readonly unit: string
}

/** Signs with node:crypto: the bench's clients should not be the bottleneck they measure. */
function fastSigner(keys: DeviceKeys) {
  const privateKey = createPrivateKey({ key: { ...keys.file.signing }, format: 'jwk' })
  return (tx: Transaction): SignedTransaction => ({
    tx,
    sig: toBase64Url(nodeSign(null, transactionBytes(tx), privateKey)),
  })
}

/**
 * X25519 agreements per second on one thread: what a sealer pays for each recipient its KEK cache misses
 * (a customer not seen lately, every customer after a restart). A tenth more first, to warm up.
 */
function measureAgreements(primitives: EnvelopePrimitives, count: number): number {
  const { secretKey } = generateEncryptionKey()
  const publicKeys = Array.from({ length: count + count / 10 }, () => generateEncryptionKey().publicKey)
  for (const publicKey of publicKeys.slice(count)) primitives.agree(secretKey, publicKey)
  const started = performance.now()
  for (const publicKey of publicKeys.slice(0, count)) primitives.agree(secretKey, publicKey)
  return Math.round(count / ((performance.now() - started) / 1000))
}

/** The machine's own ceiling: libsodium Ed25519 verifications per second on two threads at once. */
async function measureVerifyCeiling(threads: number): Promise<number> {
  const code = `
    const { parentPort } = require('node:worker_threads')
    const sodium = require(${JSON.stringify(createRequire(import.meta.url).resolve('sodium-native'))})
    const pk = Buffer.alloc(32), sk = Buffer.alloc(64), sig = Buffer.alloc(64), msg = Buffer.alloc(400, 7)
    sodium.crypto_sign_keypair(pk, sk); sodium.crypto_sign_detached(sig, msg, sk)
    const end = Date.now() + ${verifyMeasureMs}; let n = 0
    while (Date.now() < end) { for (let i = 0; i < 100; i++) sodium.crypto_sign_verify_detached(sig, msg, pk); n += 100 }
    parentPort.postMessage(n)`
  const counts = await Promise.all(
    Array.from(
      { length: threads },
      () =>
        new Promise<number>((resolve, reject) => {
          const worker = new Worker(code, { eval: true })
          worker.once('message', (n: number) => {
            resolve(n)
            void worker.terminate()
          })
          worker.once('error', reject)
        }),
    ),
  )
  return Math.round(counts.reduce((a, b) => a + b, 0) / (verifyMeasureMs / 1000))
}

/** What sealing costs, in % of the public figure. */
const costPct = (publicValue: number, sealedValue: number) =>
  Number((100 * (1 - sealedValue / publicValue)).toFixed(1))

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0
}

/** What a node's Prometheus metrics say of its funnel: transactions decided (and accepted), seconds of steps. */
async function funnelMetrics(
  url: string,
): Promise<{ decided: number; accepted: number; busySeconds: number }> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const value = (pattern: RegExp) => {
    let sum = 0
    for (const match of text.matchAll(pattern)) sum += Number(match[1])
    return sum
  }
  return {
    decided: value(/^vmoney_transactions_decided_total\{[^}]*\} (\S+)$/gm),
    accepted: value(/^vmoney_transactions_decided_total\{result="accepted"\} (\S+)$/gm),
    busySeconds: value(/^vmoney_funnel_step_seconds_sum (\S+)$/gm),
  }
}

async function stopNode(node: ChildProcess): Promise<void> {
  node.kill('SIGTERM')
  await exited(node)
}

/**
 * The funnel alone: an api replica pools the transfers while no funnel runs, then a funnel process decides
 * them with nothing else running, so that its busy time is its own (and its sealing thread's), not time
 * spent waiting for a core that the clients and the api hold. Decided per second of funnel step time,
 * after the warm-up.
 */
async function measureFunnelAlone(
  dialect: Dialect,
  dataDir: string,
  env: NodeJS.ProcessEnv,
  drain: readonly SignedTransaction[],
): Promise<number> {
  const replica = await spawnNode('node', dataDir, await freePort(), { ...env, VMONEY_ROLE: 'api' }, dialect)
  try {
    const client = new NodeClient(replica.url)
    for (let start = 0; start < drain.length; start += benchBatchSize) {
      const outcomes = await client.submit(drain.slice(start, start + benchBatchSize))
      const bad = outcomes.find((o) => o.status !== 'pending')
      if (bad !== undefined)
        throw new Error(`transfer ${bad.id} was not pooled: ${bad.status} ${bad.code ?? ''}`)
    }
  } finally {
    await stopNode(replica.child)
  }
  const funnel = await spawnNode(
    'node',
    dataDir,
    await freePort(),
    { ...env, VMONEY_ROLE: 'funnel' },
    dialect,
  )
  try {
    const deadline = Date.now() + drainTimeoutMs
    let metrics = await funnelMetrics(funnel.url)
    let warm: typeof metrics | null = null
    while (metrics.decided < drain.length) {
      if (Date.now() > deadline)
        throw new Error(`the funnel decided ${metrics.decided} of ${drain.length} pooled transfers in time`)
      await sleep(drainPollMs)
      metrics = await funnelMetrics(funnel.url)
      if (warm === null && metrics.decided >= drainWarmUp) warm = metrics
    }
    // A funnel that refused them would be measured refusing: every pooled transfer must be accepted.
    if (metrics.accepted !== drain.length)
      throw new Error(`the funnel accepted ${metrics.accepted} of ${drain.length} pooled transfers`)
    if (warm === null || warm.decided === metrics.decided)
      throw new Error('the funnel decided the pooled transfers in too few blocks to measure')
    return Math.round((metrics.decided - warm.decided) / (metrics.busySeconds - warm.busySeconds))
  } finally {
    await stopNode(funnel.child)
  }
}

/** What one node under load measured. */
interface LoadResult {
  readonly transfersPerS: number
  /** Transactions its funnel decided per second of its busy time while the clients' load ran beside it. */
  readonly funnelUnderLoadPerS: number
  readonly finalityMs: readonly number[]
  /**
   * Transactions a funnel alone decided per second of its busy time (its capacity, from /metrics), one
   * per round of `funnelRounds` asked for, in order.
   */
  readonly funnelAlonePerS: readonly number[]
}

const log = (text: string) => process.stderr.write(`bench: ${text}\n`)

/**
 * Starts a node as a real process (leaf encryption on or off), sets up customers, then measures signed
 * transfers per second end to end, when asked finality at a fixed offered rate, then the funnel alone in
 * the rounds asked for (each with its own leaf encryption).
 */
async function loadNode(
  dialect: Dialect,
  leafEncryption: boolean,
  measureFinality: boolean,
  rounds: readonly boolean[],
): Promise<LoadResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-bench-'))
  let node: ChildProcess | undefined
  const env = { VMONEY_LEAF_ENCRYPTION: leafEncryption ? 'on' : 'off' }
  try {
    const started = await spawnNode('node', dataDir, await freePort(), env, dialect)
    node = started.child
    const client = new NodeClient(started.url)
    const { nodeId } = await client.node()
    const admin = readKeyFile(join(dataDir, 'admin.key.json'))
    const make = (keys: DeviceKeys, body: object): Transaction =>
      ({
        v: 1,
        id: newId(),
        node: nodeId,
        created: nowTimestamp(),
        signer: keys.keyId,
        ...body,
      }) as Transaction
    const signAdmin = fastSigner(admin)
    const run = async (transactions: SignedTransaction[]) => {
      for (let start = 0; start < transactions.length; start += benchBatchSize) {
        const outcomes = await client.submitAndWait(
          admin,
          transactions.slice(start, start + benchBatchSize),
          60_000,
        )
        const bad = outcomes.find((o) => o.status !== 'accepted')
        if (bad !== undefined)
          throw new Error(`set-up transaction ${bad.id} ended ${bad.status} ${bad.code ?? ''}`)
      }
    }

    log(`setting up ${benchAccounts} customers with keys and funded accounts`)
    const asset = 'bench:EUR'
    const issuerKeys = openKeyFile(newKeyFile())
    const issuerId = newId()
    const issuerAccount = newId()
    const customers = Array.from({ length: benchAccounts }, () => ({
      person: newId(),
      account: newId(),
      keys: openKeyFile(newKeyFile()),
    }))
    const setup: SignedTransaction[] = [
      signAdmin(
        make(admin, {
          type: 'register_person',
          person: {
            id: issuerId,
            kind: 'legal',
            names: [{ legalPersonName: 'Bench Issuer', legalPersonNameIdentifierType: 'LEGL' }],
          },
          keys: [issuerKeys.deviceKey],
        }),
      ),
      signAdmin(make(admin, { type: 'set_kyc', person: issuerId, status: 'verified' })),
      signAdmin(make(admin, { type: 'create_asset', asset, issuer: issuerId, scale: 2, name: 'Bench euro' })),
      signAdmin(
        make(admin, {
          type: 'open_account',
          account: issuerAccount,
          owner: issuerId,
          asset,
          flags: [],
          issuanceLimit: '1000000000000000',
        }),
      ),
    ]
    for (const c of customers) {
      setup.push(
        signAdmin(
          make(admin, {
            type: 'register_person',
            person: {
              id: c.person,
              kind: 'natural',
              names: [{ primaryIdentifier: 'Customer', nameIdentifierType: 'LEGL' }],
            },
            keys: [c.keys.deviceKey],
          }),
        ),
      )
      setup.push(signAdmin(make(admin, { type: 'set_kyc', person: c.person, status: 'verified' })))
      setup.push(
        signAdmin(
          make(admin, {
            type: 'open_account',
            account: c.account,
            owner: c.person,
            asset,
            flags: ['debits_must_not_exceed_credits'],
          }),
        ),
      )
    }
    await run(setup)
    const signIssuer = fastSigner(issuerKeys)
    const funding = customers.map((c) =>
      signIssuer(
        make(issuerKeys, {
          type: 'transfer',
          debit: issuerAccount,
          credit: c.account,
          amount: '100000000',
          asset,
        }),
      ),
    )
    await client.submitAndWait(issuerKeys, funding, 60_000)

    log(`pre-signing ${benchTransfers} transfers`)
    const signers = customers.map((c) => fastSigner(c.keys))
    const transfer = (i: number) => {
      const from = i % benchAccounts
      const to = (from + 1 + (i % (benchAccounts - 1))) % benchAccounts
      const c = customers[from]!
      return signers[from]!(
        make(c.keys, {
          type: 'transfer',
          debit: c.account,
          credit: customers[to]!.account,
          amount: '1',
          asset,
        }),
      )
    }
    const transfers = Array.from({ length: benchTransfers }, (_, i) => transfer(i))

    log(
      `throughput: ${benchTransfers} signed transfers, batches of ${benchBatchSize}, ${benchConcurrency} clients, each waiting for finality`,
    )
    // Bodies are serialized before the clock starts: the clients share the machine with the node.
    const bodies: string[] = []
    for (let start = 0; start < transfers.length; start += benchBatchSize) {
      bodies.push(encodeSubmission(transfers.slice(start, start + benchBatchSize)))
    }
    const throughputStart = performance.now()
    const deadline = Date.now() + 120_000
    let accepted = 0
    await Promise.all(
      Array.from({ length: benchConcurrency }, async () => {
        for (let body = bodies.shift(); body !== undefined; body = bodies.shift()) {
          const outcomes = await client.submitEncoded(body, 30_000)
          const final = await client.awaitFinal(admin, outcomes, deadline)
          accepted += final.filter((o) => o.status === 'accepted').length
        }
      }),
    )
    const seconds = (performance.now() - throughputStart) / 1000
    if (accepted !== benchTransfers)
      throw new Error(`only ${accepted} of ${benchTransfers} transfers were accepted`)
    const transfersPerS = Math.round(benchTransfers / seconds)
    const underLoad = await funnelMetrics(started.url)
    const funnelUnderLoadPerS = Math.round(underLoad.decided / underLoad.busySeconds)

    const latencies: number[] = []
    if (measureFinality) {
      log(`finality: ${finalityRatePerS} transfers/s offered for ${finalityDurationMs} ms`)
      const perTick = 10
      const tickMs = (1000 * perTick) / finalityRatePerS
      const inFlight: Promise<void>[] = []
      let sent = 0
      const finalityStart = performance.now()
      for (let tick = 0; performance.now() - finalityStart < finalityDurationMs; tick++) {
        const due = finalityStart + tick * tickMs
        const delay = due - performance.now()
        if (delay > 0) await sleep(delay)
        const batch = Array.from({ length: perTick }, () => transfer(benchTransfers + sent++))
        const t0 = performance.now()
        inFlight.push(
          client.submitAndWait(customers[0]!.keys, batch, 30_000).then((outcomes) => {
            const ms = performance.now() - t0
            for (const outcome of outcomes) if (outcome.status === 'accepted') latencies.push(ms)
          }),
        )
      }
      await Promise.all(inFlight)
      latencies.sort((a, b) => a - b)
    }

    await stopNode(node)
    node = undefined
    const funnelAlonePerS: number[] = []
    for (const [round, sealed] of rounds.entries()) {
      log(
        `funnel alone, round ${round + 1} of ${rounds.length}, leaves ${sealed ? 'sealed' : 'public'}: ${drainTransfers} transfers pooled while no funnel runs, then decided`,
      )
      const first = 2 * benchTransfers + round * drainTransfers
      const drain = Array.from({ length: drainTransfers }, (_, i) => transfer(first + i))
      const roundEnv = { VMONEY_LEAF_ENCRYPTION: sealed ? 'on' : 'off' }
      const perS = await measureFunnelAlone(dialect, dataDir, roundEnv, drain)
      log(`funnel alone, round ${round + 1}: ${perS} transactions/s of funnel time`)
      funnelAlonePerS.push(perS)
    }
    return { transfersPerS, funnelUnderLoadPerS, finalityMs: latencies, funnelAlonePerS }
  } finally {
    if (node !== undefined) await stopNode(node)
    await dropTestDatabase(dataDir, dialect)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

export async function runBench(args: readonly string[]): Promise<void> {
  const json = args.includes('--json')
  const results: Result[] = []
  // `--part node` or `--part log` runs one half (for work on either); the default runs both.
  const part = args.includes('--part') ? args[args.indexOf('--part') + 1] : 'all'
  // `--db` chooses the node's database (sqlite, postgres or mysql) for the node half.
  const db = args.includes('--db') ? args[args.indexOf('--db') + 1] : 'sqlite'
  if (db !== 'sqlite' && db !== 'postgres' && db !== 'mysql')
    throw new CliExit(exitCodes.usage, `--db must be sqlite, postgres or mysql, got ${JSON.stringify(db)}`)
  log('measuring the machine: libsodium Ed25519 verify on 2 threads')
  results.push({
    name: 'ed25519_verify_per_s_2cores',
    value: await measureVerifyCeiling(2),
    unit: 'verifies/s',
  })

  if (part !== 'log') {
    log('X25519 agreements on one thread: node:crypto (the node) and portable (browsers, tools)')
    results.push({
      name: 'x25519_agreements_per_s',
      value: measureAgreements(nodePrimitives, 2000),
      unit: 'agreements/s, node:crypto, one thread',
    })
    results.push({
      name: 'x25519_agreements_per_s_portable',
      value: measureAgreements(portablePrimitives, 200),
      unit: 'agreements/s, portable, one thread',
    })
    await benchNodes(db, results)
  }
  if (part !== 'node') await benchLog(results)

  if (json) process.stdout.write(`${JSON.stringify({ database: db, results }, null, 2)}\n`)
  else
    for (const r of results)
      process.stdout.write(`${r.name.padEnd(44)} ${String(r.value).padStart(10)} ${r.unit}\n`)
}

async function benchNodes(dialect: Dialect, results: Result[]): Promise<void> {
  log(`node with public leaves (leaf encryption off), on ${dialect}`)
  const plain = await loadNode(dialect, false, false, [])
  log(`node with sealed leaves (the default), on ${dialect}`)
  const sealed = await loadNode(dialect, true, true, funnelRounds)
  /** A figure with leaves public and sealed, and what sealing costs of it. */
  const compare = (
    name: string,
    cost: string,
    pick: (run: LoadResult) => number,
    unit: string,
    of: string,
  ) => {
    results.push({ name, value: pick(plain), unit })
    results.push({ name: `${name}_encrypted`, value: pick(sealed), unit })
    results.push({ name: cost, value: costPct(pick(plain), pick(sealed)), unit: of })
  }
  compare(
    'signed_transfers_per_s',
    'encryption_cost_pct',
    (run) => run.transfersPerS,
    'transfers/s',
    '% of end-to-end throughput',
  )
  const alone = (leaves: boolean) =>
    Math.round(median(sealed.funnelAlonePerS.filter((_, round) => funnelRounds[round] === leaves)))
  results.push({ name: 'funnel_capacity_per_s', value: alone(false), unit: 'transactions/s of funnel time' })
  results.push({
    name: 'funnel_capacity_per_s_encrypted',
    value: alone(true),
    unit: 'transactions/s of funnel time',
  })
  const pairCosts: number[] = []
  for (let round = 0; round + 1 < funnelRounds.length; round += 2) {
    assert(funnelRounds[round] !== funnelRounds[round + 1], 'each pair of rounds is one public, one sealed')
    const [a, b] = [sealed.funnelAlonePerS[round]!, sealed.funnelAlonePerS[round + 1]!]
    pairCosts.push(funnelRounds[round] ? costPct(b, a) : costPct(a, b))
  }
  results.push({
    name: 'funnel_encryption_cost_pct',
    value: Number(median(pairCosts).toFixed(1)),
    unit: `% of the funnel's capacity, median of ${pairCosts.length} pairs of rounds`,
  })
  results.push({
    name: 'funnel_encryption_cost_min_pct',
    value: Math.min(...pairCosts),
    unit: "% of the funnel's capacity, lowest of the pairs",
  })
  results.push({
    name: 'funnel_encryption_cost_max_pct',
    value: Math.max(...pairCosts),
    unit: "% of the funnel's capacity, highest of the pairs",
  })
  compare(
    'funnel_capacity_under_load_per_s',
    'funnel_encryption_cost_under_load_pct',
    (run) => run.funnelUnderLoadPerS,
    'transactions/s of funnel time',
    "% of the funnel's capacity beside the clients",
  )
  results.push({
    name: 'finality_ms_p50',
    value: Number(percentile(sealed.finalityMs, 50).toFixed(1)),
    unit: 'ms',
  })
  results.push({
    name: 'finality_ms_p99',
    value: Number(percentile(sealed.finalityMs, 99).toFixed(1)),
    unit: 'ms',
  })
  log(`plain SQL baseline on ${dialect}: unsigned transfers, one per transaction, both rows locked`)
  results.push({
    name: 'sql_baseline_transfers_per_s',
    value: await measureSqlBaseline(dialect),
    unit: 'transfers/s',
  })
}

async function benchLog(results: Result[]): Promise<void> {
  log(`verifier and browser: a log of ${logBenchLeaves} sealed leaves, built through the browser's checks`)
  const logBench = await startLogBench(log)
  try {
    results.push({
      name: 'verify_consistency_ms',
      value: Number((await measureConsistency(logBench)).toFixed(1)),
      unit: 'ms',
    })
    results.push({ name: 'browser_proofs_per_s', value: await measureProofs(logBench), unit: 'proofs/s' })
    results.push({ name: 'verify_full_leaves_per_s', value: await measureFull(logBench), unit: 'leaves/s' })
  } finally {
    await logBench.close()
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  await runBench(process.argv.slice(2))
}
