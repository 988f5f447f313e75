import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { Counter } from 'prom-client'
import { type Cursor, formatCursor, readChanges } from '../changes/change-feed.js'
import { openSecret } from '../identity.js'
import type { Database } from '../storage/schema.js'
import { WakeableSleep } from '../wakeable-sleep.js'
import { secretLabel, signatureHeader, signDelivery, type WebhookEventType, webhooksMax } from './webhooks.js'

/** Events per delivery. */
export const eventsPerDeliveryMax = 100
/** One delivery; a receiver that takes longer has failed this attempt. */
export const deliveryTimeoutMs = 10_000
/** Failed attempts back off from 1 s, doubling, up to this. */
export const retryBackoffMsMax = 60_000
/** Attempts of one batch before it goes to the dead-letter list (VMONEY_WEBHOOK_ATTEMPTS). */
export const deliveryAttemptsDefault = 12
/** How often the dispatcher looks for work when no commit woke it. */
export const dispatchIntervalMs = 500

interface HookState {
  attempts: number
  retryAt: number
  busy: boolean
}

interface HookRow {
  readonly id: string
  readonly url: string
  readonly secret: string
  readonly events: string
  readonly cursor_height: number
  readonly cursor_seq: number
}

type Delivery = { ok: true } | { ok: false; error: string }

/**
 * Delivers every webhook's events. It runs in the process whose funnel holds the lease, so one process
 * delivers at a time; each cursor moves only from the value it was read at, so a process that lost the
 * lease mid-delivery cannot move it back. Delivery is at least once: receivers deduplicate by event id.
 */
export class WebhookDispatcher {
  readonly #db: Kysely<Database>
  readonly #masterKey: Uint8Array
  readonly #nodeId: string
  readonly #log: Logger
  readonly #attemptsMax: number
  readonly #deliveries: Counter<'result'>
  readonly #states = new Map<string, HookState>()
  readonly #inFlight = new Set<Promise<void>>()
  readonly #sleep = new WakeableSleep()
  #running: Promise<void> | null = null
  #leading = false
  #stopped = false

  constructor(options: {
    db: Kysely<Database>
    masterKey: Uint8Array
    nodeId: string
    log: Logger
    attemptsMax: number
    deliveries: Counter<'result'>
  }) {
    this.#db = options.db
    this.#masterKey = options.masterKey
    this.#nodeId = options.nodeId
    this.#log = options.log
    this.#attemptsMax = options.attemptsMax
    this.#deliveries = options.deliveries
  }

  /** Delivers while this process leads; stands by otherwise. */
  lead(leading: boolean): void {
    if (this.#stopped) return
    this.#leading = leading
    if (leading && this.#running === null) this.#running = this.#run()
    this.#sleep.wake()
  }

  /** Something was committed: look now. */
  wake(): void {
    this.#sleep.wake()
  }

  async stop(): Promise<void> {
    this.#stopped = true
    this.#leading = false
    this.#sleep.wake()
    await this.#running
  }

  async #run(): Promise<void> {
    for (;;) {
      await this.#dispatchWhileLeading()
      await Promise.all(this.#inFlight)
      // Leading again while the last deliveries ended: go on, as no second loop was started.
      if (!this.#leading) break
    }
    this.#running = null
  }

  async #dispatchWhileLeading(): Promise<void> {
    while (this.#leading) {
      try {
        const hooks = await this.#db
          .selectFrom('node_webhooks')
          .select(['id', 'url', 'secret', 'events', 'cursor_height', 'cursor_seq'])
          .where('removed', '=', 0)
          .limit(webhooksMax)
          .execute()
        const now = Date.now()
        for (const hook of hooks) {
          let state = this.#states.get(hook.id)
          if (state === undefined) {
            state = { attempts: 0, retryAt: 0, busy: false }
            this.#states.set(hook.id, state)
          }
          if (state.busy || state.retryAt > now) continue
          state.busy = true
          const step = this.#step(hook, state)
            .then((progressed) => {
              // More may wait behind what was just delivered: look again at once.
              if (progressed) this.#sleep.wake()
            })
            .catch((error: unknown) =>
              this.#log.warn({ err: error, webhook: hook.id }, 'webhook step failed'),
            )
            .finally(() => {
              state.busy = false
              this.#inFlight.delete(step)
            })
          this.#inFlight.add(step)
        }
      } catch (error) {
        this.#log.warn({ err: error }, 'the webhook dispatcher could not read the database')
      }
      await this.#sleep.sleep(dispatchIntervalMs)
    }
  }

  /**
   * One move of one webhook: a replay if one is asked, else the next batch after its cursor. True when it
   * delivered or moved the cursor, so that there may be more to do at once.
   */
  async #step(hook: HookRow, state: HookState): Promise<boolean> {
    const secret = openSecret(this.#masterKey, hook.secret, secretLabel(hook.id))
    const replay = await this.#db
      .selectFrom('node_webhook_dead_letters')
      .select(['id', 'events'])
      .where('webhook_id', '=', hook.id)
      .where('state', '=', 'replay')
      .orderBy('id')
      .limit(1)
      .executeTakeFirst()
    if (replay !== undefined) {
      // A replay is one delivery, asked by an operator: if it fails, the letter is dead again until asked.
      const result = await this.#post(hook, secret, replay.events)
      await this.#db
        .updateTable('node_webhook_dead_letters')
        .set(
          result.ok
            ? { state: 'replayed', replayed_at: Date.now() }
            : (eb) => ({ state: 'dead', attempts: eb('attempts', '+', 1), last_error: result.error }),
        )
        .where('id', '=', replay.id)
        .execute()
      return true
    }

    const from: Cursor = { height: hook.cursor_height, seq: hook.cursor_seq }
    const types = new Set(JSON.parse(hook.events) as WebhookEventType[])
    const page = await readChanges(this.#db, from, { kind: 'all' })
    const batch: { id: string }[] = []
    let to = page.cursor
    for (const { change, cursor } of page.changes) {
      if (!types.has(change.type)) continue
      batch.push({ id: formatCursor(cursor), ...change })
      if (batch.length === eventsPerDeliveryMax) {
        to = cursor
        break
      }
    }
    if (batch.length === 0) {
      if (to.height === from.height && to.seq === from.seq) return false
      await this.#advance(hook.id, from, to)
      return true
    }
    const events = JSON.stringify(batch)
    const result = await this.#post(hook, secret, events)
    if (result.ok) {
      await this.#advance(hook.id, from, to)
    } else if (state.attempts + 1 >= this.#attemptsMax) {
      // Every attempt failed: the batch waits in the dead-letter list and the webhook goes on.
      const deadLettered = await this.#db.transaction().execute(async (trx) => {
        const moved = await trx
          .updateTable('node_webhooks')
          .set({ cursor_height: to.height, cursor_seq: to.seq, last_error: result.error })
          .where('id', '=', hook.id)
          .where('cursor_height', '=', from.height)
          .where('cursor_seq', '=', from.seq)
          .executeTakeFirst()
        // Another process moved the cursor meanwhile: it has this batch in hand.
        if (Number(moved.numUpdatedRows) !== 1) return false
        await trx
          .insertInto('node_webhook_dead_letters')
          .values({
            webhook_id: hook.id,
            events,
            event_count: batch.length,
            attempts: state.attempts + 1,
            last_error: result.error,
            failed_at: Date.now(),
            state: 'dead',
            replayed_at: null,
          })
          .execute()
        return true
      })
      state.attempts = 0
      state.retryAt = 0
      if (!deadLettered) return true
      this.#deliveries.inc({ result: 'dead_lettered' })
      this.#log.warn(
        { webhook: hook.id, events: batch.length, error: result.error },
        'webhook batch dead-lettered',
      )
      return true
    } else {
      await this.#db
        .updateTable('node_webhooks')
        .set({ last_error: result.error })
        .where('id', '=', hook.id)
        .execute()
    }
    this.#settle(state, result)
    return result.ok
  }

  #settle(state: HookState, result: Delivery): void {
    if (result.ok) {
      state.attempts = 0
      state.retryAt = 0
      return
    }
    state.attempts++
    state.retryAt = Date.now() + Math.min(1000 * 2 ** (state.attempts - 1), retryBackoffMsMax)
  }

  async #advance(id: string, from: Cursor, to: Cursor): Promise<void> {
    await this.#db
      .updateTable('node_webhooks')
      .set({ cursor_height: to.height, cursor_seq: to.seq, last_error: null })
      .where('id', '=', id)
      .where('cursor_height', '=', from.height)
      .where('cursor_seq', '=', from.seq)
      .execute()
  }

  async #post(hook: HookRow, secret: Uint8Array, events: string): Promise<Delivery> {
    const body = `{"webhook":${JSON.stringify(hook.id)},"node":${JSON.stringify(this.#nodeId)},"events":${events}}`
    try {
      const response = await fetch(hook.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [signatureHeader]: signDelivery(secret, body, Math.floor(Date.now() / 1000)),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(deliveryTimeoutMs),
      })
      await response.body?.cancel()
      const ok = response.status >= 200 && response.status < 300
      this.#deliveries.inc({ result: ok ? 'delivered' : 'failed' })
      return ok ? { ok } : { ok, error: `HTTP ${response.status}` }
    } catch (error) {
      this.#deliveries.inc({ result: 'failed' })
      return { ok: false, error: (error as Error).message.slice(0, 500) }
    }
  }
}
