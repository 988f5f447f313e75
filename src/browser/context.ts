import { type TProperties, type TSchema, Type } from '@sinclair/typebox'
import type { FastifyRequest } from 'fastify'
import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { FollowedNode } from '../node/config.js'
import { BlockAcceptor } from './accept.js'
import { BlockEvents } from './block-events.js'
import { alarmCounts, storedHead } from './browser-store.js'
import { type FollowedNodeInfo, FollowedNodes } from './followed-nodes.js'
import { type BrowserMetrics, createBrowserMetrics } from './metrics.js'
import type { BrowserSchema } from './schema.js'
import type { BrowserDatabase, TreeNodeReader } from './storage.js'

/** What the browser's routes and followers share. */
export interface BrowserContext {
  readonly db: Kysely<BrowserSchema>
  /**
   * Each followed node's log size as held, kept in memory: every proof and page is bounded by it, and
   * one process appends, so it changes only when the acceptor commits a block.
   */
  readonly logSizes: Map<string, number>
  /**
   * The node's log size as held, at least `wanted` if the database has it: a reader on another
   * connection (PostgreSQL) may see a commit before the acceptor has noted it, so asking past the noted
   * size reads the head once more.
   */
  logSize(nodeId: string, wanted?: number): Promise<number>
  readonly readTreeNodes: TreeNodeReader
  readonly nodes: FollowedNodes
  readonly metrics: BrowserMetrics
  readonly events: BlockEvents
  readonly acceptor: BlockAcceptor
  readonly log: Logger
}

export interface BrowserContextOptions {
  readonly database: BrowserDatabase
  readonly nodes: readonly FollowedNode[]
  readonly log: Logger
  /** Called after a `block_height_gap`: the node's follower pulls what is missing. */
  readonly onGap?: (nodeId: string) => void
}

export async function createBrowserContext(options: BrowserContextOptions): Promise<BrowserContext> {
  const { db } = options.database
  const nodes = new FollowedNodes(options.nodes)
  const metrics = createBrowserMetrics()
  const events = new BlockEvents()
  const logSizes = new Map<string, number>()
  const acceptor = new BlockAcceptor({
    db,
    logSizes,
    nodes,
    metrics,
    events,
    log: options.log,
    onGap: options.onGap ?? (() => {}),
  })
  // Gauges start from what is stored, so they are right after a restart.
  for (const node of nodes.list) {
    const size = (await storedHead(db, node.id))?.header.logSize ?? 0
    logSizes.set(node.id, size)
    metrics.logSize.set({ node: node.id }, size)
  }
  for (const { node, kind, count } of await alarmCounts(db)) metrics.alarms.set({ node, kind }, count)
  const logSize = async (nodeId: string, wanted = 0): Promise<number> => {
    const noted = logSizes.get(nodeId) ?? 0
    if (wanted <= noted) return noted
    return (await storedHead(db, nodeId))?.header.logSize ?? 0
  }
  return {
    db,
    logSizes,
    logSize,
    readTreeNodes: options.database.readTreeNodes,
    nodes,
    metrics,
    events,
    acceptor,
    log: options.log,
  }
}

/**
 * Where a group of per-node routes is mounted: at the root for the default node, or under
 * `/n/:nodeId` for any followed node. Routes ask it which node a request is about.
 */
export interface NodeScope {
  node(request: FastifyRequest): FollowedNodeInfo
  /** The routes' path parameters, with `nodeId` added under the prefix (so OpenAPI lists it). */
  params(properties: TProperties): TSchema
}

export const nodeIdParam = Type.String({ minLength: 1, maxLength: 256, description: 'a followed node id' })

export function rootScope(nodes: FollowedNodes): NodeScope {
  return { node: () => nodes.default, params: (properties) => Type.Object(properties) }
}

export function prefixedScope(nodes: FollowedNodes): NodeScope {
  return {
    node: (request) => nodes.get((request.params as { nodeId: string }).nodeId),
    params: (properties) => Type.Object({ nodeId: nodeIdParam, ...properties }),
  }
}
