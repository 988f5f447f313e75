import type { ServerResponse } from 'node:http'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import { heartbeatIntervalMs, openEventStream } from '../../../http/server.js'
import { VmError } from '../../../protocol/errors.js'
import { Id } from '../../../protocol/transaction.js'
import {
  type ChangeTail,
  type Cursor,
  type EntryFilter,
  formatCursor,
  type Positioned,
  parseCursor,
  type Subscriber,
  subscribersMax,
} from '../../changes/change-feed.js'
import { accountFromRow } from '../../ledger/ledger-store.js'
import { accountAccess, authenticate, isStaff, type Principal, type Range } from '../authorize.js'
import type { ApiContext } from '../context.js'

/** Accounts one stream may name. */
export const streamAccountsMax = 100
/** A stream this far behind is closed rather than buffered without bound; it resumes from its last id. */
export const streamBufferedBytesMax = 4 * 1024 * 1024
/** How long a catching-up stream waits for its reader to take what was sent. */
export const drainWaitMs = 30_000

const ChangesQuery = Type.Object(
  {
    account: Type.Optional(
      Type.Array(Id, { minItems: 1, maxItems: streamAccountsMax, description: 'accounts to follow' }),
    ),
    all: Type.Optional(Type.Boolean({ description: "staff only: every account's entries" })),
    after: Type.Optional(
      Type.String({ maxLength: 40, description: 'resume after this event id (or send Last-Event-ID)' }),
    ),
  },
  { additionalProperties: false },
)

interface Subscription {
  readonly principal: Principal
  readonly accounts: readonly string[] | undefined
  readonly all: boolean
  filter: EntryFilter
  readonly after: Cursor | null
}

/** A transport: SSE over a response, or a WebSocket. */
interface Transport {
  send(item: Positioned): boolean
  /** Tells the reader the stream is live from `cursor` on. */
  ready(cursor: Cursor): void
  fail(error: VmError): void
  isOpen(): boolean
  drained(): Promise<void>
  onClose(listener: () => void): void
  heartbeat(): void
}

/**
 * `GET /v1/changes`: the entries of the reader's accounts and every new block, as Server-Sent Events, or
 * as WebSocket messages when the request asks to upgrade. Signed like every read (RFC 9421, on the request
 * or on the upgrade request). Each event's id is a cursor: reconnecting with it (`Last-Event-ID` or
 * `?after=`) resumes exactly after that event, on any replica.
 */
export function changeRoutes(app: FastifyInstance, context: ApiContext, tail: ChangeTail): void {
  const subscriptions = new WeakMap<FastifyRequest, Subscription>()
  const transports = new Set<Transport>()
  const heartbeat = setInterval(() => {
    for (const transport of transports) transport.heartbeat()
  }, heartbeatIntervalMs)
  heartbeat.unref()
  app.addHook('preClose', async () => {
    clearInterval(heartbeat)
    for (const transport of transports) transport.fail(shuttingDown())
  })

  async function filterFor(
    subscription: Pick<Subscription, 'principal' | 'accounts' | 'all'>,
  ): Promise<EntryFilter> {
    const { principal, accounts, all } = subscription
    if (all) {
      if (!isStaff(principal))
        throw new VmError('forbidden', 'only staff may follow every account', { status: 403 })
      return { kind: 'all' }
    }
    if (accounts === undefined) return { kind: 'owner', owner: principal.personId }
    const granted = new Map<string, readonly Range[] | null>()
    for (const id of new Set(accounts)) {
      const row = await context.db
        .selectFrom('ledger_accounts')
        .selectAll()
        .where('id', '=', id)
        .executeTakeFirst()
      if (row === undefined) throw new VmError('not_found', `no account ${id}`, { status: 404 })
      granted.set(id, await accountAccess(context, principal, accountFromRow(row)))
    }
    return { kind: 'accounts', accounts: granted }
  }

  function serve(subscription: Subscription, transport: Transport): void {
    transports.add(transport)
    context.metrics.changeSubscribers.set(transports.size)
    let closed = false
    const close = () => {
      if (closed) return
      closed = true
      tail.unsubscribe(subscriber)
      transports.delete(transport)
      context.metrics.changeSubscribers.set(transports.size)
    }
    /** Ends the stream with an error event; from then on nothing more is written to it. */
    const end = (error: unknown) => {
      transport.fail(error instanceof VmError ? error : shuttingDown())
      close()
    }
    const subscriber: Subscriber = {
      get filter() {
        return subscription.filter
      },
      cursor: subscription.after ?? tail.cursor,
      deliver: (item) => transport.send(item),
      live() {
        transport.ready(this.cursor)
      },
      drained: () => transport.drained(),
      recheck: async () => {
        try {
          const key = await context.keys.get(subscription.principal.keyId)
          if (key === null || key.revoked)
            throw new VmError('signer_key_revoked', 'the signing key was revoked', { status: 401 })
          subscription.filter = await filterFor(subscription)
        } catch (error) {
          end(error)
        }
      },
    }
    transport.onClose(close)
    // The reader may have gone while it was being authorized: then its close came before the listener.
    if (!transport.isOpen()) {
      close()
      return
    }
    tail.subscribe(subscriber, () => !closed && transport.isOpen()).catch(end)
  }

  app.route({
    method: 'GET',
    url: '/v1/changes',
    schema: {
      tags: ['live'],
      summary: 'Changefeed: `entry` events of your accounts and `block` events, by SSE or WebSocket',
      description:
        'Signed request (RFC 9421). Without `account`: the entries of every account you own, opened before or after you subscribed. With `account`: those accounts, each readable by you (as owner, staff, or through a view, within its time range). With `all=true` (staff): every entry. Every stream carries every `block` event. Event ids are cursors: resume with `Last-Event-ID` or `after`. Delivery is in commit order and exactly once per cursor.',
      querystring: ChangesQuery,
    },
    preHandler: async (request) => {
      const principal = await authenticate(context, request)
      const query = request.query as { account?: string[]; all?: boolean; after?: string }
      const resumeFrom = query.after ?? headerValue(request.headers['last-event-id'])
      const partial = { principal, accounts: query.account, all: query.all === true }
      if (partial.all && partial.accounts !== undefined)
        throw new VmError('invalid_query', 'choose `all` or `account`, not both', { status: 400 })
      if (transports.size >= subscribersMax) {
        throw new VmError('too_many_subscribers', `${transports.size} streams are open; try later`, {
          status: 503,
          detail: { retryAfterSeconds: 5 },
        })
      }
      subscriptions.set(request, {
        ...partial,
        filter: await filterFor(partial),
        after: resumeFrom === undefined ? null : parseCursor(resumeFrom),
      })
    },
    handler: async (request, reply) => {
      const subscription = subscriptions.get(request)!
      const stream = openEventStream(request, reply)
      serve(subscription, sseTransport(stream))
    },
    wsHandler: (socket, request) => {
      serve(subscriptions.get(request)!, webSocketTransport(socket))
    },
  })
}

function sseTransport(stream: ServerResponse): Transport {
  const write = (text: string): boolean => {
    if (stream.destroyed || stream.writableEnded) return false
    if (stream.writableLength > streamBufferedBytesMax) {
      stream.destroy()
      return false
    }
    stream.write(text)
    return true
  }
  return {
    send: ({ change, cursor }) =>
      write(`id: ${formatCursor(cursor)}\nevent: ${change.type}\ndata: ${JSON.stringify(change)}\n\n`),
    ready: (cursor) =>
      write(
        `id: ${formatCursor(cursor)}\nevent: ready\ndata: ${JSON.stringify({ cursor: formatCursor(cursor) })}\n\n`,
      ),
    fail(error) {
      write(`event: error\ndata: ${JSON.stringify({ code: error.code, detail: error.message })}\n\n`)
      if (stream.writableEnded) return
      stream.end()
      // A reader that stops reading must not keep the socket and its buffer.
      setTimeout(() => stream.destroy(), drainWaitMs).unref()
    },
    isOpen: () => !stream.destroyed && !stream.writableEnded,
    drained: () => waitUntil(() => stream.destroyed || stream.writableLength === 0),
    onClose: (listener) => stream.on('close', listener),
    heartbeat: () => write(': heartbeat\n\n'),
  }
}

function webSocketTransport(socket: WebSocket): Transport {
  const open = () => socket.readyState === socket.OPEN
  return {
    send({ change, cursor }) {
      if (!open()) return false
      if (socket.bufferedAmount > streamBufferedBytesMax) {
        socket.close(1013, 'too far behind: resume from the last id')
        return false
      }
      socket.send(JSON.stringify({ id: formatCursor(cursor), ...change }))
      return true
    },
    ready(cursor) {
      if (open()) socket.send(JSON.stringify({ type: 'ready', id: formatCursor(cursor) }))
    },
    fail(error) {
      if (!open()) return
      socket.send(JSON.stringify({ type: 'error', code: error.code, detail: error.message }))
      socket.close(error.status === 401 || error.status === 403 ? 1008 : 1011, error.code)
    },
    isOpen: open,
    drained: () => waitUntil(() => !open() || socket.bufferedAmount === 0),
    onClose: (listener) => socket.on('close', listener),
    heartbeat: () => {
      if (open()) socket.ping()
    },
  }
}

/** Waits until `done()`, looking every 10 ms, for at most `drainWaitMs`. */
async function waitUntil(done: () => boolean): Promise<void> {
  const deadline = Date.now() + drainWaitMs
  while (!done()) {
    if (Date.now() > deadline)
      throw new VmError('reader_too_slow', `the reader took nothing for ${drainWaitMs} ms`, { status: 408 })
    await new Promise((resume) => setTimeout(resume, 10))
  }
}

function shuttingDown(): VmError {
  return new VmError('stream_closed', 'the server closed the stream; resume from the last id', {
    status: 503,
  })
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}
