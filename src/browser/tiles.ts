import { promisify } from 'node:util'
import { gzip } from 'node:zlib'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { concatBytes } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { latestCheckpoint, leafRange, treeNodeRange } from './browser-store.js'
import type { BrowserContext, NodeScope } from './context.js'

/**
 * The log as C2SP tlog-tiles (https://c2sp.org/tlog-tiles): static, cacheable resources from which a
 * client computes any proof itself. A level-L tile holds up to 256 consecutive hashes of tree level 8·L;
 * since every perfect-subtree hash is stored, a tile is one range read.
 */
export const tileHeight = 8
export const tileWidth = 2 ** tileHeight
/** tlog-tiles levels are 0 to 63. */
export const tileLevelMax = 63
/** Entries of a bundle carry a big-endian uint16 length, so no entry can be longer. */
export const bundleEntryBytesMax = 0xffff
/** Full tiles never change. */
export const immutableCacheControl = 'public, max-age=31536000, immutable'

const gzipAsync = promisify(gzip)

/** N as zero-padded 3-digit path elements, all but the last prefixed with x: 1234067 → x001/x234/067. */
export function tileIndexPath(index: number): string {
  const groups: string[] = []
  let rest = index
  do {
    groups.unshift(String(rest % 1000).padStart(3, '0'))
    rest = Math.floor(rest / 1000)
  } while (rest > 0)
  return groups.map((group, i) => (i < groups.length - 1 ? `x${group}` : group)).join('/')
}

/** The path of a tile (`level` a number) or entry bundle (`'entries'`) below the log's prefix. */
export function tilePath(level: number | 'entries', index: number, width: number = tileWidth): string {
  return `tile/${level}/${tileIndexPath(index)}${width < tileWidth ? `.p/${width}` : ''}`
}

/** Parses `<N>[.p/<W>]`; null for anything tilePath would not write, so every tile has one URL. */
export function parseTileIndex(text: string): { index: number; width: number } | null {
  const match = /^((?:x\d{3}\/){0,5}\d{3})(?:\.p\/([1-9]\d{0,2}))?$/.exec(text)
  if (match === null) return null
  const [, digits, partial] = match as unknown as [string, string, string | undefined]
  const index = Number(digits.replaceAll('x', '').replaceAll('/', ''))
  const width = partial === undefined ? tileWidth : Number(partial)
  // Partial widths are 1 to 255; a tile's start index must stay a safe integer.
  if (partial !== undefined && width >= tileWidth) return null
  if (index > Math.floor(Number.MAX_SAFE_INTEGER / tileWidth)) return null
  return tileIndexPath(index) === digits ? { index, width } : null
}

function parseLevel(text: string): number | null {
  if (!/^(0|[1-9]\d?)$/.test(text)) return null
  const level = Number(text)
  return level <= tileLevelMax ? level : null
}

function tileNotFound(path: string): VmError {
  return new VmError('tile_not_found', `no tile ${path} in this log`, { status: 404 })
}

export function tileRoutes(app: FastifyInstance, context: BrowserContext, scope: NodeScope): void {
  const { db } = context
  const tags = ['tiles']

  app.get(
    '/checkpoint',
    { schema: { tags, summary: 'The newest checkpoint (tlog-tiles)', params: scope.params({}) } },
    async (request, reply) => {
      const note = await latestCheckpoint(db, scope.node(request).id)
      if (note === null) throw new VmError('log_empty', 'the log has no checkpoint yet', { status: 404 })
      // Mutable: tlog-tiles asks that it is not cached beyond a few seconds.
      return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-cache').send(note)
    },
  )

  app.get(
    '/tile/entries/*',
    {
      schema: {
        tags,
        summary: 'An entry bundle: big-endian uint16 length-prefixed leaves',
        params: scope.params({ '*': Type.String() }),
      },
    },
    async (request, reply) => {
      const rest = (request.params as { '*': string })['*']
      const parsed = parseTileIndex(rest)
      if (parsed === null) throw tileNotFound(`entries/${rest}`)
      const start = parsed.index * tileWidth
      const wanted = start + parsed.width
      if (wanted > (await context.logSize(scope.node(request).id, wanted)))
        throw tileNotFound(`entries/${rest}`)
      const leaves = await leafRange(db, scope.node(request).id, start, start + parsed.width)
      return sendTile(request, reply, encodeBundle(leaves, start), parsed.width, true)
    },
  )

  app.get(
    '/tile/:level/*',
    {
      schema: {
        tags,
        summary: 'A Merkle tile: up to 256 hashes of tree level 8·L',
        params: scope.params({ level: Type.String(), '*': Type.String() }),
      },
    },
    async (request, reply) => {
      const params = request.params as { level: string; '*': string }
      const level = parseLevel(params.level)
      const parsed = parseTileIndex(params['*'])
      const path = `${params.level}/${params['*']}`
      if (level === null || parsed === null) throw tileNotFound(path)
      // Hashes of level 8·L that exist: one per complete subtree of 256^L leaves.
      const start = parsed.index * tileWidth
      const wanted = (start + parsed.width) * tileWidth ** level
      const available = Math.floor(
        (await context.logSize(scope.node(request).id, wanted)) / tileWidth ** level,
      )
      if (start + parsed.width > available) throw tileNotFound(path)
      const hashes = await treeNodeRange(
        db,
        scope.node(request).id,
        tileHeight * level,
        start,
        start + parsed.width,
      )
      return sendTile(request, reply, concatBytes(...hashes), parsed.width, false)
    },
  )
}

/** Each leaf as a big-endian uint16 length and its bytes. */
function encodeBundle(leaves: readonly Uint8Array[], start: number): Uint8Array {
  const parts: Uint8Array[] = []
  leaves.forEach((leaf, i) => {
    if (leaf.length > bundleEntryBytesMax) {
      throw new VmError(
        'bundle_entry_too_large',
        `leaf ${start + i} has ${leaf.length} bytes, more than an entry bundle can carry; read /v1/log/leaves`,
        { status: 404, detail: { leaf: start + i, bytes: leaf.length, bytesMax: bundleEntryBytesMax } },
      )
    }
    parts.push(new Uint8Array([leaf.length >> 8, leaf.length & 0xff]), leaf)
  })
  return concatBytes(...parts)
}

async function sendTile(
  request: FastifyRequest,
  reply: FastifyReply,
  body: Uint8Array,
  width: number,
  compressible: boolean,
): Promise<FastifyReply> {
  reply.type('application/octet-stream')
  if (width === tileWidth) reply.header('cache-control', immutableCacheControl)
  // Entry bundles compress well (tlog-tiles asks for it); hashes do not.
  if (compressible) {
    reply.header('vary', 'accept-encoding')
    if (/\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''))) {
      return reply.header('content-encoding', 'gzip').send(await gzipAsync(body))
    }
  }
  return reply.send(Buffer.from(body.buffer, body.byteOffset, body.length))
}
