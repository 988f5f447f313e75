import type { ServerResponse } from 'node:http'
import rateLimit from '@fastify/rate-limit'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Counter, Registry } from 'prom-client'
import { VmError } from '../protocol/errors.js'
import { binaryMediaType } from '../protocol/leaf-page.js'
import { sendProblem } from './problem.js'

export const requestTimeoutMs = 60_000
/** A comment (SSE) or ping (WebSocket) this often keeps proxies from closing an idle live stream. */
export const heartbeatIntervalMs = 15_000
/** How long an SSE client waits before reconnecting (the `retry` field). */
export const reconnectDelayMs = 3_000
export const connectionsMax = 10_000
export const rateWindowMs = 10_000
/** Client addresses the rate limiter remembers at once. */
export const rateLimitedClientsMax = 100_000

export interface HttpAppOptions {
  readonly title: string
  readonly description: string
  readonly tags: readonly string[]
  readonly bodyBytesMax: number
  /** Requests per client address and `rateWindowMs`; past it, 429 with Retry-After. 0: no limit. */
  readonly requestsPerWindowMax: number
  readonly httpRequests: Counter<'method' | 'route' | 'status'>
}

/**
 * The HTTP conventions every VisibleMoney server shares (the node's api and the block browser): bounded
 * bodies, connections and time, a rate limit per client address, OpenAPI 3.1 from the route schemas with
 * a docs page, RFC 9457 problem+json for every error, a request id on every answer, request metrics.
 * `listen` is the caller's, so tests can use `inject()`.
 */
export async function createHttpApp(
  options: HttpAppOptions,
  logger: Logger | false,
): Promise<FastifyInstance> {
  const app = Fastify({
    ...(logger === false ? { logger: false } : { loggerInstance: logger }),
    bodyLimit: options.bodyBytesMax,
    requestTimeout: requestTimeoutMs,
    connectionTimeout: requestTimeoutMs,
    routerOptions: { maxParamLength: 300 },
    genReqId: () => crypto.randomUUID(),
    requestIdHeader: false,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  }) as unknown as FastifyInstance
  app.server.maxConnections = connectionsMax

  if (options.requestsPerWindowMax > 0) {
    await app.register(rateLimit, {
      max: options.requestsPerWindowMax,
      timeWindow: rateWindowMs,
      cache: rateLimitedClientsMax,
      errorResponseBuilder: (_request, limit) =>
        new VmError('rate_limited', `more than ${limit.max} requests in ${limit.after}; slow down`, {
          status: 429,
          detail: { retryAfterSeconds: Math.ceil(limit.ttl / 1000) },
        }),
    })
  }
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: options.title,
        version: '1',
        description: `${options.description} Errors are RFC 9457 problem+json with a stable \`code\`.`,
      },
      tags: options.tags.map((name) => ({ name })),
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })

  // Fastify logs two info lines per request; at thousands of requests per second that drowns the log,
  // so request logs start at warn (errors are logged by the error handler).
  app.addHook('onRoute', (route) => {
    route.logLevel ??= 'warn'
  })
  // JSON only: anything else is refused with 415 rather than parsed as text.
  app.removeContentTypeParser('text/plain')
  app.setErrorHandler((error, request, reply) => sendProblem(error as Error, request, reply))
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      new VmError('not_found', `no route ${request.method} ${request.url}`, { status: 404 }),
      request,
      reply,
    ),
  )
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id)
  })
  app.addHook('onResponse', async (request, reply) => {
    options.httpRequests.inc({
      method: request.method,
      route: request.routeOptions.url ?? 'unknown',
      status: reply.statusCode,
    })
  })
  return app
}

/** `/healthz`, `/readyz` (the database answers), `/metrics` and `/openapi.json`. */
export function operationRoutes(
  app: FastifyInstance,
  options: {
    readonly ready: () => Promise<Record<string, unknown>>
    readonly registry: Registry
    readonly beforeMetrics?: () => void
  },
): void {
  const tags = ['operations']
  app.get('/healthz', { schema: { tags, summary: 'The process is alive' } }, async () => ({ status: 'ok' }))
  app.get('/readyz', { schema: { tags, summary: 'The database answers' } }, async () => {
    try {
      return { status: 'ready', ...(await options.ready()) }
    } catch (error) {
      throw new VmError('not_ready', 'the database does not answer', {
        status: 503,
        detail: { retryAfterSeconds: 1 },
        cause: error,
      })
    }
  })
  app.get('/metrics', { schema: { tags, summary: 'Prometheus metrics' } }, async (_request, reply) => {
    options.beforeMetrics?.()
    return reply.type(options.registry.contentType).send(await options.registry.metrics())
  })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
}

/** Listens on host:port; a port that is taken or not allowed is a clear error naming the setting. */
export async function listen(
  app: FastifyInstance,
  host: string,
  port: number,
  setting: string,
): Promise<string> {
  try {
    const address = await app.listen({ host, port })
    return address.replace('://[::1]', '://localhost')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw new VmError('listen_failed', `cannot listen on ${host}:${port} (${code}): set ${setting}`, {
        status: 500,
        cause: error,
      })
    }
    throw error
  }
}

/**
 * The binary form of a bulk read (leaf-page.ts) when the client accepts it, the JSON otherwise: a
 * verifier that downloads a whole log then parses and decodes no base64 text.
 */
export function binaryOrJson<T>(
  request: FastifyRequest,
  reply: FastifyReply,
  binary: () => Uint8Array,
  json: () => T,
): T | FastifyReply {
  if (!(request.headers.accept ?? '').includes(binaryMediaType)) return json()
  const bytes = binary()
  return reply.type(binaryMediaType).send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
}

/** Takes the reply over as a Server-Sent Events stream: headers, then the reconnect delay. */
export function openEventStream(request: FastifyRequest, reply: FastifyReply): ServerResponse {
  reply.hijack()
  const stream = reply.raw
  stream.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-request-id': request.id,
  })
  stream.write(`retry: ${reconnectDelayMs}\n\n`)
  return stream
}
