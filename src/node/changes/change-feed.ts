import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { VmError } from '../../protocol/errors.js'
import type { Range } from '../api/authorize.js'
import type { Database } from '../storage/schema.js'
import { WakeableSleep } from '../wakeable-sleep.js'

/**
 * Changefeeds (seed 002: "each bank processing server will watch the database for relevant transactions").
 * The committed ledger is the feed: every api process tails `chain_blocks` and `ledger_entries` by a
 * cursor and fans out in memory to its subscribers. So a customer connected to any replica sees the same
 * events, a reconnecting client resumes exactly where it stopped (nothing is lost while it was away), and
 * the three databases behave alike with no broker to run. The cost is one tail per process, not one per
 * subscriber: a few indexed reads per interval, and none of them when nothing was committed.
 */

/** A posting on an account, as committed. */
export interface EntryChange {
  readonly type: 'entry'
  readonly seq: number
  readonly account: string
  readonly owner: string
  readonly leaf: number
  readonly transactionId: string
  readonly transferId: string
  readonly kind: string
  readonly phase: string
  readonly amount: string
  readonly time: string
}

/** A committed block: the log grew to `logSize` with root `logRoot`. */
export interface BlockChange {
  readonly type: 'block'
  readonly height: number
  readonly logSize: number
  readonly logRoot: string
  readonly leafCount: number
  readonly time: string
}

export type Change = EntryChange | BlockChange

/**
 * Where a stream stands: every block up to `height` and every entry up to `seq` were delivered. Entries
 * are numbered in commit order and a block's entries come before the block, so the pair only grows.
 */
export interface Cursor {
  readonly height: number
  readonly seq: number
}

export interface Positioned {
  readonly change: Change
  readonly cursor: Cursor
}

export function formatCursor(cursor: Cursor): string {
  return `${cursor.height}-${cursor.seq}`
}

export function parseCursor(text: string): Cursor {
  const match = /^(\d{1,15})-(\d{1,15})$/.exec(text)
  if (match === null)
    throw new VmError('invalid_cursor', 'a cursor is <height>-<seq>, as the id of an event', { status: 400 })
  return { height: Number(match[1]), seq: Number(match[2]) }
}

/**
 * Whether a stream at `cursor` still lacks this change. A stream holds every block up to its height and
 * every entry it may read up to its seq (a filtered stream's seq is that of its own last entry), so each
 * kind compares with its own half of the cursor.
 */
export function isNew(item: Positioned, cursor: Cursor): boolean {
  return item.change.type === 'block' ? item.change.height > cursor.height : item.change.seq > cursor.seq
}

/** Which entries a stream carries (blocks go to every stream). */
export type EntryFilter =
  | { readonly kind: 'all' }
  | { readonly kind: 'owner'; readonly owner: string }
  /** Each account with the time ranges it may be read in (null: all of it). */
  | { readonly kind: 'accounts'; readonly accounts: ReadonlyMap<string, readonly Range[] | null> }

export function matches(filter: EntryFilter, entry: EntryChange): boolean {
  if (filter.kind === 'all') return true
  if (filter.kind === 'owner') return entry.owner === filter.owner
  const ranges = filter.accounts.get(entry.account)
  if (ranges === undefined) return false
  if (ranges === null) return true
  const time = Date.parse(entry.time)
  return ranges.some(([from, until]) => from <= time && time < until)
}

/** One read of the feed: at most this many blocks, and this many entries. */
export const blocksPerRead = 256
export const entriesPerRead = 5_000

export interface ChangePage {
  readonly changes: readonly Positioned[]
  readonly cursor: Cursor
  /** More was committed than this page holds: read again from `cursor`. */
  readonly more: boolean
  /** First leaf and end of the leaves of the blocks in this page. */
  readonly leaves: readonly [from: number, until: number] | null
}

/**
 * Reads what was committed after `after`, in order: each block's entries (those the filter keeps), then
 * the block. When the entries fill a page, the page ends before the block whose entries may go on.
 */
export async function readChanges(
  db: Kysely<Database>,
  after: Cursor,
  filter: EntryFilter,
): Promise<ChangePage> {
  const blocks = await db
    .selectFrom('chain_blocks')
    .select(['height', 'first_leaf', 'leaf_count', 'log_size', 'log_root', 'time'])
    .where('height', '>', after.height)
    .orderBy('height')
    .limit(blocksPerRead)
    .execute()
  if (blocks.length === 0) return { changes: [], cursor: after, more: false, leaves: null }
  const leafEnd = blocks.at(-1)!.log_size
  let query = db
    .selectFrom('ledger_entries')
    .innerJoin('ledger_accounts', 'ledger_accounts.id', 'ledger_entries.account')
    .select([
      'ledger_entries.seq',
      'ledger_entries.account',
      'ledger_accounts.owner',
      'ledger_entries.leaf',
      'ledger_entries.transaction_id',
      'ledger_entries.transfer_id',
      'ledger_entries.kind',
      'ledger_entries.phase',
      'ledger_entries.amount',
      'ledger_entries.time',
    ])
    .where('ledger_entries.seq', '>', after.seq)
    .where('ledger_entries.leaf', '<', leafEnd)
  if (filter.kind === 'owner') query = query.where('ledger_accounts.owner', '=', filter.owner)
  if (filter.kind === 'accounts')
    query = query.where('ledger_entries.account', 'in', [...filter.accounts.keys()])
  const rows = await query.orderBy('ledger_entries.seq').limit(entriesPerRead).execute()
  const truncated = rows.length === entriesPerRead

  const changes: Positioned[] = []
  let cursor = after
  let next = 0
  for (const block of blocks) {
    for (; next < rows.length && rows[next]!.leaf < block.log_size; next++) {
      const row = rows[next]!
      cursor = { height: cursor.height, seq: row.seq }
      const change: EntryChange = {
        type: 'entry',
        seq: row.seq,
        account: row.account,
        owner: row.owner,
        leaf: row.leaf,
        transactionId: row.transaction_id,
        transferId: row.transfer_id,
        kind: row.kind,
        phase: row.phase,
        amount: row.amount,
        time: new Date(row.time).toISOString(),
      }
      // The database filtered by account; the time ranges of views are applied here.
      if (matches(filter, change)) changes.push({ change, cursor })
    }
    // The rest of this block's entries may lie beyond the page.
    if (truncated && next === rows.length) break
    cursor = { height: block.height, seq: cursor.seq }
    changes.push({
      change: {
        type: 'block',
        height: block.height,
        logSize: block.log_size,
        logRoot: block.log_root,
        leafCount: block.leaf_count,
        time: new Date(block.time).toISOString(),
      },
      cursor,
    })
  }
  return {
    changes,
    cursor,
    more: truncated || blocks.length === blocksPerRead,
    leaves: [blocks[0]!.first_leaf, leafEnd],
  }
}

/** A live stream as the tail sees it. */
export interface Subscriber {
  readonly filter: EntryFilter
  cursor: Cursor
  /** Writes without waiting; false when the stream is too far behind and was closed. */
  deliver(item: Positioned): boolean
  /** Resolves once the reader took what was sent (a catching-up stream waits, a live one is closed). */
  drained(): Promise<void>
  /** Called as the stream joins the live fan-out, at its cursor: all it missed was delivered. */
  live(): void
  /** Called after keys or views changed: closes the stream when its reader lost the right. */
  recheck(): Promise<void>
}

/** Streams per process, catching up or live; past it 503. */
export const subscribersMax = 1_000
/** How often a process without commits of its own looks for new blocks. */
export const tailIntervalMs = 100
/** Pages a catching-up stream may read before it must be live (about 2.5 million blocks). */
export const catchUpPagesMax = 10_000

/**
 * The tail of one process. `wake()` (after this process committed a block) makes it look at once;
 * otherwise it looks every `tailIntervalMs`.
 */
export class ChangeTail {
  readonly #db: Kysely<Database>
  readonly #log: Logger
  readonly #onKeysChanged: () => void
  readonly #subscribers = new Set<Subscriber>()
  readonly #sleep = new WakeableSleep()
  #cursor: Cursor = { height: 0, seq: 0 }
  #running: Promise<void> | null = null
  #stopped = false
  /** Counts the revocations the tail has seen: a stream that caught up across one is checked again. */
  #revocations = 0

  constructor(db: Kysely<Database>, log: Logger, onKeysChanged: () => void) {
    this.#db = db
    this.#log = log
    this.#onKeysChanged = onKeysChanged
  }

  get cursor(): Cursor {
    return this.#cursor
  }

  /** Starts at the present: what was committed before is read by the streams that ask for it. */
  async start(): Promise<void> {
    this.#cursor = await presentCursor(this.#db)
    this.#running = this.#run()
  }

  wake(): void {
    this.#sleep.wake()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    this.#sleep.wake()
    await this.#running
    this.#subscribers.clear()
  }

  /**
   * Adds a stream from its cursor on: what it missed is read from the database with its own filter, then
   * it joins the live fan-out. Resolves once it is live; rejects when the stream closed meanwhile.
   */
  async subscribe(subscriber: Subscriber, isOpen: () => boolean): Promise<void> {
    let revocations = this.#revocations
    for (let page = 0; page < catchUpPagesMax; page++) {
      if (!isOpen()) return
      if (revocations !== this.#revocations) {
        revocations = this.#revocations
        await subscriber.recheck()
        continue
      }
      // Joining here is exact: the tail hands on only what the stream lacks.
      if (this.#cursor.height <= subscriber.cursor.height) return this.#join(subscriber)
      await subscriber.drained()
      const { changes, cursor, leaves } = await readChanges(this.#db, subscriber.cursor, subscriber.filter)
      for (const item of changes) if (!subscriber.deliver(item)) return
      subscriber.cursor = cursor
      // Each page yields to timers and I/O (SQLite answers without leaving the microtask queue); a tail
      // ahead of what this read saw is caught up with on the next.
      await new Promise((resolve) => setTimeout(resolve, leaves === null ? 20 : 0))
    }
    throw new VmError('cursor_too_old', `the stream is more than ${catchUpPagesMax} pages behind`, {
      status: 410,
    })
  }

  #join(subscriber: Subscriber): void {
    subscriber.live()
    this.#subscribers.add(subscriber)
  }

  unsubscribe(subscriber: Subscriber): void {
    this.#subscribers.delete(subscriber)
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      try {
        await this.#readNew()
      } catch (error) {
        // The database away: the streams stay open and the tail reads again when it is back.
        this.#log.warn({ err: error }, 'the changefeed could not read the database')
      }
      await this.#sleep.sleep(tailIntervalMs)
    }
  }

  async #readNew(): Promise<void> {
    for (let more = true; more && !this.#stopped; ) {
      // With no stream to serve, the tail only moves its cursor and watches for changes of rights.
      if (this.#subscribers.size === 0) {
        const now = await presentCursor(this.#db)
        if (now.height === this.#cursor.height) return
        const span = await this.#db
          .selectFrom('chain_blocks')
          .select((eb) => [eb.fn.min('first_leaf').as('from'), eb.fn.max('log_size').as('until')])
          .where('height', '>', this.#cursor.height)
          .where('height', '<=', now.height)
          .executeTakeFirstOrThrow()
        await this.#rightsChanged([Number(span.from), Number(span.until)])
        // A stream that joined meanwhile was promised everything after the old cursor: serve it that.
        if (this.#subscribers.size > 0) continue
        this.#cursor = now
        return
      }
      const page = await readChanges(this.#db, this.#cursor, { kind: 'all' })
      more = page.more
      if (page.leaves === null) return
      await this.#rightsChanged(page.leaves)
      this.#cursor = page.cursor
      for (const subscriber of this.#subscribers) {
        for (const item of page.changes) {
          if (!isNew(item, subscriber.cursor)) continue
          if (item.change.type === 'entry' && !matches(subscriber.filter, item.change)) continue
          if (!subscriber.deliver(item)) {
            this.#subscribers.delete(subscriber)
            break
          }
          subscriber.cursor = {
            height: Math.max(subscriber.cursor.height, item.cursor.height),
            seq: Math.max(subscriber.cursor.seq, item.cursor.seq),
          }
        }
      }
    }
  }

  /**
   * Looks at what these leaves did to keys and views: keys added or revoked, the api's cache is dropped; a
   * key or view revoked, every stream is checked again before anything more is sent, so nothing of these
   * leaves reaches a reader who lost the right.
   */
  async #rightsChanged([from, until]: readonly [number, number]): Promise<void> {
    // Three probes of indexed leaf columns, whatever the size of the blocks.
    const inRange = (column: 'added_leaf' | 'revoked_leaf', table: 'ledger_keys' | 'ledger_views') =>
      this.#db
        .selectFrom(table)
        .select(column)
        .where(column, '>=', from)
        .where(column, '<', until)
        .limit(1)
        .executeTakeFirst()
        .then((row) => row !== undefined)
    const [keysAdded, keysRevoked, viewsRevoked] = await Promise.all([
      inRange('added_leaf', 'ledger_keys'),
      inRange('revoked_leaf', 'ledger_keys'),
      inRange('revoked_leaf', 'ledger_views'),
    ])
    if (keysAdded || keysRevoked) this.#onKeysChanged()
    if (keysRevoked || viewsRevoked) {
      this.#revocations++
      await Promise.all([...this.#subscribers].map((subscriber) => subscriber.recheck()))
    }
  }
}

/**
 * The cursor of what is committed now. The entry is read before the block: a block committed in between
 * then has its entries delivered after the cursor (late, never lost).
 */
export async function presentCursor(db: Kysely<Database>): Promise<Cursor> {
  const entry = await db
    .selectFrom('ledger_entries')
    .select('seq')
    .orderBy('seq', 'desc')
    .limit(1)
    .executeTakeFirst()
  const block = await db
    .selectFrom('chain_blocks')
    .select('height')
    .orderBy('height', 'desc')
    .limit(1)
    .executeTakeFirst()
  return { height: block?.height ?? 0, seq: entry?.seq ?? 0 }
}
