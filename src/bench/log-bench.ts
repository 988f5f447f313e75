import { mkdtempSync, rmSync } from 'node:fs'
import { Agent, get } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeBlock, newRecipient, sealedLeaf, syntheticNode } from '../browser/browser-fixtures.js'
import { createBrowserContext } from '../browser/context.js'
import { openBrowserDatabase } from '../browser/storage.js'
import { createLogger } from '../node/logger.js'
import type { Block, BlockHeader } from '../protocol/block.js'
import { parseCheckpoint } from '../protocol/checkpoint.js'
import { fromUtf8, toBase64, toBase64Url, utf8 } from '../protocol/encoding.js'
import { keyId, publicJwk } from '../protocol/keys.js'
import { binaryMediaType } from '../protocol/leaf-page.js'
import { Frontier, leafHash } from '../protocol/merkle.js'
import { exited, freePort, spawnBrowser } from '../testing/node-process.js'
import { emptyState, stateVersion, type VerifierState } from '../verifier/state.js'
import { verify } from '../verifier/verify.js'

/** The log the verifier benchmarks run on: a million sealed leaves, in blocks as full as the funnel's. */
export const logBenchLeaves = 1_048_576
export const logBenchBlockLeaves = 4_096
/** How long proof requests are fired at the browser, and by how many clients at once. */
export const proofBenchMs = 3_000
/** Proofs served before the measurement starts: the first seconds page the tree in and warm the JIT. */
export const proofBenchWarmupMs = 2_000
export const proofBenchClients = 32
/** Verifier runs from the stored checkpoint; the median is reported. */
export const consistencyRuns = 5
/**
 * Blocks (and pages of leaf hashes) the browser serves before the full check is timed: a running
 * browser has served blocks before, and its first ones pay for the JIT. The verifier starts cold.
 */
export const fullBenchWarmupBlocks = 16

export interface LogBench {
  /** The browser serving the log, at its root. */
  readonly url: string
  /** Leaves in the log: a multiple of 2 × logBenchBlockLeaves. */
  readonly size: number
  /** The browser's checkpoint note after the first half of the log: what a verifier stored last time. */
  readonly halfwayCheckpoint: string
  readonly nodeKey: Uint8Array
  close(): Promise<void>
}

/**
 * Builds a block browser database holding `logBenchLeaves` leaves through the browser's own acceptance
 * path (every block checked as if a node had pushed it), then runs `vmoney browser` on it, on a loopback
 * port and without a rate limit.
 */
export async function startLogBench(
  progress: (text: string) => void,
  size: number = logBenchLeaves,
): Promise<LogBench> {
  const dir = mkdtempSync(join(tmpdir(), 'vmoney-bench-log-'))
  const database = await openBrowserDatabase(`sqlite:${join(dir, 'browser.db')}`)
  const node = syntheticNode()
  const log = createLogger('silent')
  const context = await createBrowserContext({ database, nodes: [node.followed], log })
  // One real sealed leaf (three recipients, as a transfer has) as the template; each leaf gets its own id.
  const template = fromUtf8(sealedLeaf([newRecipient(), newRecipient(), newRecipient()]))
  const idAt = template.indexOf('"id":"') + 6
  const leafAt = (index: number) =>
    utf8(`${template.slice(0, idAt)}${index.toString(16).padStart(32, '0')}${template.slice(idAt + 32)}`)

  let previous: { header: BlockHeader; frontier: Frontier } | null = null
  let halfwayCheckpoint = ''
  for (let first = 0; first < size; first += logBenchBlockLeaves) {
    const leaves = Array.from({ length: logBenchBlockLeaves }, (_, i) => leafAt(first + i))
    const block: Block = makeBlock(node, previous, leaves)
    await context.acceptor.accept(block)
    const frontier: Frontier = previous === null ? new Frontier() : previous.frontier
    for (const leaf of leaves) frontier.append(leafHash(leaf))
    previous = { header: block.header, frontier }
    if (block.header.logSize === size / 2) halfwayCheckpoint = block.checkpoint
    if (block.header.height % 32 === 0) progress(`log: ${block.header.logSize} of ${size} leaves`)
  }
  await database.close()
  // The browser serves from its own process, as in production; the measuring clients stay in this one.
  const { child, url } = await spawnBrowser([
    '--browser-database-url',
    `sqlite:${join(dir, 'browser.db')}`,
    '--follow',
    `${node.followed.url}=${toBase64Url(node.key.publicKey)}`,
    '--browser-port',
    String(await freePort()),
    '--rate-limit',
    '0',
  ])
  return {
    url,
    size,
    halfwayCheckpoint,
    nodeKey: node.key.publicKey,
    async close() {
      child.kill('SIGTERM')
      await exited(child)
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * Inclusion proofs served per second in steady state: `proofBenchClients` clients asking for random
 * leaves over keep-alive connections (node:http: the fetch client would measure itself more than the
 * browser), counted after a warm-up.
 */
export async function measureProofs(bench: LogBench): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: proofBenchClients })
  const proof = (index: number) =>
    fetched(agent, `${bench.url}/v1/log/proofs/inclusion?index=${index}&size=${bench.size}`)
  const start = performance.now() + proofBenchWarmupMs
  const end = start + proofBenchMs
  let served = 0
  try {
    await Promise.all(
      Array.from({ length: proofBenchClients }, async () => {
        while (performance.now() < end) {
          await proof(Math.floor(Math.random() * bench.size))
          if (performance.now() >= start) served++
        }
      }),
    )
  } finally {
    agent.destroy()
  }
  return Math.round(served / (proofBenchMs / 1000))
}

/**
 * The verifier's view of the bench log: it verified the log at half its size before (its stored state),
 * and now checks the newest checkpoint of the 1M-leaf log from there. Returns milliseconds.
 */
export async function measureConsistency(bench: LogBench): Promise<number> {
  const checkpoint = parseCheckpoint(
    bench.halfwayCheckpoint.slice(0, bench.halfwayCheckpoint.indexOf('\n\n') + 1),
  )
  const state: VerifierState = {
    v: stateVersion,
    nodes: {
      [keyId(publicJwk('Ed25519', bench.nodeKey))]: {
        url: bench.url,
        publicKey: toBase64Url(bench.nodeKey),
        checkpoint: { size: checkpoint.size, root: toBase64(checkpoint.root), note: bench.halfwayCheckpoint },
        full: null,
      },
    },
  }
  // The median of a few runs: the first pays for connections and the JIT like any first run.
  const times: number[] = []
  for (let run = 0; run < consistencyRuns; run++) {
    const started = performance.now()
    const report = await verify({ nodeUrl: bench.url, browserUrl: bench.url, state })
    times.push(performance.now() - started)
    if (!report.ok || report.checkpoint?.size !== bench.size)
      throw new Error(`the verifier did not pass on the bench log: ${JSON.stringify(report.findings)}`)
  }
  return times.sort((a, b) => a - b)[Math.floor(consistencyRuns / 2)]!
}

/** Asks for `url` and reads the answer to its end; fails unless it is a 200. */
function fetched(agent: Agent, url: string, accept = 'application/json'): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const request = get(url, { agent, headers: { accept } }, (response) => {
      if (response.statusCode !== 200) reject(new Error(`GET ${url}: HTTP ${response.statusCode}`))
      response.resume()
      response.on('end', resolve)
    })
    request.on('error', reject)
  })
}

/** A full verification from nothing: every block downloaded, re-hashed and its chain checked. */
export async function measureFull(bench: LogBench): Promise<number> {
  const agent = new Agent({ keepAlive: true })
  try {
    for (let height = 0; height < fullBenchWarmupBlocks; height++) {
      const first = height * logBenchBlockLeaves
      await fetched(agent, `${bench.url}/v1/blocks/${height}`, binaryMediaType)
      await fetched(
        agent,
        `${bench.url}/v1/log/leaf-hashes?start=${first}&end=${first + logBenchBlockLeaves}`,
        binaryMediaType,
      )
    }
  } finally {
    agent.destroy()
  }
  const report = await verify({ nodeUrl: bench.url, browserUrl: bench.url, state: emptyState(), full: true })
  if (!report.ok || report.leavesPerSecond === undefined)
    throw new Error(`the full verification did not pass on the bench log: ${JSON.stringify(report.findings)}`)
  return Math.round(report.leavesPerSecond)
}
