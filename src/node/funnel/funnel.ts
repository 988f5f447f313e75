import { setTimeout as delay } from 'node:timers/promises'
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { type BlockHeader, genesisPrevious, headerHash, signHeader } from '../../protocol/block.js'
import { signCheckpoint } from '../../protocol/checkpoint.js'
import { toBase64, utf8 } from '../../protocol/encoding.js'
import { assert, VmError } from '../../protocol/errors.js'
import { encodeLeafText } from '../../protocol/leaf.js'
import { type Frontier, leafHash, type NodeWrite } from '../../protocol/merkle.js'
import { newId, nowTimestamp, type SignedTransaction, signTransaction } from '../../protocol/transaction.js'
import { type LeafWrite, latestBlock, loadFrontier, writeBlock } from '../chain/chain-store.js'
import type { NodeIdentity } from '../identity.js'
import { loadLedgerSnapshot, writeLedgerChanges } from '../ledger/ledger-store.js'
import { resultCodes, resultName } from '../ledger/result-codes.js'
import { Ledger } from '../ledger/state-machine.js'
import { type Decision, type PoolRow, poolRow, poolTableRow } from '../pool/pool.js'
import { insertRows } from '../storage/batch-insert.js'
import type { Database } from '../storage/schema.js'

/** Pool rows per block. Bounds the memory and the length of one database transaction. */
export const blockTransactionsMax = 4_096
/**
 * After a block that did not fill up, the funnel lets this much time pass before the next, so that
 * blocks carry more transactions each (fewer commits, fewer syncs) at the price of that much latency.
 */
export const blockIntervalMs = 10
/** Pending transfers expired per block. */
export const expiriesPerBlockMax = 1_024
/** How long the funnel sleeps when nothing wakes it; also bounds how late an expiry is written. */
export const idleWaitMs = 1_000
/** After a failed commit the funnel reloads its state and retries, backing off up to this. */
export const retryWaitMsMax = 5_000
/** A linked chain is pooled within one submission, so it never exceeds one batch. */
export const linkedChainLengthMax = 1_024

assert(linkedChainLengthMax < blockTransactionsMax, 'a whole linked chain must fit in one block')

/** What the funnel tells its host: each commit (for waiting clients, caches, metrics) and each failure. */
export type FunnelEvent =
  | {
      readonly kind: 'commit'
      readonly header: BlockHeader | null
      readonly decisions: readonly Decision[]
      readonly leafCount: number
      readonly durationMs: number
      readonly keysChanged: boolean
    }
  | { readonly kind: 'failure' }

interface PoolEntry {
  readonly seq: number
  readonly id: string
  readonly signed: SignedTransaction
  /** The canonical text as pooled: the leaf embeds it as it is. */
  readonly signedText: string
  readonly linked: boolean
}

/**
 * The single sequencer of a node (seed 000 VMTF). It takes pending pool rows in order, applies them to
 * the in-memory ledger, and writes block, leaves, ledger effects and pool results in one database
 * transaction. Nothing is acknowledged as decided before that commit.
 */
export class Funnel {
  readonly #db: Kysely<Database>
  readonly #identity: NodeIdentity
  readonly #log: Logger
  readonly #report: (event: FunnelEvent) => void
  #ledger!: Ledger
  #frontier!: Frontier
  #head: BlockHeader | null = null
  #cursor = 0
  #wake: (() => void) | null = null
  #woken = false
  #stopping = false
  #running: Promise<void> | null = null

  constructor(options: {
    db: Kysely<Database>
    identity: NodeIdentity
    log: Logger
    report: (event: FunnelEvent) => void
  }) {
    this.#db = options.db
    this.#identity = options.identity
    this.#log = options.log
    this.#report = options.report
  }

  /** New rows are in the pool: take them now rather than at the next idle tick. */
  wake(): void {
    this.#signal()
  }

  /** Loads the hot state from the database: ledger, log frontier, last block. */
  async load(): Promise<void> {
    const snapshot = await loadLedgerSnapshot(this.#db)
    this.#ledger = Ledger.load(this.#identity.nodeId, snapshot)
    const head = await latestBlock(this.#db)
    this.#head = head?.header ?? null
    this.#frontier = await loadFrontier(this.#db, this.#head?.logSize ?? 0)
    this.#cursor = 0
  }

  start(): void {
    assert(this.#running === null, 'funnel started twice')
    this.#stopping = false
    this.#running = this.#run()
  }

  async stop(): Promise<void> {
    this.#stopping = true
    this.#signal()
    await this.#running
    this.#running = null
  }

  #signal(): void {
    this.#woken = true
    this.#wake?.()
  }

  async #run(): Promise<void> {
    let failures = 0
    // After a failed step the memory is ahead of the database: nothing runs on it until a reload succeeds.
    let stale = false
    while (!this.#stopping) {
      try {
        if (stale) {
          await this.load()
          stale = false
        }
        const processed = await this.step()
        failures = 0
        if (processed === 0) await this.#sleep(idleWaitMs)
        else if (processed < blockTransactionsMax) await delay(blockIntervalMs)
      } catch (error) {
        failures++
        stale = true
        this.#log.error(
          { err: error },
          'funnel step failed; it reloads its state from the database and retries',
        )
        this.#report({ kind: 'failure' })
        await this.#sleep(Math.min(retryWaitMsMax, 100 * 2 ** failures))
      }
    }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#woken) {
      this.#woken = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.#wake = null
        this.#woken = false
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#wake = done
    })
  }

  /** Processes one batch; returns the number of pool rows decided. Exposed for tests. */
  async step(): Promise<number> {
    const entries = await this.#readPending()
    const time = Math.max(Date.now(), this.#head === null ? 0 : Date.parse(this.#head.time))
    const expirable = this.#ledger.expirable(time, expiriesPerBlockMax)
    if (entries.length === 0 && expirable.length === 0) return 0
    const started = performance.now()
    const timeText = nowTimestamp(time)
    const leaves: LeafWrite[] = []
    const nodes: NodeWrite[] = []
    const decisions: Decision[] = []
    const firstLeaf = this.#frontier.size
    const height = this.#head === null ? 0 : this.#head.height + 1

    const appendLeaf = (transactionId: string, signedText: string) => {
      const text = encodeLeafText(timeText, signedText)
      const bytes = utf8(text)
      leaves.push({ index: this.#frontier.size, transactionId, text })
      // Leaf hashes (level 0) are not stored: the leaf itself is, and hashing it again is cheap.
      for (const node of this.#frontier.append(leafHash(bytes))) if (node.level > 0) nodes.push(node)
    }

    const systemRows: PoolRow[] = []
    if (expirable.length > 0) {
      const expiry = signTransaction(
        {
          v: 1,
          id: newId(),
          node: this.#identity.nodeId,
          created: timeText,
          signer: this.#identity.nodeId,
          type: 'expire_pending',
          pending: expirable,
        },
        this.#identity.signing.secretKey,
      )
      const [code] = this.#ledger.applyChain([
        { signed: expiry, context: { time, leaf: this.#frontier.size } },
      ])
      assert(code === resultCodes.ok, `the funnel's own expiry was refused: ${resultName(code!)}`)
      // The node's own transactions are pooled too, so that the pool's unique id covers every leaf.
      systemRows.push(poolRow(expiry))
      appendLeaf(expiry.tx.id, systemRows.at(-1)!.signed)
    }

    for (let start = 0; start < entries.length; ) {
      let end = start
      while (entries[end]!.linked && end + 1 < entries.length) end++
      const chain = entries.slice(start, end + 1)
      const base = this.#frontier.size
      const codes = this.#ledger.applyChain(
        chain.map((entry, i) => ({ signed: entry.signed, context: { time, leaf: base + i } })),
      )
      chain.forEach((entry, i) => {
        const code = codes[i]!
        if (code === resultCodes.ok) {
          appendLeaf(entry.id, entry.signedText)
          decisions.push({
            id: entry.id,
            accepted: true,
            code,
            codeName: 'ok',
            blockHeight: height,
            leafIndex: base + i,
          })
        } else {
          decisions.push({
            id: entry.id,
            accepted: false,
            code,
            codeName: resultName(code),
            blockHeight: null,
            leafIndex: null,
          })
        }
      })
      start = end + 1
    }

    const changes = this.#ledger.takeChanges()
    let header: BlockHeader | null = null
    let signature = ''
    let checkpoint = ''
    if (leaves.length > 0) {
      header = {
        v: 1,
        node: this.#identity.nodeId,
        height,
        previous: this.#head === null ? genesisPrevious : toBase64(headerHash(this.#head)),
        firstLeaf,
        leafCount: leaves.length,
        logSize: this.#frontier.size,
        logRoot: toBase64(this.#frontier.root()),
        time: timeText,
      }
      signature = signHeader(header, this.#identity.signing.secretKey)
      checkpoint = signCheckpoint(
        { origin: this.#identity.origin, size: header.logSize, root: this.#frontier.root(), extensions: [] },
        this.#identity.origin,
        this.#identity.signing.secretKey,
      )
    }
    const seqs = entries.map((e) => e.seq)
    await this.#db.transaction().execute(async (trx) => {
      if (header !== null) await writeBlock(trx, { header, signature, checkpoint, leaves, nodes })
      await writeLedgerChanges(trx, changes)
      await insertRows(
        trx,
        'pool',
        systemRows.map((row) => poolTableRow(row, time, height)),
      )
      await writeDecisions(trx, entries, decisions, time)
    })
    this.#cursor = Math.max(this.#cursor, ...seqs.slice(-1))
    if (header !== null) this.#head = header
    this.#report({
      kind: 'commit',
      header,
      decisions,
      leafCount: leaves.length,
      durationMs: performance.now() - started,
      keysChanged: changes.keys.length > 0 || changes.persons.length > 0,
    })
    return entries.length
  }

  async #readPending(): Promise<PoolEntry[]> {
    const read = (after: number, limit: number) =>
      this.#db
        .selectFrom('pool')
        .select(['seq', 'id', 'signed', 'linked'])
        .where('status', '=', 'pending')
        .where('seq', '>', after)
        .orderBy('seq')
        .limit(limit)
        .execute()
    const rows = await read(this.#cursor, blockTransactionsMax)
    // Never cut a linked chain in two: it is applied all or nothing.
    while (rows.length > 0 && rows.at(-1)!.linked === 1) {
      const more = await read(rows.at(-1)!.seq, linkedChainLengthMax)
      if (more.length === 0) break
      rows.push(...more.slice(0, more.findIndex((r) => r.linked === 0) + 1 || more.length))
    }
    return rows.map((row) => ({
      seq: row.seq,
      id: row.id,
      signed: JSON.parse(row.signed) as SignedTransaction,
      signedText: row.signed,
      linked: row.linked === 1,
    }))
  }
}

async function writeDecisions(
  trx: Kysely<Database>,
  entries: readonly PoolEntry[],
  decisions: readonly Decision[],
  time: number,
): Promise<void> {
  // Few statements per block: one for the accepted rows, one per distinct rejection code.
  const groups = new Map<string, { decision: Decision; seqs: number[] }>()
  decisions.forEach((decision, i) => {
    const key = decision.accepted ? 'accepted' : `rejected:${decision.code}`
    let group = groups.get(key)
    if (group === undefined) {
      group = { decision, seqs: [] }
      groups.set(key, group)
    }
    group.seqs.push(entries[i]!.seq)
  })
  const chunk = 10_000
  for (const { decision, seqs } of groups.values()) {
    for (let start = 0; start < seqs.length; start += chunk) {
      const result = await trx
        .updateTable('pool')
        .set({
          status: decision.accepted ? 'accepted' : 'rejected',
          code: decision.code,
          code_name: decision.codeName,
          block_height: decision.blockHeight,
          decided_at: time,
        })
        .where('seq', 'in', seqs.slice(start, start + chunk))
        .where('status', '=', 'pending')
        .executeTakeFirst()
      // Decided rows are never decided again: a stale sequencer's write fails here and rolls back whole.
      const expected = Math.min(chunk, seqs.length - start)
      if (Number(result.numUpdatedRows) !== expected) {
        throw new VmError(
          'pool_row_already_decided',
          `expected to decide ${expected} pool rows, found ${result.numUpdatedRows} pending`,
          {
            status: 500,
          },
        )
      }
    }
  }
}
