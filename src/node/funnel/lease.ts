import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { setTimeout as delay } from 'node:timers/promises'
import type { Kysely, Transaction } from 'kysely'
import { assert, VmError } from '../../protocol/errors.js'
import type { Database } from '../storage/schema.js'

/**
 * How long a lease lasts without renewal, how often its holder renews it, how often a standby looks.
 * A standby takes over at most `leaseTtlMs + leasePollMs` after the leader's last renewal.
 */
export const leaseTtlMs = 3_000
export const leaseRenewMs = 1_000
export const leasePollMs = 500
export const takeoverMsMax = 5_000

assert(2 * leaseRenewMs <= leaseTtlMs, 'a lease outlives a missed renewal')
assert(leaseTtlMs + leasePollMs <= takeoverMsMax, 'a standby takes over within takeoverMsMax')

const funnelLease = 'funnel'

/** This process's funnel no longer holds the lease: another took over. */
export class LeaseLost extends VmError {
  constructor(epoch: number) {
    super('lease_lost', `another process took the funnel lease (this one held epoch ${epoch})`, {
      status: 503,
    })
  }
}

/**
 * The funnel's lease in the database: one active sequencer per node (DESIGN §2.3). Taking it over bumps
 * its epoch; the holder extends it inside every block's transaction, matching its epoch, so a stale
 * leader (paused past its lease) fails that statement and its whole block rolls back. Unique block
 * heights and pool rows decided only while pending fence it a second time.
 */
export class FunnelLease {
  readonly #db: Kysely<Database>
  /** This process, in logs and in the table: host, pid and a random part. */
  readonly holder = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
  #epoch: number | null = null
  #extendedAt = 0

  constructor(db: Kysely<Database>) {
    this.#db = db
  }

  /** The epoch held, or null when this process does not lead. */
  get epoch(): number | null {
    return this.#epoch
  }

  /** Whether the lease is due for renewal. */
  get due(): boolean {
    return Date.now() - this.#extendedAt >= leaseRenewMs
  }

  /** Waits until this process holds the lease; null when `stopping()` says to give up first. */
  async acquire(stopping: () => boolean, onError: (error: unknown) => void): Promise<number | null> {
    while (!stopping()) {
      try {
        const epoch = await this.#tryTake()
        if (epoch !== null) {
          this.#epoch = epoch
          this.#extendedAt = Date.now()
          return epoch
        }
      } catch (error) {
        onError(error)
      }
      await delay(leasePollMs)
    }
    return null
  }

  /** Takes the lease if nobody holds it or its holder let it expire; the epoch taken, or null. */
  async #tryTake(): Promise<number | null> {
    const now = Date.now()
    const held = await this.#db
      .selectFrom('node_leases')
      .select(['holder', 'epoch', 'expires_at'])
      .where('name', '=', funnelLease)
      .executeTakeFirst()
    if (held === undefined) {
      // Two first starts race here: the primary key lets one insert win.
      const inserted = await this.#db
        .insertInto('node_leases')
        .values({ name: funnelLease, holder: this.holder, epoch: 1, expires_at: now + leaseTtlMs })
        .execute()
        .then(
          () => true,
          () => false,
        )
      return inserted ? 1 : null
    }
    if (held.holder !== this.holder && held.expires_at > now) return null
    const epoch = held.epoch + 1
    const taken = await this.#db
      .updateTable('node_leases')
      .set({ holder: this.holder, epoch, expires_at: now + leaseTtlMs })
      .where('name', '=', funnelLease)
      .where('epoch', '=', held.epoch)
      .executeTakeFirst()
    return Number(taken.numUpdatedRows) === 1 ? epoch : null
  }

  /** Extends the lease, in a block's transaction or alone; throws LeaseLost when another process took it. */
  async extend(db: Kysely<Database> | Transaction<Database>): Promise<void> {
    const epoch = this.#epoch
    assert(epoch !== null, 'only the holder extends the lease')
    const extended = await db
      .updateTable('node_leases')
      .set({ expires_at: Date.now() + leaseTtlMs })
      .where('name', '=', funnelLease)
      .where('holder', '=', this.holder)
      .where('epoch', '=', epoch)
      .executeTakeFirst()
    if (Number(extended.numUpdatedRows) !== 1) {
      this.#epoch = null
      throw new LeaseLost(epoch)
    }
    this.#extendedAt = Date.now()
  }

  /** Lets the lease go on a clean stop, so that a standby takes over at once. */
  async release(): Promise<void> {
    const epoch = this.#epoch
    if (epoch === null) return
    this.#epoch = null
    await this.#db
      .updateTable('node_leases')
      .set({ expires_at: 0 })
      .where('name', '=', funnelLease)
      .where('holder', '=', this.holder)
      .where('epoch', '=', epoch)
      .execute()
  }
}
