import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { binaryOrJson } from '../../../http/server.js'
import { blockFromRaw } from '../../../protocol/block.js'
import { concatBytes, toBase64 } from '../../../protocol/encoding.js'
import { VmError } from '../../../protocol/errors.js'
import { encodeRawBlock } from '../../../protocol/leaf-page.js'
import { consistencyProof, inclusionProof, leafHash } from '../../../protocol/merkle.js'
import { blockAt, latestBlock, latestCheckpoint, leafRange, readNodes } from '../../chain/chain-store.js'
import type { ApiContext } from '../context.js'

const Index = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
/** Leaves per bulk read: verifiers download whole logs a page at a time (the block browser serves the same). */
export const leavesPerPageMax = 4096
const ProofResponse = Type.Object(
  { proof: Type.Array(Type.String({ description: 'base64 SHA-256' })) },
  { additionalProperties: true },
)

/** The public log: anyone may read it, no signature needed (seed 000 F10). */
export function logRoutes(app: FastifyInstance, context: ApiContext): void {
  const { db } = context

  async function logSize(): Promise<number> {
    return (await latestBlock(db))?.header.logSize ?? 0
  }

  app.get(
    '/v1/node',
    { schema: { tags: ['log'], summary: 'This node: id, log origin and note verifier key' } },
    async () => ({
      nodeId: context.identity.nodeId,
      origin: context.identity.origin,
      noteVerifierKey: context.noteVerifierKey,
      signingKey: context.identity.signingJwk,
      /** X25519: the sender key (`epk`) of every sealed leaf, and the node's archive recipient. */
      encryptionKey: context.identity.encryptionJwk,
    }),
  )

  app.get(
    '/v1/log/checkpoint',
    { schema: { tags: ['log'], summary: 'The newest checkpoint as a C2SP signed note (text/plain)' } },
    async (_request, reply) => {
      const note = await latestCheckpoint(db)
      if (note === null) throw new VmError('log_empty', 'the log has no checkpoint yet', { status: 404 })
      return reply.type('text/plain; charset=utf-8').send(note)
    },
  )

  app.get(
    '/v1/log/leaves/:index',
    {
      schema: {
        tags: ['log'],
        summary: 'The exact bytes of one leaf (base64)',
        params: Type.Object({ index: Index }),
      },
    },
    async (request) => {
      const { index } = request.params as { index: number }
      const [leaf] = await leafRange(db, index, index + 1)
      if (leaf === undefined) throw new VmError('leaf_not_found', `no leaf ${index}`, { status: 404 })
      return { index, leaf: toBase64(leaf), leafHash: toBase64(leafHash(leaf)) }
    },
  )

  app.get(
    '/v1/log/leaves',
    {
      schema: {
        tags: ['log'],
        summary: `The exact bytes (base64) of leaves [start, end), at most ${leavesPerPageMax} and none past the log`,
        querystring: Type.Object({ start: Index, end: Index }, { additionalProperties: false }),
      },
    },
    async (request) => {
      const { start, end } = request.query as { start: number; end: number }
      const stop = Math.min(end, start + leavesPerPageMax, await logSize())
      const leaves = await leafRange(db, start, stop)
      return { start, leaves: leaves.map((leaf) => toBase64(leaf)) }
    },
  )

  app.get(
    '/v1/log/leaf-hashes',
    {
      schema: {
        tags: ['log'],
        summary: `The RFC 9162 hashes of leaves [start, end) as the node holds them, at most ${leavesPerPageMax}: binary (32 bytes each) or base64`,
        querystring: Type.Object({ start: Index, end: Index }, { additionalProperties: false }),
      },
    },
    async (request, reply) => {
      const { start, end } = request.query as { start: number; end: number }
      const stop = Math.min(end, start + leavesPerPageMax, await logSize())
      const hashes = (await leafRange(db, start, stop)).map(leafHash)
      return binaryOrJson(
        request,
        reply,
        () => concatBytes(...hashes),
        () => ({ start, hashes: hashes.map((hash) => toBase64(hash)) }),
      )
    },
  )

  app.get(
    '/v1/log/proofs/inclusion',
    {
      schema: {
        tags: ['log'],
        summary: 'RFC 9162 inclusion proof of leaf `index` in the tree of `size`',
        querystring: Type.Object({ index: Index, size: Index }, { additionalProperties: false }),
        response: { 200: ProofResponse },
      },
    },
    async (request) => {
      const { index, size } = request.query as { index: number; size: number }
      const current = await logSize()
      if (size > current)
        throw new VmError('proof_out_of_range', `size ${size} exceeds the log size ${current}`, {
          status: 400,
        })
      const proof = await inclusionProof(index, size, (ids) => readNodes(db, ids))
      return { index, size, proof: proof.map(toBase64) }
    },
  )

  app.get(
    '/v1/log/proofs/consistency',
    {
      schema: {
        tags: ['log'],
        summary: 'RFC 9162 consistency proof between tree sizes `from` and `to`',
        querystring: Type.Object({ from: Index, to: Index }, { additionalProperties: false }),
        response: { 200: ProofResponse },
      },
    },
    async (request) => {
      const { from, to } = request.query as { from: number; to: number }
      const current = await logSize()
      if (to > current)
        throw new VmError('proof_out_of_range', `size ${to} exceeds the log size ${current}`, { status: 400 })
      const proof = await consistencyProof(from, to, (ids) => readNodes(db, ids))
      return { from, to, proof: proof.map(toBase64) }
    },
  )

  app.get(
    '/v1/blocks/:height',
    {
      schema: {
        tags: ['log'],
        summary: 'A block: signed header and its leaves',
        params: Type.Object({ height: Index }),
      },
    },
    async (request, reply) => {
      const { height } = request.params as { height: number }
      const block = await blockAt(db, height)
      if (block === null) throw new VmError('block_not_found', `no block ${height}`, { status: 404 })
      return binaryOrJson(
        request,
        reply,
        () => encodeRawBlock(block),
        () => blockFromRaw(block),
      )
    },
  )

  app.get('/v1/blocks', { schema: { tags: ['log'], summary: 'The newest block header' } }, async () => {
    const head = await latestBlock(db)
    if (head === null) throw new VmError('log_empty', 'no blocks yet', { status: 404 })
    return head
  })
}
