import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Kysely } from 'kysely'
import { toBase64Url } from '../../protocol/encoding.js'
import { VmError } from '../../protocol/errors.js'
import { newId } from '../../protocol/transaction.js'
import { formatCursor, presentCursor } from '../changes/change-feed.js'
import { sealSecret } from '../identity.js'
import type { Database } from '../storage/schema.js'

/**
 * Operators' webhooks (seed 002: customers and back offices notified of what the node committed). Each
 * webhook delivers the committed log's `entry` and `block` events in order from its own cursor, in signed
 * batches; a batch refused on every attempt goes to a dead-letter list, from which an operator replays it.
 */

export const webhookEventTypes = ['entry', 'block'] as const
export type WebhookEventType = (typeof webhookEventTypes)[number]
/** Webhooks per node. */
export const webhooksMax = 100
/** How old a delivery's timestamp a receiver should accept (the signature covers it). */
export const signatureToleranceSeconds = 300
export const signatureHeader = 'vmoney-signature'

export interface WebhookSummary {
  readonly id: string
  readonly url: string
  readonly events: readonly WebhookEventType[]
  readonly cursor: string
  readonly lastError: string | null
  readonly deadLetters: number
  readonly createdAt: string
}

export interface DeadLetter {
  readonly id: number
  readonly webhook: string
  readonly state: 'dead' | 'replay' | 'replayed'
  readonly events: number
  readonly firstEvent: string
  readonly lastEvent: string
  readonly attempts: number
  readonly lastError: string
  readonly failedAt: string
  readonly replayedAt: string | null
}

export function secretLabel(webhookId: string): string {
  return `webhook:${webhookId}`
}

/** `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, as the receiver checks it. */
export function signDelivery(secret: Uint8Array, body: string, nowSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${nowSeconds}.${body}`).digest('hex')
  return `t=${nowSeconds},v1=${mac}`
}

/** What a receiver does with a delivery: true when the signature is the secret's and fresh. */
export function verifyDelivery(
  secret: Uint8Array,
  body: string,
  header: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): boolean {
  const match = /^t=(\d{1,12}),v1=([0-9a-f]{64})$/.exec(header)
  if (match === null) return false
  const time = Number(match[1])
  if (Math.abs(nowSeconds - time) > signatureToleranceSeconds) return false
  const expected = createHmac('sha256', secret).update(`${time}.${body}`).digest()
  return timingSafeEqual(expected, Buffer.from(match[2]!, 'hex'))
}

function webhookUrl(text: string): string {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new VmError('invalid_webhook', `${JSON.stringify(text)} is not a URL`, { status: 400 })
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new VmError('invalid_webhook', 'a webhook URL is http:// or https://', { status: 400 })
  if (url.username !== '' || url.password !== '')
    throw new VmError('invalid_webhook', 'a webhook URL carries no credentials: deliveries are signed', {
      status: 400,
    })
  return url.toString()
}

export function eventTypes(text: string): WebhookEventType[] {
  const types = [...new Set(text.split(',').map((t) => t.trim()))]
  for (const type of types) {
    if (!(webhookEventTypes as readonly string[]).includes(type))
      throw new VmError(
        'invalid_webhook',
        `event types are ${webhookEventTypes.join(', ')}, not ${JSON.stringify(type)}`,
        {
          status: 400,
        },
      )
  }
  return types as WebhookEventType[]
}

/**
 * Registers a webhook that delivers what is committed from now on. Returns its id and secret: the secret
 * is shown this once and kept sealed under the master key.
 */
export async function addWebhook(
  db: Kysely<Database>,
  masterKey: Uint8Array,
  url: string,
  events: readonly WebhookEventType[],
): Promise<{ id: string; secret: string }> {
  const target = webhookUrl(url)
  if (events.length === 0)
    throw new VmError('invalid_webhook', 'name at least one event type', { status: 400 })
  const id = newId()
  const secret = randomBytes(32)
  await db.transaction().execute(async (trx) => {
    const count = await trx
      .selectFrom('node_webhooks')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('removed', '=', 0)
      .executeTakeFirstOrThrow()
    if (Number(count.n) >= webhooksMax)
      throw new VmError('too_many_webhooks', `a node has at most ${webhooksMax} webhooks`, { status: 409 })
    const from = await presentCursor(trx)
    await trx
      .insertInto('node_webhooks')
      .values({
        id,
        url: target,
        secret: sealSecret(masterKey, secret, secretLabel(id)),
        events: JSON.stringify(events),
        cursor_height: from.height,
        cursor_seq: from.seq,
        removed: 0,
        created_at: Date.now(),
        last_error: null,
      })
      .execute()
  })
  return { id, secret: toBase64Url(secret) }
}

export async function listWebhooks(db: Kysely<Database>): Promise<WebhookSummary[]> {
  const rows = await db
    .selectFrom('node_webhooks')
    .select(['id', 'url', 'events', 'cursor_height', 'cursor_seq', 'last_error', 'created_at'])
    .select((eb) =>
      eb
        .selectFrom('node_webhook_dead_letters')
        .select((inner) => inner.fn.countAll<number>().as('n'))
        .whereRef('node_webhook_dead_letters.webhook_id', '=', 'node_webhooks.id')
        .where('node_webhook_dead_letters.state', '!=', 'replayed')
        .as('dead_letters'),
    )
    .where('removed', '=', 0)
    .orderBy('created_at')
    .limit(webhooksMax)
    .execute()
  return rows.map((row) => ({
    id: row.id,
    url: row.url,
    events: JSON.parse(row.events) as WebhookEventType[],
    cursor: formatCursor({ height: row.cursor_height, seq: row.cursor_seq }),
    lastError: row.last_error,
    deadLetters: Number(row.dead_letters ?? 0),
    createdAt: new Date(row.created_at).toISOString(),
  }))
}

async function requireWebhook(db: Kysely<Database>, id: string): Promise<void> {
  const row = await db
    .selectFrom('node_webhooks')
    .select('id')
    .where('id', '=', id)
    .where('removed', '=', 0)
    .executeTakeFirst()
  if (row === undefined) throw new VmError('not_found', `no webhook ${id}`, { status: 404 })
}

/** Stops deliveries; the webhook and its dead letters stay on record. */
export async function removeWebhook(db: Kysely<Database>, id: string): Promise<void> {
  await requireWebhook(db, id)
  await db.updateTable('node_webhooks').set({ removed: 1 }).where('id', '=', id).execute()
}

/** Dead letters listed per page, newest last. */
export const deadLettersPageMax = 1_000

export async function listDeadLetters(
  db: Kysely<Database>,
  webhookId: string,
  afterId = 0,
): Promise<DeadLetter[]> {
  await requireWebhook(db, webhookId)
  const rows = await db
    .selectFrom('node_webhook_dead_letters')
    .selectAll()
    .where('webhook_id', '=', webhookId)
    .where('id', '>', afterId)
    .orderBy('id')
    .limit(deadLettersPageMax)
    .execute()
  return rows.map((row) => {
    const events = JSON.parse(row.events) as { id: string }[]
    return {
      id: row.id,
      webhook: row.webhook_id,
      state: row.state,
      events: row.event_count,
      firstEvent: events[0]!.id,
      lastEvent: events.at(-1)!.id,
      attempts: row.attempts,
      lastError: row.last_error,
      failedAt: new Date(row.failed_at).toISOString(),
      replayedAt: row.replayed_at === null ? null : new Date(row.replayed_at).toISOString(),
    }
  })
}

/** Queues dead letters for delivery again (one, or all that are dead); returns how many. */
export async function replayDeadLetters(
  db: Kysely<Database>,
  webhookId: string,
  deadLetterId?: number,
): Promise<number> {
  await requireWebhook(db, webhookId)
  let update = db
    .updateTable('node_webhook_dead_letters')
    .set({ state: 'replay' })
    .where('webhook_id', '=', webhookId)
    .where('state', '=', 'dead')
  if (deadLetterId !== undefined) update = update.where('id', '=', deadLetterId)
  const result = await update.executeTakeFirst()
  const count = Number(result.numUpdatedRows)
  if (deadLetterId !== undefined && count === 0)
    throw new VmError('not_found', `webhook ${webhookId} has no dead letter ${deadLetterId} to replay`, {
      status: 404,
    })
  return count
}
