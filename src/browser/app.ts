import type { FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import type { Logger } from 'pino'
import { createHttpApp, operationRoutes, rateWindowMs } from '../http/server.js'
import { type BrowserContext, type NodeScope, prefixedScope, rootScope } from './context.js'
import { eventStreamRoutes } from './event-stream.js'
import { logReadRoutes } from './log-routes.js'
import { pageRoutes } from './page.js'
import { browserRoutes } from './routes.js'
import { tileRoutes } from './tiles.js'

/** Every route but block pushes takes small bodies (none, in fact). */
export const bodyBytesMax = 64 * 1024
/**
 * Requests per client address and 10 s, unless VMONEY_RATE_LIMIT says otherwise. A browser serves
 * verifiers that download whole logs and proofs, so it allows more than the node's api.
 */
export const requestsPerWindowMaxDefault = 20_000

/** Builds the block browser's HTTP app; `listen` is the caller's (tests use `inject()`). */
export async function buildBrowserApp(
  context: BrowserContext,
  logger: Logger | false,
  requestsPerWindowMax: number = requestsPerWindowMaxDefault,
): Promise<FastifyInstance> {
  const app = await createHttpApp(
    {
      title: 'VisibleMoney block browser',
      description:
        'Accepts checked blocks of the nodes it follows and nothing else; serves their logs, proofs, ' +
        'C2SP tlog-tiles and live updates. The default node is served at the root, every followed node ' +
        'under /n/{nodeId}.',
      tags: ['blocks', 'log', 'tiles', 'live', 'operations'],
      bodyBytesMax,
      requestsPerWindowMax,
      httpRequests: context.metrics.httpRequests,
    },
    logger,
  )
  browserRoutes(app, context, rateWindowMs)
  eventStreamRoutes(app, context)
  pageRoutes(app, context)
  nodeRoutes(app, context, rootScope(context.nodes))
  await app.register(async (scoped) => nodeRoutes(scoped, context, prefixedScope(context.nodes)), {
    prefix: '/n/:nodeId',
  })
  operationRoutes(app, {
    ready: async () => {
      await sql`select 1`.execute(context.db)
      return {}
    },
    registry: context.metrics.registry,
  })
  return app
}

/** The routes about one followed node: its log in the node's api shapes, and its tiles. */
function nodeRoutes(app: FastifyInstance, context: BrowserContext, scope: NodeScope): void {
  logReadRoutes(app, context, scope)
  tileRoutes(app, context, scope)
}
