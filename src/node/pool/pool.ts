import type { Insertable, Kysely } from 'kysely'
import { toHex } from '../../protocol/encoding.js'
import { VmError } from '../../protocol/errors.js'
import {
  type EncodedTransaction,
  encodeSignedTransaction,
  type SignedTransaction,
} from '../../protocol/transaction.js'
import { insertRows } from '../storage/batch-insert.js'
import type { Database, PoolTable } from '../storage/schema.js'

/** Transactions accepted into the pool but not yet decided; past it the api answers 503. */
export const poolPendingMax = 200_000
/** Clients that may wait on outcomes at once; past it waits answer at once with the current state. */
export const waitersMax = 50_000
export const waitMsMax = 30_000
export const retryAfterSeconds = 1
/** Rows in one group commit; more waits for the next. */
export const rowsPerWriteMax = 10_000
/** Ids per `IN (...)` lookup. */
const idsPerQueryMax = 1_000
/**
 * While another process's funnel decides (this one stands by), waits learn outcomes from the database:
 * this often, for at most `idsPerQueryMax` waited ids per look (the longest waiting first).
 */
export const decisionPollMs = 50
/** How often the pending count is read again from the database while another process decides. */
const pendingRecountMs = 1_000

export interface PoolRow {
  readonly id: string
  readonly contentHash: string
  readonly signed: string
  readonly type: string
  readonly signer: string
  readonly linked: boolean
}

export type OutcomeStatus = 'pending' | 'accepted' | 'rejected'

export interface Outcome {
  readonly id: string
  readonly status: OutcomeStatus
  readonly code?: string
  readonly codeNumber?: number
  readonly blockHeight?: number
  readonly leafIndex?: number
}

export interface Decision {
  readonly id: string
  readonly accepted: boolean
  readonly code: number
  readonly codeName: string
  readonly blockHeight: number | null
  readonly leafIndex: number | null
}

export function poolRow(
  signed: SignedTransaction,
  encoded: EncodedTransaction = encodeSignedTransaction(signed),
): PoolRow {
  return {
    id: signed.tx.id,
    contentHash: toHex(encoded.contentHash),
    signed: encoded.signedText,
    type: signed.tx.type,
    signer: signed.tx.signer,
    linked: signed.tx.linked === true,
  }
}

/** The table row of a pooled transaction: pending, or already accepted in a block (the node's own). */
export function poolTableRow(row: PoolRow, now: number, acceptedIn: number | null): Insertable<PoolTable> {
  return {
    id: row.id,
    content_hash: row.contentHash,
    signed: row.signed,
    type: row.type,
    signer: row.signer,
    linked: row.linked ? 1 : 0,
    status: acceptedIn === null ? 'pending' : 'accepted',
    code: acceptedIn === null ? null : 0,
    code_name: acceptedIn === null ? null : 'ok',
    block_height: acceptedIn,
    received_at: now,
    decided_at: acceptedIn === null ? null : now,
  }
}

interface Submission {
  readonly rows: readonly PoolRow[]
  resolve(outcomes: Outcome[]): void
  reject(error: unknown): void
}

/**
 * The transaction pool (seed 000 VMTPDB). Submissions arriving together are written in one database
 * transaction (group commit); each caller learns its outcome only after that commit is durable.
 */
export class Pool {
  readonly #db: Kysely<Database>
  #queue: Submission[] = []
  #flushing = false
  #queuedRows = 0
  #pendingCount = 0
  readonly #waiters = new Map<string, Set<(outcome: Outcome) => void>>()
  #waiterCount = 0
  readonly #writeSubmissions: WriteSubmissions
  /** Set while decisions are made elsewhere: the timer of the next look in the database. */
  #watch: NodeJS.Timeout | null = null
  #countedAt = 0

  /** `write` runs `writeSubmissions` where the node's one write connection lives (the writer thread). */
  constructor(db: Kysely<Database>, write: WriteSubmissions) {
    this.#db = db
    this.#writeSubmissions = write
  }

  /** Counts the pending rows in the database (at start, and now and then while another process decides). */
  async start(): Promise<void> {
    this.#countedAt = Date.now()
    const row = await this.#db
      .selectFrom('pool')
      .select((eb) => eb.fn.countAll<number>().as('count'))
      .where('status', '=', 'pending')
      .executeTakeFirstOrThrow()
    this.#pendingCount = Number(row.count)
  }

  get pendingCount(): number {
    return this.#pendingCount
  }

  /**
   * Adds a batch atomically: every row is new (inserted), or identical to one already pooled (its current
   * outcome is returned). An id already pooled with other bytes refuses the whole batch.
   */
  submit(rows: readonly PoolRow[]): Promise<Outcome[]> {
    // Rows still queued for the next group commit count too: the limit bounds memory, not only the table.
    if (this.#pendingCount + this.#queuedRows + rows.length > poolPendingMax) {
      return Promise.reject(
        new VmError('overloaded', 'the pool is full; retry later', {
          status: 503,
          detail: { retryAfterSeconds },
        }),
      )
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ rows, resolve, reject })
      this.#queuedRows += rows.length
      if (!this.#flushing) setImmediate(() => void this.#flush())
      this.#flushing = true
    })
  }

  async #flush(): Promise<void> {
    while (this.#queue.length > 0) {
      // One group commit takes whole submissions up to a bounded number of rows.
      let take = 0
      let rows = 0
      while (
        take < this.#queue.length &&
        (take === 0 || rows + this.#queue[take]!.rows.length <= rowsPerWriteMax)
      ) {
        rows += this.#queue[take]!.rows.length
        take++
      }
      const batch = this.#queue.splice(0, take)
      this.#queuedRows -= rows
      try {
        await this.#write(batch)
      } catch (error) {
        // Nothing of this flush was acknowledged; the database refused or was away, so clients may retry.
        const refusal = new VmError('storage_unavailable', 'the pool could not be written; retry later', {
          status: 503,
          detail: { retryAfterSeconds },
          cause: error,
        })
        for (const submission of batch) submission.reject(refusal)
      }
    }
    this.#flushing = false
  }

  async #write(batch: readonly Submission[]): Promise<void> {
    const results = await this.#writeSubmissions(batch.map((submission) => submission.rows))
    batch.forEach((submission, i) => {
      const result = results[i]!
      if ('problem' in result) {
        const { code, message, status, detail } = result.problem
        submission.reject(new VmError(code, message, { status, ...(detail === undefined ? {} : { detail }) }))
      } else {
        this.#pendingCount += result.inserted
        submission.resolve(result.outcomes)
      }
    })
  }

  #rowsById(ids: readonly string[]): Promise<PooledRow[]> {
    return rowsById(this.#db, ids)
  }

  async outcome(id: string): Promise<{ outcome: Outcome; signed: string } | null> {
    const [row] = await this.#rowsById([id])
    return row === undefined ? null : { outcome: row.outcome, signed: row.signed }
  }

  /**
   * The outcomes of these ids, waiting up to `waitMs` for pending ones to be decided; null for unknown ids.
   * Listeners are registered before the database is read, so a decision announced in between is never missed.
   */
  async waitForAll(ids: readonly string[], waitMs: number): Promise<(Outcome | null)[]> {
    const wait = Math.min(Math.max(waitMs, 0), waitMsMax)
    const canWait = wait > 0 && this.#waiterCount + ids.length <= waitersMax
    const decided = new Map<string, Outcome>()
    let wake = (_id: string) => {}
    const listeners: [string, (outcome: Outcome) => void][] = []
    if (canWait) {
      for (const id of ids) {
        const listener = (outcome: Outcome) => {
          decided.set(id, outcome)
          wake(id)
        }
        let set = this.#waiters.get(id)
        if (set === undefined) {
          set = new Set()
          this.#waiters.set(id, set)
        }
        set.add(listener)
        listeners.push([id, listener])
      }
      this.#waiterCount += ids.length
    }
    let timer: NodeJS.Timeout | undefined
    try {
      const current = new Map((await this.#rowsById(ids)).map((row) => [row.id, row.outcome]))
      // Counted once, then decremented per decision: a batch of n ids costs O(n), not O(n²).
      const waiting = new Set(ids.filter((id) => current.get(id)?.status === 'pending' && !decided.has(id)))
      if (canWait && waiting.size > 0) {
        await new Promise<void>((resolve) => {
          timer = setTimeout(resolve, wait)
          wake = (id: string) => {
            waiting.delete(id)
            if (waiting.size === 0) resolve()
          }
        })
      }
      return ids.map((id) => decided.get(id) ?? current.get(id) ?? null)
    } finally {
      clearTimeout(timer)
      for (const [id, listener] of listeners) {
        const set = this.#waiters.get(id)
        set?.delete(listener)
        if (set?.size === 0) this.#waiters.delete(id)
      }
      if (canWait) this.#waiterCount -= ids.length
    }
  }

  /** Called by the funnel after its commit: wakes the waiting clients. */
  announce(decisions: readonly Decision[]): void {
    this.#pendingCount -= decisions.length
    for (const decision of decisions) this.#tell(decisionOutcome(decision))
  }

  #tell(outcome: Outcome): void {
    for (const listener of this.#waiters.get(outcome.id) ?? []) listener(outcome)
  }

  /**
   * Whether this process's funnel decides (it holds the lease). When it does not, waits are answered from
   * the database, and the pending count is read from it, since another process decides.
   */
  decidedHere(here: boolean): void {
    if (here) {
      clearTimeout(this.#watch ?? undefined)
      this.#watch = null
    } else if (this.#watch === null) {
      this.#watch = setTimeout(() => void this.#look(), decisionPollMs)
    }
  }

  async #look(): Promise<void> {
    // The timer that started this look: if decidedHere flipped meanwhile, another loop (or none) goes on.
    const watch = this.#watch
    try {
      const ids = [...this.#waiters.keys()].slice(0, idsPerQueryMax)
      if (ids.length > 0) {
        for (const row of await this.#rowsById(ids))
          if (row.outcome.status !== 'pending') this.#tell(row.outcome)
      }
      if (Date.now() - this.#countedAt >= pendingRecountMs) await this.start()
    } catch {
      // The database is away: the next look tries again, and the waits end at their bound meanwhile.
    }
    if (this.#watch === watch) this.#watch = setTimeout(() => void this.#look(), decisionPollMs)
  }

  /** Stops looking in the database (at shutdown). */
  stop(): void {
    this.decidedHere(true)
  }
}

export function decisionOutcome(decision: Decision): Outcome {
  return decision.accepted
    ? {
        id: decision.id,
        status: 'accepted',
        blockHeight: decision.blockHeight!,
        leafIndex: decision.leafIndex!,
      }
    : { id: decision.id, status: 'rejected', code: decision.codeName, codeNumber: decision.code }
}

function toOutcome(row: {
  id: string
  status: OutcomeStatus
  code: number | null
  code_name: string | null
  block_height: number | null
  leaf_index: number | null
}): Outcome {
  if (row.status === 'accepted') {
    return { id: row.id, status: 'accepted', blockHeight: row.block_height!, leafIndex: row.leaf_index! }
  }
  if (row.status === 'rejected')
    return { id: row.id, status: 'rejected', code: row.code_name!, codeNumber: row.code! }
  return { id: row.id, status: 'pending' }
}

interface PooledRow {
  readonly id: string
  readonly contentHash: string
  readonly signed: string
  readonly outcome: Outcome
}

async function rowsById(db: Kysely<Database>, ids: readonly string[]): Promise<PooledRow[]> {
  const out: PooledRow[] = []
  for (let start = 0; start < ids.length; start += idsPerQueryMax) {
    const rows = await db
      .selectFrom('pool')
      .leftJoin('chain_leaves', 'chain_leaves.transaction_id', 'pool.id')
      .select([
        'pool.id',
        'pool.content_hash',
        'signed',
        'status',
        'code',
        'code_name',
        'pool.block_height',
        'leaf_index',
      ])
      .where('pool.id', 'in', ids.slice(start, start + idsPerQueryMax))
      .execute()
    for (const row of rows)
      out.push({ id: row.id, contentHash: row.content_hash, signed: row.signed, outcome: toOutcome(row) })
  }
  return out
}

async function knownIds(db: Kysely<Database>, ids: readonly string[]): Promise<string[]> {
  const out: string[] = []
  for (let start = 0; start < ids.length; start += idsPerQueryMax) {
    const rows = await db
      .selectFrom('pool')
      .select('id')
      .where('id', 'in', ids.slice(start, start + idsPerQueryMax))
      .execute()
    for (const row of rows) out.push(row.id)
  }
  return out
}

/** A submission's result as it crosses threads: plain data, no class instances. */
export interface PoolProblem {
  readonly code: string
  readonly message: string
  readonly status: number
  readonly detail?: Record<string, unknown>
}

export type SubmissionResult =
  | { readonly outcomes: Outcome[]; readonly inserted: number }
  | { readonly problem: PoolProblem }

export type WriteSubmissions = (submissions: readonly (readonly PoolRow[])[]) => Promise<SubmissionResult[]>

/**
 * Writes submissions in one database transaction (group commit). Each is all new rows (inserted), or rows
 * identical to ones already pooled (their outcomes are returned); an id pooled with other bytes refuses
 * that submission whole, and only that one.
 */
export async function writeSubmissions(
  db: Kysely<Database>,
  submissions: readonly (readonly PoolRow[])[],
): Promise<SubmissionResult[]> {
  const ids = submissions.flatMap((rows) => rows.map((r) => r.id))
  const existing = new Map<string, { contentHash: string; outcome: Outcome }>()
  // Almost every id is new: a look at the id index alone, and whole rows only for the retries.
  const known = await knownIds(db, ids)
  if (known.length > 0) {
    for (const row of await rowsById(db, known))
      existing.set(row.id, { contentHash: row.contentHash, outcome: row.outcome })
  }
  const inserts: PoolRow[] = []
  const results: SubmissionResult[] = []
  for (const rows of submissions) {
    const outcomes: Outcome[] = []
    const fresh: PoolRow[] = []
    let problem: PoolProblem | null = null
    for (const row of rows) {
      const known = existing.get(row.id)
      if (known === undefined) {
        fresh.push(row)
        outcomes.push({ id: row.id, status: 'pending' })
      } else if (known.contentHash !== row.contentHash) {
        problem = {
          code: 'exists_with_different_fields',
          message: `transaction ${row.id} exists with other contents`,
          status: 409,
          detail: { id: row.id },
        }
        break
      } else {
        outcomes.push(known.outcome)
      }
    }
    // A linked chain is pooled whole or not at all: it must stay contiguous in the pool.
    if (problem === null && fresh.length > 0 && fresh.length < rows.length && rows.some((r) => r.linked)) {
      problem = {
        code: 'linked_chain_partially_pooled',
        message: 'part of this linked chain is already pooled; resubmit it exactly',
        status: 409,
      }
    }
    if (problem !== null) {
      results.push({ problem })
      continue
    }
    for (const row of fresh) {
      existing.set(row.id, { contentHash: row.contentHash, outcome: { id: row.id, status: 'pending' } })
      inserts.push(row)
    }
    results.push({ outcomes, inserted: fresh.length })
  }
  if (inserts.length > 0) {
    const now = Date.now()
    await db.transaction().execute(async (trx) => {
      await insertRows(
        trx,
        'pool',
        inserts.map((row) => poolTableRow(row, now, null)),
      )
    })
  }
  return results
}
