import websocket from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { createHttpApp, operationRoutes } from '../../http/server.js'
import type { ApiContext } from './context.js'
import { changeRoutes } from './routes/changes.js'
import { logRoutes } from './routes/log.js'
import { readRoutes } from './routes/reads.js'
import { transactionRoutes } from './routes/transactions.js'

/** A batch of a thousand signed transactions fits with room to spare. */
export const bodyBytesMax = 4 * 1024 * 1024
/** Requests per client address and 10 s, unless VMONEY_RATE_LIMIT says otherwise. */
export const requestsPerWindowMaxDefault = 2_000

/**
 * Builds the api (seed 000 VMAS). `listen` is the caller's: tests use `inject()`. A funnel-only process
 * (`publicRoutes` false) serves the operations routes alone.
 */
export async function buildApp(
  context: ApiContext,
  logger: Logger | false,
  requestsPerWindowMax: number = requestsPerWindowMaxDefault,
  publicRoutes = true,
): Promise<FastifyInstance> {
  const app = await createHttpApp(
    {
      title: 'VisibleMoney node',
      description: 'Signed transactions, a verifiable RFC 9162 log, and authorized reads.',
      tags: ['transactions', 'accounts', 'persons', 'assets', 'log', 'live', 'operations'],
      bodyBytesMax,
      requestsPerWindowMax,
      httpRequests: context.metrics.httpRequests,
    },
    logger,
  )
  if (publicRoutes) {
    // Clients send nothing on a changefeed's socket: a small frame limit is enough.
    await app.register(websocket, { options: { maxPayload: 4096 } })
    transactionRoutes(app, context)
    readRoutes(app, context)
    logRoutes(app, context)
    changeRoutes(app, context, context.changes)
  }
  operationRoutes(app, {
    ready: async () => {
      await context.db.selectFrom('node_settings').select('name').limit(1).execute()
      return { poolPending: context.pool.pendingCount }
    },
    registry: context.metrics.registry,
    beforeMetrics: () => context.metrics.poolPending.set(context.pool.pendingCount),
  })
  return app
}
