import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { listen } from '../http/server.js'
import type { NodeConfig } from '../node/config.js'
import { VmError } from '../protocol/errors.js'
import { buildBrowserApp } from './app.js'
import { createBrowserContext } from './context.js'
import { Follower, type FollowerTiming } from './follower.js'
import { openBrowserDatabase } from './storage.js'

export { buildBrowserApp } from './app.js'
export { createBrowserContext } from './context.js'

export interface RunningBrowser {
  readonly url: string
  close(): Promise<void>
}

/**
 * Starts the block browser (seed 000 BCBS): its own database, an app on host:browserPort (port 0: any
 * free port, and `url` tells which), and a follower per followed node that pulls what was not pushed.
 */
export async function startBrowser(
  config: NodeConfig,
  log: Logger,
  timing?: FollowerTiming,
): Promise<RunningBrowser> {
  if (config.browserNodes.length === 0) {
    throw new VmError(
      'config_invalid',
      'the block browser follows no node: set VMONEY_BROWSER_NODES or --follow',
    )
  }
  const database = await openBrowserDatabase(config.browserDatabaseUrl, {
    waitMs: config.databaseWaitMs,
    onRetry: (message, waitMs) => log.warn({ retryInMs: waitMs }, message),
  })
  log.info({ database: database.url }, 'browser database ready')
  const followers = new Map<string, Follower>()
  let app: FastifyInstance | undefined
  let url: string
  try {
    const context = await createBrowserContext({
      database,
      nodes: config.browserNodes,
      log,
      onGap: (nodeId) => followers.get(nodeId)?.pullNow(),
    })
    for (const node of context.nodes.list) followers.set(node.id, new Follower(node, context, timing))
    app = await buildBrowserApp(context, log.child({ component: 'browser' }), config.rateLimit)
    url = await listen(app, config.host, config.browserPort, 'VMONEY_BROWSER_PORT or --browser-port')
  } catch (error) {
    await app?.close()
    await database.close()
    throw error
  }
  const server = app
  for (const follower of followers.values()) follower.start()
  return {
    url,
    async close() {
      await Promise.all([...followers.values()].map((follower) => follower.close()))
      await server.close()
      await database.close()
    },
  }
}
