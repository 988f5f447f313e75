import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { binaryOrJson } from '../http/server.js'
import { leavesPerPageMax } from '../node/api/routes/log.js'
import { blockFromRaw } from '../protocol/block.js'
import { toBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { hashSize } from '../protocol/hash.js'
import { decodeLeafPage, encodePagedBlock } from '../protocol/leaf-page.js'
import { consistencyProof, inclusionProof, leafHash, type NodeReader } from '../protocol/merkle.js'
import {
  blockAt,
  latestCheckpoint,
  leafHashRange,
  leafRange,
  leavesPerStoredPageMax,
  recipientLeaves,
  storedHead,
} from './browser-store.js'
import type { BrowserContext, NodeScope } from './context.js'

/** Leaf indexes per page of a recipient's leaves. */
export const recipientLeavesPerPageMax = 1000
export const recipientLeavesPerPageDefault = 100

const Index = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
const ProofResponse = Type.Object(
  { proof: Type.Array(Type.String({ description: 'base64 SHA-256' })) },
  { additionalProperties: true },
)

/**
 * A followed node's log, with the same paths and JSON shapes as the node's own api
 * (src/node/api/routes/log.ts), so verifiers read either the same way.
 */
export function logReadRoutes(app: FastifyInstance, context: BrowserContext, scope: NodeScope): void {
  const { db } = context
  const tags = ['log']

  function reader(nodeId: string): NodeReader {
    return (ids) => context.readTreeNodes(nodeId, ids)
  }

  function outOfRange(size: number, current: number): VmError {
    return new VmError('proof_out_of_range', `size ${size} exceeds the log size ${current}`, { status: 400 })
  }

  app.get(
    '/v1/node',
    {
      schema: {
        tags,
        summary: 'The followed node: id, log origin and note verifier key',
        params: scope.params({}),
      },
    },
    async (request) => {
      const node = scope.node(request)
      return {
        nodeId: node.id,
        origin: node.origin,
        noteVerifierKey: node.noteVerifierKey,
        signingKey: node.signingJwk,
      }
    },
  )

  app.get(
    '/v1/log/checkpoint',
    {
      schema: {
        tags,
        summary: "The node's newest checkpoint held here, as a C2SP signed note (text/plain)",
        params: scope.params({}),
      },
    },
    async (request, reply) => {
      const note = await latestCheckpoint(db, scope.node(request).id)
      if (note === null) throw new VmError('log_empty', 'the log has no checkpoint yet', { status: 404 })
      return reply.type('text/plain; charset=utf-8').send(note)
    },
  )

  app.get(
    '/v1/log/leaves/:index',
    {
      schema: {
        tags,
        summary: 'The exact bytes of one leaf (base64)',
        params: scope.params({ index: Index }),
      },
    },
    async (request) => {
      const { index } = request.params as { index: number }
      const [leaf] = await leafRange(db, scope.node(request).id, index, index + 1)
      if (leaf === undefined) throw new VmError('leaf_not_found', `no leaf ${index}`, { status: 404 })
      return { index, leaf: toBase64(leaf), leafHash: toBase64(leafHash(leaf)) }
    },
  )

  app.get(
    '/v1/log/leaves',
    {
      schema: {
        tags,
        summary: `The exact bytes (base64) of leaves [start, end), at most ${leavesPerPageMax} and none past the log`,
        params: scope.params({}),
        querystring: Type.Object({ start: Index, end: Index }, { additionalProperties: false }),
      },
    },
    async (request) => {
      const { start, end } = request.query as { start: number; end: number }
      const nodeId = scope.node(request).id
      const stop = Math.min(end, start + leavesPerPageMax, await context.logSize(nodeId, end))
      const leaves = await leafRange(db, nodeId, start, stop)
      return { start, leaves: leaves.map((leaf) => toBase64(leaf)) }
    },
  )

  app.get(
    '/v1/log/leaf-hashes',
    {
      schema: {
        tags,
        summary: `The RFC 9162 hashes of leaves [start, end), at most ${leavesPerPageMax}: binary (32 bytes each) or base64`,
        params: scope.params({}),
        querystring: Type.Object({ start: Index, end: Index }, { additionalProperties: false }),
      },
    },
    async (request, reply) => {
      const { start, end } = request.query as { start: number; end: number }
      const nodeId = scope.node(request).id
      const stop = Math.min(end, start + leavesPerPageMax, await context.logSize(nodeId, end))
      const hashes = await leafHashRange(db, nodeId, start, stop)
      return binaryOrJson(
        request,
        reply,
        () => hashes,
        () => ({
          start,
          hashes: Array.from({ length: hashes.length / hashSize }, (_, i) =>
            toBase64(hashes.subarray(i * hashSize, (i + 1) * hashSize)),
          ),
        }),
      )
    },
  )

  app.get(
    '/v1/log/proofs/inclusion',
    {
      schema: {
        tags,
        summary: 'RFC 9162 inclusion proof of leaf `index` in the tree of `size`',
        params: scope.params({}),
        querystring: Type.Object({ index: Index, size: Index }, { additionalProperties: false }),
        response: { 200: ProofResponse },
      },
    },
    async (request) => {
      const { index, size } = request.query as { index: number; size: number }
      const nodeId = scope.node(request).id
      const current = await context.logSize(nodeId, size)
      if (size > current) throw outOfRange(size, current)
      const proof = await inclusionProof(index, size, reader(nodeId))
      return { index, size, proof: proof.map(toBase64) }
    },
  )

  app.get(
    '/v1/log/proofs/consistency',
    {
      schema: {
        tags,
        summary: 'RFC 9162 consistency proof between tree sizes `from` and `to`',
        params: scope.params({}),
        querystring: Type.Object({ from: Index, to: Index }, { additionalProperties: false }),
        response: { 200: ProofResponse },
      },
    },
    async (request) => {
      const { from, to } = request.query as { from: number; to: number }
      const nodeId = scope.node(request).id
      const current = await context.logSize(nodeId, to)
      if (to > current) throw outOfRange(to, current)
      const proof = await consistencyProof(from, to, reader(nodeId))
      return { from, to, proof: proof.map(toBase64) }
    },
  )

  app.get(
    '/v1/log/recipients/:kid',
    {
      schema: {
        tags,
        summary: 'Leaves a key id can open (sealed leaves name their recipients), ascending, paged',
        params: scope.params({ kid: Type.String({ minLength: 1, maxLength: 128 }) }),
        querystring: Type.Object(
          {
            after: Type.Optional(Index),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: recipientLeavesPerPageMax })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request) => {
      const { kid } = request.params as { kid: string }
      const { after, limit = recipientLeavesPerPageDefault } = request.query as {
        after?: number
        limit?: number
      }
      const leaves = await recipientLeaves(db, scope.node(request).id, kid, after ?? -1, limit)
      return { leaves, next: leaves.length === limit ? leaves.at(-1)! : null }
    },
  )

  app.get(
    '/v1/blocks/:height',
    {
      schema: {
        tags,
        summary: 'A block: signed header and its leaves',
        params: scope.params({ height: Index }),
      },
    },
    async (request, reply) => {
      const { height } = request.params as { height: number }
      const block = await blockAt(db, scope.node(request).id, height)
      if (block === null) throw new VmError('block_not_found', `no block ${height}`, { status: 404 })
      return binaryOrJson(
        request,
        reply,
        () => encodePagedBlock(block, block.pages),
        () =>
          blockFromRaw({
            ...block,
            leaves: block.pages.flatMap((page) => decodeLeafPage(page, leavesPerStoredPageMax)),
          }),
      )
    },
  )

  app.get(
    '/v1/blocks',
    { schema: { tags, summary: 'The newest block header', params: scope.params({}) } },
    async (request) => {
      const head = await storedHead(db, scope.node(request).id)
      if (head === null) throw new VmError('log_empty', 'no blocks yet', { status: 404 })
      return { header: head.header, signature: head.signature }
    },
  )
}
