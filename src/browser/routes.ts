import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { toVmError } from '../http/problem.js'
import { VmError } from '../protocol/errors.js'
import { listAlarms, storedHead } from './browser-store.js'
import type { BrowserContext } from './context.js'

/** A block of many large leaves fits; anything bigger is refused before it is parsed. */
export const blockBodyBytesMax = 32 * 1024 * 1024
/** Block pushes per client address and window: a busy node publishes many blocks a second. */
export const blockPostsPerWindowMax = 20_000
export const alarmsPerPageMax = 100
export const alarmsPerPageDefault = 20

/** Routes of the browser as a whole: accepting blocks, the followed nodes, alarms. */
export function browserRoutes(app: FastifyInstance, context: BrowserContext, rateWindowMs: number): void {
  app.post(
    '/v1/blocks',
    {
      bodyLimit: blockBodyBytesMax,
      config: { rateLimit: { max: blockPostsPerWindowMax, timeWindow: rateWindowMs } },
      schema: {
        tags: ['blocks'],
        summary: "Append a block: exactly the JSON of the node's GET /v1/blocks/{height}",
        description:
          '201 when block h+1 checks out after the held head; 200 {status: duplicate} for a block already held; ' +
          '409 block_rewrite (and an alarm) for a different block the node signed at a held height; ' +
          '409 block_height_gap with {expected} beyond h+1.',
      },
      // Parse failures (garbage JSON, an oversized body) never reach the acceptor, which counts the rest.
      onError: async (_request, _reply, error) => {
        if (!(error instanceof VmError)) context.metrics.refusals.inc({ code: toVmError(error).code })
      },
    },
    async (request, reply) => {
      const result = await context.acceptor.accept(request.body)
      const body = { node: result.node, height: result.height, logSize: result.logSize }
      if (result.status === 'duplicate') return reply.status(200).send({ status: 'duplicate', ...body })
      return reply.status(201).send(body)
    },
  )

  app.get(
    '/v1/nodes',
    { schema: { tags: ['blocks'], summary: 'The followed nodes and the head held for each' } },
    async () => {
      const nodes = []
      for (const node of context.nodes.list) {
        const head = await storedHead(context.db, node.id)
        nodes.push({
          nodeId: node.id,
          url: node.url,
          origin: node.origin,
          noteVerifierKey: node.noteVerifierKey,
          signingKey: node.signingJwk,
          head:
            head === null
              ? null
              : {
                  height: head.header.height,
                  logSize: head.header.logSize,
                  logRoot: head.header.logRoot,
                  time: head.header.time,
                  headerHash: head.headerHash,
                },
        })
      }
      return { nodes }
    },
  )

  app.get(
    '/v1/alarms',
    {
      schema: {
        tags: ['blocks'],
        summary: 'Alarms, newest first: a node that signed two blocks at one height, or serves another key',
        querystring: Type.Object(
          {
            before: Type.Optional(
              Type.Integer({ minimum: 1, description: 'the `next` of the previous page' }),
            ),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: alarmsPerPageMax })),
            node: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request) => {
      const {
        before,
        limit = alarmsPerPageDefault,
        node,
      } = request.query as {
        before?: number
        limit?: number
        node?: string
      }
      const alarms = await listAlarms(context.db, { before, limit, node })
      return { alarms, next: alarms.length === limit ? alarms.at(-1)!.id : null }
    },
  )
}
