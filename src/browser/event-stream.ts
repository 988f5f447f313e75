import type { ServerResponse } from 'node:http'
import type { FastifyInstance } from 'fastify'
import { heartbeatIntervalMs, openEventStream } from '../http/server.js'
import { VmError } from '../protocol/errors.js'
import type { BrowserContext } from './context.js'

/** Open live streams at once; past it 503, so streams cannot exhaust the server's sockets and memory. */
export const subscribersMax = 1_000
/** A subscriber this far behind is dropped rather than buffered without bound. */
export const subscriberBufferedBytesMax = 1024 * 1024

function write(stream: ServerResponse, text: string): void {
  if (stream.writableLength > subscriberBufferedBytesMax) {
    stream.destroy()
    return
  }
  stream.write(text)
}

/** `GET /v1/events`: Server-Sent Events, one `block` event per accepted block of any followed node. */
export function eventStreamRoutes(app: FastifyInstance, context: BrowserContext): void {
  const streams = new Set<ServerResponse>()
  const heartbeat = setInterval(() => {
    for (const stream of streams) write(stream, ': heartbeat\n\n')
  }, heartbeatIntervalMs)
  heartbeat.unref()
  // Open streams would keep the server from closing: end them first.
  app.addHook('preClose', async () => {
    clearInterval(heartbeat)
    for (const stream of streams) stream.end()
  })

  app.get(
    '/v1/events',
    {
      schema: {
        tags: ['live'],
        summary:
          'Server-Sent Events: `block` {node, height, logSize, logRoot, leafCount, time} per accepted block',
      },
    },
    async (request, reply) => {
      if (streams.size >= subscribersMax) {
        throw new VmError('too_many_subscribers', `${streams.size} live streams are open; try later`, {
          status: 503,
          detail: { retryAfterSeconds: 5 },
        })
      }
      const stream = openEventStream(request, reply)
      streams.add(stream)
      context.metrics.subscribers.set(streams.size)
      const unsubscribe = context.events.subscribe((event) =>
        write(stream, `event: block\ndata: ${JSON.stringify(event)}\n\n`),
      )
      stream.on('close', () => {
        unsubscribe()
        streams.delete(stream)
        context.metrics.subscribers.set(streams.size)
      })
    },
  )
}
