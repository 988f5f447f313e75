import rateLimit from '@fastify/rate-limit'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { VmError } from '../../protocol/errors.js'
import type { ApiContext } from './context.js'
import { sendProblem } from './problem.js'
import { logRoutes } from './routes/log.js'
import { readRoutes } from './routes/reads.js'
import { transactionRoutes } from './routes/transactions.js'

/** A batch of a thousand signed transactions fits with room to spare. */
export const bodyBytesMax = 4 * 1024 * 1024
export const requestTimeoutMs = 60_000
export const connectionsMax = 10_000
/** Requests per client address and window; past it, 429 with Retry-After. */
export const requestsPerWindowMax = 2_000
export const rateWindowMs = 10_000
/** Client addresses the rate limiter remembers at once. */
export const rateLimitedClientsMax = 100_000

/** Builds the api (seed 000 VMAS). `listen` is the caller's: tests use `inject()`. */
export async function buildApp(context: ApiContext, logger: Logger | false): Promise<FastifyInstance> {
  const app = Fastify({
    ...(logger === false ? { logger: false } : { loggerInstance: logger }),
    bodyLimit: bodyBytesMax,
    requestTimeout: requestTimeoutMs,
    connectionTimeout: requestTimeoutMs,
    routerOptions: { maxParamLength: 200 },
    genReqId: () => crypto.randomUUID(),
    requestIdHeader: false,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  }) as unknown as FastifyInstance
  app.server.maxConnections = connectionsMax

  await app.register(rateLimit, {
    max: requestsPerWindowMax,
    timeWindow: rateWindowMs,
    cache: rateLimitedClientsMax,
    errorResponseBuilder: (_request, context) =>
      new VmError('rate_limited', `more than ${context.max} requests in ${context.after}; slow down`, {
        status: 429,
        detail: { retryAfterSeconds: Math.ceil(context.ttl / 1000) },
      }),
  })
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'VisibleMoney node',
        version: '1',
        description:
          'Signed transactions, a verifiable RFC 9162 log, and authorized reads. Errors are RFC 9457 problem+json with a stable `code`.',
      },
      tags: [
        { name: 'transactions' },
        { name: 'accounts' },
        { name: 'persons' },
        { name: 'assets' },
        { name: 'log' },
        { name: 'operations' },
      ],
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })

  // Fastify logs two info lines per request; at thousands of requests per second that drowns the log,
  // so request logs start at warn (errors are logged by the error handler).
  app.addHook('onRoute', (route) => {
    route.logLevel ??= 'warn'
  })
  // The api speaks JSON only: anything else is refused with 415 rather than parsed as text.
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
    context.metrics.httpRequests.inc({
      method: request.method,
      route: request.routeOptions.url ?? 'unknown',
      status: reply.statusCode,
    })
  })

  transactionRoutes(app, context)
  readRoutes(app, context)
  logRoutes(app, context)

  app.get('/healthz', { schema: { tags: ['operations'], summary: 'The process is alive' } }, async () => ({
    status: 'ok',
  }))
  app.get('/readyz', { schema: { tags: ['operations'], summary: 'The database answers' } }, async () => {
    try {
      await context.db.selectFrom('node_settings').select('name').limit(1).execute()
    } catch (error) {
      throw new VmError('not_ready', 'the database does not answer', {
        status: 503,
        detail: { retryAfterSeconds: 1 },
        cause: error,
      })
    }
    return { status: 'ready', poolPending: context.pool.pendingCount }
  })
  app.get(
    '/metrics',
    { schema: { tags: ['operations'], summary: 'Prometheus metrics' } },
    async (_request, reply) => {
      context.metrics.poolPending.set(context.pool.pendingCount)
      return reply.type(context.metrics.registry.contentType).send(await context.metrics.registry.metrics())
    },
  )
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  return app
}
