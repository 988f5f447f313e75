import { setTimeout as delay } from 'node:timers/promises'
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { type BlockHeader, genesisPrevious, headerHash, signHeader } from '../../protocol/block.js'
import { signCheckpoint } from '../../protocol/checkpoint.js'
import { toBase64, toBase64Url, utf8 } from '../../protocol/encoding.js'
import { assert, VmError } from '../../protocol/errors.js'
import {
  type DisclosedKey,
  decodeLeaf,
  disclosedKeysPerLeafMax,
  encodeDisclosureLeafText,
  encodeLeafText,
} from '../../protocol/leaf.js'
import { type Frontier, leafHash, type NodeWrite } from '../../protocol/merkle.js'
import { newId, nowTimestamp, type SignedTransaction, signTransaction } from '../../protocol/transaction.js'
import { latestBlock, loadFrontier, writeBlockHead, writeLeaves } from '../chain/chain-store.js'
import type { NodeIdentity } from '../identity.js'
import { loadLedgerSnapshot, writeLedgerChanges } from '../ledger/ledger-store.js'
import type { ViewRecord } from '../ledger/model.js'
import { resultCodes, resultName } from '../ledger/result-codes.js'
import { Ledger } from '../ledger/state-machine.js'
import { type Decision, type PoolRow, poolRow, poolTableRow } from '../pool/pool.js'
import { insertRows } from '../storage/batch-insert.js'
import type { Database } from '../storage/schema.js'
import { WakeableSleep } from '../wakeable-sleep.js'
import type { LeafSealing, SealingPlan } from './leaf-sealing.js'
import { type FunnelLease, LeaseLost } from './lease.js'

/** Pool rows per block. Bounds the memory and the length of one database transaction. */
export const blockTransactionsMax = 4_096
/**
 * After a block that did not fill up, the funnel lets this much time pass before the next, so that
 * blocks carry more transactions each (fewer commits, fewer syncs) at the price of that much latency.
 */
export const blockIntervalMs = 10
/**
 * Sealed leaves written per statement, at least: a statement per sealing chunk would cost a round trip
 * each, and a block at once holds the writes back until the last chunk is sealed.
 */
const leavesPerWrite = 512
/** Pending transfers expired per block. */
export const expiriesPerBlockMax = 1_024
/** Pending transfers per expire_pending transaction: its leaf is sealed for the parties of each. */
export const expiriesPerTransactionMax = 8
/** How long the funnel sleeps when nothing wakes it; also bounds how late an expiry is written. */
export const idleWaitMs = 1_000
/** How often the funnel reads the pending rows from the start (see #readPending). */
export const pendingRescanMs = 1_000
/** After a failed commit the funnel reloads its state and retries, backing off up to this. */
export const retryWaitMsMax = 5_000
/** Committed leaves a view may cover; a grant for a longer history is refused (`view_history_too_large`). */
export const viewHistoryLeavesMax = 10_000
/** Content keys one block discloses, so that a block (and a browser's push) stays bounded. */
export const blockDisclosedKeysMax = viewHistoryLeavesMax + 2 * blockTransactionsMax
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
  /** This process's funnel took the lease (leading) or lost it (standby). */
  | { readonly kind: 'lease'; readonly leading: boolean; readonly epoch: number | null }

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
  /** Null when the node keeps a fully public ledger (leaf encryption off). */
  readonly #sealing: LeafSealing | null
  #ledger!: Ledger
  #frontier!: Frontier
  #head: BlockHeader | null = null
  #cursor = 0
  readonly #sleeper = new WakeableSleep()
  #stopping = false
  #running: Promise<void> | null = null
  readonly #lease: FunnelLease
  /** When the pending rows were last read from the start, for rows another process pooled late. */
  #rescannedAt = 0

  constructor(options: {
    db: Kysely<Database>
    identity: NodeIdentity
    log: Logger
    report: (event: FunnelEvent) => void
    /** Present when leaves are sealed: the recipients every leaf has besides its parties. */
    sealing: LeafSealing | null
    /** The lease that makes this funnel the node's one sequencer. */
    lease: FunnelLease
  }) {
    this.#db = options.db
    this.#identity = options.identity
    this.#log = options.log
    this.#report = options.report
    this.#sealing = options.sealing
    this.#lease = options.lease
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
    await this.#sealing?.close()
    await this.#lease.release()
  }

  #signal(): void {
    this.#sleeper.wake()
  }

  async #run(): Promise<void> {
    let failures = 0
    // After a failed step the memory is ahead of the database: nothing runs on it until a reload succeeds.
    let stale = false
    while (!this.#stopping) {
      const lease = this.#lease
      if (lease.epoch === null) {
        this.#log.info({ holder: lease.holder }, 'standby: waiting for the funnel lease')
        const epoch = await lease.acquire(
          () => this.#stopping,
          (error) => this.#log.warn({ err: error }, 'the funnel lease could not be read; trying again'),
        )
        if (epoch === null) break
        this.#log.info({ holder: lease.holder, epoch }, 'leading: this process holds the funnel lease')
        this.#report({ kind: 'lease', leading: true, epoch })
        // Another process may have written blocks meanwhile: the state is read again before any step.
        stale = true
      }
      try {
        if (stale) {
          await this.load()
          stale = false
        }
        const processed = await this.step()
        failures = 0
        if (lease.due) await lease.extend(this.#db)
        if (processed === 0) await this.#sleeper.sleep(idleWaitMs)
        else if (processed < blockTransactionsMax) await delay(blockIntervalMs)
      } catch (error) {
        stale = true
        if (error instanceof LeaseLost) {
          // Nothing of the step was written (the lease is extended first, in its transaction): step down.
          this.#log.warn({ err: error }, 'lost the funnel lease: stepping down to standby')
          this.#report({ kind: 'lease', leading: false, epoch: null })
          continue
        }
        failures++
        this.#log.error(
          { err: error },
          'funnel step failed; it reloads its state from the database and retries',
        )
        this.#report({ kind: 'failure' })
        await this.#sleeper.sleep(Math.min(retryWaitMsMax, 100 * 2 ** failures))
      }
    }
  }

  /** Processes one batch; returns the number of pool rows decided. Exposed for tests. */
  async step(): Promise<number> {
    const entries = await this.#readPending()
    const time = Math.max(Date.now(), this.#head === null ? 0 : Date.parse(this.#head.time))
    const expirable = this.#ledger.expirable(time, expiriesPerBlockMax)
    if (entries.length === 0 && expirable.length === 0) return 0
    const started = performance.now()
    const timeText = nowTimestamp(time)
    const leaves: { index: number; transactionId: string; text: string }[] = []
    const nodes: NodeWrite[] = []
    const decisions: Decision[] = []
    const firstLeaf = this.#frontier.size
    const height = this.#head === null ? 0 : this.#head.height + 1

    // Leaves get their place now; a sealed leaf gets its text (and hash) from the sealing thread later.
    const appendText = (transactionId: string, text: string) => {
      const index = firstLeaf + leaves.length
      leaves.push({ index, transactionId, text })
      return index
    }
    const sealing = this.#sealing
    const blockSeal = sealing?.sealBlock(timeText) ?? null
    const disclosures = new Disclosures(timeText)
    const appendLeaf = (signed: SignedTransaction, signedText: string) => {
      if (sealing === null || blockSeal === null)
        return appendText(signed.tx.id, encodeLeafText(timeText, signedText))
      const plan = sealing.plan(this.#ledger, signed.tx, time)
      // A block's sealed leaves come first (its disclosures last): the sealing thread's chunks follow them.
      assert(leaves.length === blockSeal.size, 'sealed leaves precede the leaves in the clear')
      const index = appendText(signed.tx.id, '')
      const { id, type } = signed.tx
      const cek = blockSeal.add({ id, type, signedText, recipients: plan.recipients })
      disclosures.sealed(index, plan, cek)
      return index
    }

    const systemRows: PoolRow[] = []
    // Each expiry names few transfers, so that its leaf has few readers (the parties of each transfer).
    for (let start = 0; start < expirable.length; start += expiriesPerTransactionMax) {
      const expiry = signTransaction(
        {
          v: 1,
          id: newId(),
          node: this.#identity.nodeId,
          created: timeText,
          signer: this.#identity.nodeId,
          type: 'expire_pending',
          pending: expirable.slice(start, start + expiriesPerTransactionMax),
        },
        this.#identity.signing.secretKey,
      )
      const [code] = this.#ledger.applyChain([
        { signed: expiry, context: { time, leaf: firstLeaf + leaves.length } },
      ])
      assert(code === resultCodes.ok, `the funnel's own expiry was refused: ${resultName(code!)}`)
      // The node's own transactions are pooled too, so that the pool's unique id covers every leaf.
      systemRows.push(poolRow(expiry))
      appendLeaf(expiry, systemRows.at(-1)!.signed)
    }

    let taken = 0
    for (let start = 0; start < entries.length; ) {
      let end = start
      while (entries[end]!.linked && end + 1 < entries.length) end++
      const chain = entries.slice(start, end + 1)
      // A view's history is disclosed in the grant's block: a block discloses a bounded number of keys.
      // Most chains hold no grant: they skip the history look-up (and its await) entirely.
      const history = chain.some((entry) => entry.signed.tx.type === 'grant_view')
        ? await this.#viewHistories(chain)
        : noViewHistories
      if (
        history.keys > 0 &&
        disclosures.count > 0 &&
        disclosures.count + history.keys > blockDisclosedKeysMax
      )
        break
      const base = firstLeaf + leaves.length
      const tooLarge = history.tooLarge
      const codes =
        tooLarge === null
          ? this.#ledger.applyChain(
              chain.map((entry, i) => ({ signed: entry.signed, context: { time, leaf: base + i } })),
            )
          : chain.map((entry) =>
              entry.id === tooLarge ? resultCodes.view_history_too_large : resultCodes.linked_event_failed,
            )
      chain.forEach((entry, i) => {
        const code = codes[i]!
        if (code === resultCodes.ok) {
          const leafIndex = appendLeaf(entry.signed, entry.signedText)
          decisions.push({
            id: entry.id,
            accepted: true,
            code,
            codeName: 'ok',
            blockHeight: height,
            leafIndex,
          })
          if (entry.signed.tx.type === 'grant_view') {
            this.#disclose(
              disclosures,
              entry.signed.tx.view,
              leafIndex,
              history.committed.get(entry.id) ?? [],
            )
          }
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
      if (chain.some((entry) => keyTypes.has(entry.signed.tx.type))) this.#sealing?.forgetKeys()
      taken = end + 1
      start = end + 1
    }
    for (const { id, text } of disclosures.take()) appendText(id, text)
    entries.length = taken

    const changes = this.#ledger.takeChanges()
    blockSeal?.end()
    const seqs = entries.map((e) => e.seq)
    let header: BlockHeader | null = null
    await this.#db.transaction().execute(async (trx) => {
      // First, so that a funnel that lost its lease writes nothing of the block.
      await this.#lease.extend(trx)
      // The ledger effects and pool results need no leaf text: they are written while the leaves are sealed.
      await writeLedgerChanges(trx, changes)
      await insertRows(
        trx,
        'pool',
        systemRows.map((row) => poolTableRow(row, time, height)),
      )
      await writeDecisions(trx, entries, decisions, time)
      if (leaves.length === 0) return
      let hashed = 0
      let written = 0
      // Adds the hashes of the leaves up to `end` to the tree, in order.
      const hashUpTo = (end: number, hashAt: (position: number) => Uint8Array) => {
        for (let position = hashed; position < end; position++)
          // Leaf hashes (level 0) are not stored: the leaf itself is, and hashing it again is cheap.
          for (const node of this.#frontier.append(hashAt(position))) if (node.level > 0) nodes.push(node)
        hashed = end
      }
      const writeHashed = async () => {
        await writeLeaves(trx, height, leaves.slice(written, hashed))
        written = hashed
      }
      // The sealing thread hashed the leaves it sealed: they are written while it seals the next ones.
      for (const chunk of blockSeal?.chunks() ?? []) {
        const { texts, hashes } = await chunk
        const start = hashed
        texts.forEach((text, i) => {
          leaves[start + i]!.text = text
        })
        hashUpTo(start + texts.length, (position) =>
          hashes.subarray(32 * (position - start), 32 * (position - start + 1)),
        )
        if (hashed - written >= leavesPerWrite) await writeHashed()
      }
      assert(hashed === (blockSeal?.size ?? 0), 'every sealed leaf came back from the sealing thread')
      hashUpTo(leaves.length, (position) => leafHash(utf8(leaves[position]!.text)))
      await writeHashed()
      header = this.#blockHeader(height, firstLeaf, leaves.length, timeText)
      await writeBlockHead(trx, {
        header,
        signature: signHeader(header, this.#identity.signing.secretKey),
        checkpoint: signCheckpoint(
          {
            origin: this.#identity.origin,
            size: header.logSize,
            root: this.#frontier.root(),
            extensions: [],
          },
          this.#identity.origin,
          this.#identity.signing.secretKey,
        ),
        nodes,
      })
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

  #blockHeader(height: number, firstLeaf: number, leafCount: number, time: string): BlockHeader {
    return {
      v: 1,
      node: this.#identity.nodeId,
      height,
      previous: this.#head === null ? genesisPrevious : toBase64(headerHash(this.#head)),
      firstLeaf,
      leafCount,
      logSize: this.#frontier.size,
      logRoot: toBase64(this.#frontier.root()),
      time,
    }
  }

  /**
   * For each grant_view of a chain, the committed leaves its view covers, with their content keys, so
   * that the grant's block can disclose them. A grant whose history passes `viewHistoryLeavesMax` is
   * refused (`tooLarge`): the grantor can grant shorter time ranges. `keys` bounds what the chain adds
   * to the block's disclosures, counting the leaves of this block too.
   */
  async #viewHistories(chain: readonly PoolEntry[]): Promise<ViewHistories> {
    const histories: ViewHistories = { keys: 0, tooLarge: null, committed: new Map() }
    if (this.#sealing === null) return histories
    for (const entry of chain) {
      const tx = entry.signed.tx
      if (tx.type !== 'grant_view') continue
      const committed = await this.#committedHistory(tx.accounts, Date.parse(tx.from), Date.parse(tx.until))
      if (committed === null) {
        histories.tooLarge ??= entry.id
        continue
      }
      histories.committed.set(entry.id, committed)
      histories.keys += committed.length + blockTransactionsMax
    }
    return histories
  }

  async #committedHistory(
    accounts: readonly string[],
    from: number,
    until: number,
  ): Promise<DisclosedContentKey[] | null> {
    const rows = await this.#db
      .selectFrom('ledger_entries')
      .select('leaf')
      .distinct()
      .where('account', 'in', accounts)
      .where('time', '>=', from)
      .where('time', '<', until)
      .orderBy('leaf')
      .limit(viewHistoryLeavesMax + 1)
      .execute()
    if (rows.length > viewHistoryLeavesMax) return null
    const keys: DisclosedContentKey[] = []
    for (let start = 0; start < rows.length; start += 1_000) {
      const leaves = await this.#db
        .selectFrom('chain_leaves')
        .select(['leaf_index', 'leaf'])
        .where(
          'leaf_index',
          'in',
          rows.slice(start, start + 1_000).map((row) => row.leaf),
        )
        .orderBy('leaf_index')
        .execute()
      for (const row of leaves) {
        const leaf = decodeLeaf(utf8(row.leaf))
        // Leaves written while the ledger was public need no disclosure.
        if (leaf.v !== 2 || leaf.type === 'disclosure') continue
        const cek = this.#sealing!.archive.unwrap(leaf.jwe)
        assert(cek !== null, `leaf ${row.leaf_index} is not sealed for the archive key`)
        keys.push({ leaf: row.leaf_index, cek })
      }
    }
    return keys
  }

  /** Discloses a new view's history (committed and earlier in this block) to its grantee. */
  #disclose(
    disclosures: Disclosures,
    viewId: string,
    grantLeaf: number,
    committed: readonly DisclosedContentKey[],
  ) {
    const sealing = this.#sealing
    if (sealing === null) return
    const view = this.#ledger.view(viewId)
    assert(view !== undefined, 'an accepted grant_view creates its view')
    const history = [...committed, ...disclosures.before(grantLeaf, view)]
    if (history.length === 0) return
    if (view.grantee === null) {
      disclosures.add(
        view.id,
        history.map(({ leaf, cek }) => ({ leaf, cek: toBase64Url(cek) })),
      )
      return
    }
    const recipients = sealing.granteeRecipients(this.#ledger, view)
    // A grantee without an encryption key can read through the api only; nothing to wrap for.
    if (recipients.length === 0) return
    disclosures.add(
      view.id,
      history.map(({ leaf, cek }) => ({ leaf, recipients: sealing.sealer.wrapFor(cek, recipients) })),
    )
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
    // Rows pooled by another process can commit after rows with higher sequence numbers: now and then the
    // read starts over, so that none is passed by for longer than pendingRescanMs.
    if (Date.now() - this.#rescannedAt >= pendingRescanMs) {
      this.#cursor = 0
      this.#rescannedAt = Date.now()
    }
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

const keyTypes: ReadonlySet<string> = new Set(['genesis', 'register_person', 'add_key', 'revoke_key'])

interface DisclosedContentKey {
  readonly leaf: number
  readonly cek: Uint8Array
}

interface ViewHistories {
  keys: number
  tooLarge: string | null
  readonly committed: Map<string, readonly DisclosedContentKey[]>
}

const noViewHistories: ViewHistories = Object.freeze({ keys: 0, tooLarge: null, committed: new Map() })

/** The content keys a block discloses, by view, and the block's own sealed leaves a new view may cover. */
class Disclosures {
  readonly #time: string
  readonly #sealed: {
    readonly index: number
    readonly accounts: ReadonlySet<string>
    readonly cek: Uint8Array
  }[] = []
  readonly #byView = new Map<string, DisclosedKey[]>()
  count = 0

  constructor(time: string) {
    this.#time = time
  }

  /** A leaf was sealed: remember its key for views granted later in the block; disclose it to public views. */
  sealed(index: number, plan: SealingPlan, cek: Uint8Array): void {
    this.#sealed.push({ index, accounts: plan.accounts, cek })
    for (const view of plan.publicViews) this.add(view, [{ leaf: index, cek: toBase64Url(cek) }])
  }

  /** This block's leaves before `leaf` that the view covers (all of them share the block's time). */
  before(leaf: number, view: Readonly<ViewRecord>): DisclosedContentKey[] {
    const time = Date.parse(this.#time)
    if (time < view.from || time >= view.until) return []
    return this.#sealed
      .filter(
        (sealed) => sealed.index < leaf && view.accounts.some((account) => sealed.accounts.has(account)),
      )
      .map(({ index, cek }) => ({ leaf: index, cek }))
  }

  add(view: string, keys: readonly DisclosedKey[]): void {
    let list = this.#byView.get(view)
    if (list === undefined) {
      list = []
      this.#byView.set(view, list)
    }
    list.push(...keys)
    this.count += keys.length
  }

  /** The disclosure leaves of the block, in view order, each with at most disclosedKeysPerLeafMax keys. */
  take(): { id: string; text: string }[] {
    const out: { id: string; text: string }[] = []
    for (const [view, keys] of this.#byView) {
      for (let start = 0; start < keys.length; start += disclosedKeysPerLeafMax) {
        const id = newId()
        const chunk = keys.slice(start, start + disclosedKeysPerLeafMax)
        out.push({ id, text: encodeDisclosureLeafText({ id, time: this.#time, view, keys: chunk }) })
      }
    }
    return out
  }
}
