import type { ChildProcess } from 'node:child_process'
import { createPrivateKey, sign as nodeSign } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { encodeSubmission, NodeClient } from '../client/client.js'
import { type DeviceKeys, newKeyFile, openKeyFile, readKeyFile } from '../client/key-file.js'
import { toBase64Url } from '../protocol/encoding.js'
import {
  newId,
  nowTimestamp,
  type SignedTransaction,
  type Transaction,
  transactionBytes,
} from '../protocol/transaction.js'
import { freePort, spawnNode } from '../testing/node-process.js'

/** Bounds of one bench run: everything stops by itself. */
export const benchAccounts = 256
export const benchTransfers = 60_000
export const benchBatchSize = 500
export const benchConcurrency = 16
export const finalityRatePerS = 1_000
export const finalityDurationMs = 10_000
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

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0
}

export async function runBench(args: readonly string[]): Promise<void> {
  const json = args.includes('--json')
  const log = (text: string) => process.stderr.write(`bench: ${text}\n`)
  const results: Result[] = []
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-bench-'))
  let node: ChildProcess | undefined
  try {
    log('measuring the machine: libsodium Ed25519 verify on 2 threads')
    results.push({
      name: 'ed25519_verify_per_s_2cores',
      value: await measureVerifyCeiling(2),
      unit: 'verifies/s',
    })

    const started = await spawnNode('node', dataDir, await freePort())
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
    results.push({
      name: 'signed_transfers_per_s',
      value: Math.round(benchTransfers / seconds),
      unit: 'transfers/s',
    })

    log(`finality: ${finalityRatePerS} transfers/s offered for ${finalityDurationMs} ms`)
    const latencies: number[] = []
    const perTick = 10
    const tickMs = (1000 * perTick) / finalityRatePerS
    const inFlight: Promise<void>[] = []
    let sent = 0
    const finalityStart = performance.now()
    for (let tick = 0; performance.now() - finalityStart < finalityDurationMs; tick++) {
      const due = finalityStart + tick * tickMs
      const delay = due - performance.now()
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay))
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
    results.push({ name: 'finality_ms_p50', value: Number(percentile(latencies, 50).toFixed(1)), unit: 'ms' })
    results.push({ name: 'finality_ms_p99', value: Number(percentile(latencies, 99).toFixed(1)), unit: 'ms' })
  } finally {
    node?.kill('SIGTERM')
    await new Promise((resolve) => setTimeout(resolve, 200))
    rmSync(dataDir, { recursive: true, force: true })
  }
  if (json) process.stdout.write(`${JSON.stringify({ results }, null, 2)}\n`)
  else
    for (const r of results)
      process.stdout.write(`${r.name.padEnd(32)} ${String(r.value).padStart(10)} ${r.unit}\n`)
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  await runBench(process.argv.slice(2))
}
