import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { gunzipSync } from 'node:zlib'
import type { FastifyInstance } from 'fastify'
import { openCheckpoint } from '../protocol/checkpoint.js'
import { bytesEqual } from '../protocol/encoding.js'
import {
  assembleProof,
  frontierNodeIds,
  inclusionProofPlan,
  leafHash,
  nodeHash,
  verifyInclusion,
} from '../protocol/merkle.js'
import { browserApp, databaseTargets, makeChain, pushBlock, syntheticNode } from './browser-fixtures.js'
import type { BrowserDatabase } from './storage.js'
import {
  immutableCacheControl,
  parseTileIndex,
  tileHeight,
  tileIndexPath,
  tilePath,
  tileWidth,
} from './tiles.js'

describe('tile paths', () => {
  test('N is written in 3-digit elements, all but the last prefixed with x', () => {
    assert.equal(tileIndexPath(0), '000')
    assert.equal(tileIndexPath(67), '067')
    assert.equal(tileIndexPath(1000), 'x001/000')
    assert.equal(tileIndexPath(1234067), 'x001/x234/067')
    assert.equal(tilePath(1, 1234067, 12), 'tile/1/x001/x234/067.p/12')
    assert.equal(tilePath('entries', 5), 'tile/entries/005')
  })

  test('parsing accepts exactly what tilePath writes', () => {
    assert.deepEqual(parseTileIndex('x001/x234/067'), { index: 1234067, width: 256 })
    assert.deepEqual(parseTileIndex('067.p/255'), { index: 67, width: 255 })
    for (const bad of ['67', 'x000/067', '067.p/0', '067.p/256', '067.p/012', '067/', 'x1/067', '-01']) {
      assert.equal(parseTileIndex(bad), null, bad)
    }
  })
})

/** The example of the tlog-tiles specification: a tree of 70,000 leaves. */
const leafCounts = [1, 255, 1_000, 30_000, 38_744]
const size = 70_000

/** A tlog-tiles client that knows only the checkpoint's size and fetches tiles (memoized). */
class TileClient {
  readonly #tiles = new Map<string, Uint8Array>()
  readonly fetched: string[] = []
  readonly #app: FastifyInstance
  readonly #prefix: string

  constructor(app: FastifyInstance, prefix: string) {
    this.#app = app
    this.#prefix = prefix
  }

  async tile(path: string): Promise<Uint8Array> {
    let bytes = this.#tiles.get(path)
    if (bytes === undefined) {
      const response = await this.#app.inject(`${this.#prefix}/${path}`)
      assert.equal(response.statusCode, 200, `${path}: ${response.body}`)
      assert.equal(response.headers['content-type'], 'application/octet-stream')
      bytes = new Uint8Array(response.rawPayload)
      this.#tiles.set(path, bytes)
      this.fetched.push(path)
    }
    return bytes
  }

  /** Hashes [start, end) of tree level 8·L, from the full or partial tiles the tree of `size` has. */
  async hashes(tileLevel: number, start: number, end: number): Promise<Uint8Array[]> {
    const available = Math.floor(size / tileWidth ** tileLevel)
    const out: Uint8Array[] = []
    for (let index = start; index < end; index++) {
      const tile = Math.floor(index / tileWidth)
      const width = Math.min(tileWidth, available - tile * tileWidth)
      const bytes = await this.tile(tilePath(tileLevel, tile, width))
      const at = (index % tileWidth) * 32
      out.push(bytes.subarray(at, at + 32))
    }
    return out
  }

  /** Any perfect subtree: its level-8·L hashes from one tile level, hashed up. */
  async subtree(level: number, index: number): Promise<Uint8Array> {
    const tileLevel = Math.floor(level / tileHeight)
    const span = 2 ** (level - tileLevel * tileHeight)
    let hashes = await this.hashes(tileLevel, index * span, (index + 1) * span)
    while (hashes.length > 1) {
      hashes = Array.from({ length: hashes.length / 2 }, (_, i) =>
        nodeHash(hashes[2 * i]!, hashes[2 * i + 1]!),
      )
    }
    return hashes[0]!
  }

  async root(): Promise<Uint8Array> {
    const frontier = await Promise.all(frontierNodeIds(size).map((id) => this.subtree(id.level, id.index)))
    let root = frontier.at(-1)!
    for (let i = frontier.length - 2; i >= 0; i--) root = nodeHash(frontier[i]!, root)
    return root
  }

  /** The leaves of one entry bundle, decoded from their uint16 length prefixes. */
  async entries(index: number, width: number): Promise<Uint8Array[]> {
    const bytes = await this.tile(tilePath('entries', index, width))
    const entries: Uint8Array[] = []
    for (let at = 0; at < bytes.length; ) {
      const length = (bytes[at]! << 8) | bytes[at + 1]!
      entries.push(bytes.subarray(at + 2, at + 2 + length))
      at += 2 + length
    }
    return entries
  }
}

for (const target of await databaseTargets()) {
  describe(`tlog-tiles (${target.name})`, { skip: target.skip }, () => {
    let database: BrowserDatabase
    let app: FastifyInstance
    let nodeId: string
    let checkpointRoot: Uint8Array

    before(async () => {
      database = await target.open()
      const node = syntheticNode()
      nodeId = node.id
      ;({ app } = await browserApp(database, [node]))
      for (const block of makeChain(node, leafCounts).blocks)
        assert.equal((await pushBlock(app, block)).status, 201)
      const info = (await app.inject('/v1/node')).json() as { noteVerifierKey: string }
      const note = (await app.inject('/checkpoint')).body
      const checkpoint = openCheckpoint(note, info.noteVerifierKey)
      assert.equal(checkpoint.size, size)
      checkpointRoot = checkpoint.root
    })
    after(async () => {
      await app?.close()
      await database?.close()
      await target.dispose()
    })

    test('the tiles of the specification example exist, and no others', async () => {
      const status = async (path: string) => (await app.inject(`/${path}`)).statusCode
      for (const path of [
        'tile/0/000',
        'tile/0/272',
        'tile/0/273.p/112',
        'tile/1/000',
        'tile/1/001.p/17',
        'tile/2/000.p/1',
      ]) {
        assert.equal(await status(path), 200, path)
      }
      // Partial tiles of earlier tree sizes are served too (their hashes never change).
      assert.equal(await status('tile/0/273.p/5'), 200)
      assert.equal(await status('tile/entries/273.p/112'), 200)
      for (const path of [
        'tile/0/273',
        'tile/0/273.p/113',
        'tile/0/274.p/1',
        'tile/1/001',
        'tile/2/000',
        'tile/3/000.p/1',
        'tile/64/000.p/1',
        'tile/01/000',
        'tile/0/x000/001',
        'tile/entries/274.p/1',
      ]) {
        const response = await app.inject(`/${path}`)
        assert.equal(response.statusCode, 404, path)
        assert.equal(response.json().code, 'tile_not_found', path)
      }
    })

    test('full tiles are immutable; partial tiles and the checkpoint are not cached as such', async () => {
      assert.equal((await app.inject('/tile/0/005')).headers['cache-control'], immutableCacheControl)
      assert.equal((await app.inject('/tile/entries/005')).headers['cache-control'], immutableCacheControl)
      assert.equal((await app.inject('/tile/0/273.p/112')).headers['cache-control'], undefined)
      assert.equal((await app.inject('/checkpoint')).headers['cache-control'], 'no-cache')
      assert.match(
        String((await app.inject('/checkpoint')).headers['content-type']),
        /^text\/plain; charset=utf-8/,
      )
      assert.equal((await app.inject('/tile/0/005')).rawPayload.length, 8192)
    })

    test("the root rebuilt from tiles alone is the checkpoint's", async () => {
      const client = new TileClient(app, '')
      assert.ok(bytesEqual(await client.root(), checkpointRoot))
    })

    test('inclusion proofs assembled from tiles verify against the checkpoint', async () => {
      const client = new TileClient(app, `/n/${nodeId}`)
      for (const index of [0, 1, 255, 256, 4_095, 65_535, 65_536, 69_871, 69_999]) {
        const plan = inclusionProofPlan(index, size)
        const hashes = await Promise.all(plan.ids.map((id) => client.subtree(id.level, id.index)))
        const bundle = Math.floor(index / tileWidth)
        const leaves = await client.entries(bundle, Math.min(tileWidth, size - bundle * tileWidth))
        const leaf = leaves[index % tileWidth]!
        verifyInclusion(leafHash(leaf), index, size, assembleProof(plan, hashes), checkpointRoot)
      }
    })

    test('entry bundles hash to their level-0 tile and compress on request', async () => {
      const client = new TileClient(app, '')
      const entries = await client.entries(3, tileWidth)
      const hashes = await client.hashes(0, 3 * tileWidth, 4 * tileWidth)
      assert.equal(entries.length, tileWidth)
      entries.forEach((entry, i) => {
        assert.ok(bytesEqual(leafHash(entry), hashes[i]!))
      })
      const gzipped = await app.inject({ url: '/tile/entries/003', headers: { 'accept-encoding': 'gzip' } })
      assert.equal(gzipped.headers['content-encoding'], 'gzip')
      assert.deepEqual(new Uint8Array(gunzipSync(gzipped.rawPayload)), await client.tile('tile/entries/003'))
    })
  })
}
