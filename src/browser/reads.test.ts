import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { leavesPerPageMax } from '../node/api/routes/log.js'
import { type Block, blockFromRaw } from '../protocol/block.js'
import { openCheckpoint } from '../protocol/checkpoint.js'
import { concatBytes, fromBase64, toBase64 } from '../protocol/encoding.js'
import { binaryMediaType, decodeLeafPage, decodeRawBlock } from '../protocol/leaf-page.js'
import { leafHash, verifyConsistency, verifyInclusion } from '../protocol/merkle.js'
import {
  browserApp,
  databaseTargets,
  makeChain,
  pushBlock,
  sqliteTarget,
  storedState,
  syntheticNode,
} from './browser-fixtures.js'
import { leafPages, leavesPerStoredPageMax } from './browser-store.js'
import type { BrowserDatabase } from './storage.js'

const counts = [1, 2, 5, 13, 7]

for (const target of await databaseTargets()) {
  describe(`reading the log (${target.name})`, { skip: target.skip }, () => {
    let database: BrowserDatabase
    let app: FastifyInstance
    let blocks: Block[]

    before(async () => {
      database = await target.open()
      const node = syntheticNode()
      ;({ app } = await browserApp(database, [node]))
      blocks = makeChain(node, counts).blocks
      for (const block of blocks) assert.equal((await pushBlock(app, block)).status, 201)
    })
    after(async () => {
      await app?.close()
      await database?.close()
      await target.dispose()
    })

    const get = async (url: string) => {
      const response = await app.inject(url)
      return { status: response.statusCode, body: response.json() as Record<string, unknown> }
    }
    const proofOf = (body: Record<string, unknown>) => (body['proof'] as string[]).map(fromBase64)
    const rootAt = (size: number) => fromBase64(blocks.find((b) => b.header.logSize === size)!.header.logRoot)

    test("the checkpoint is the node's signed note, verifiable with the served verifier key", async () => {
      const { body: info } = await get('/v1/node')
      const note = (await app.inject('/v1/log/checkpoint')).body
      const checkpoint = openCheckpoint(note, info['noteVerifierKey'] as string, info['origin'] as string)
      assert.equal(checkpoint.size, 28)
      assert.deepEqual(checkpoint.root, rootAt(28))
    })

    test('inclusion proofs verify for every leaf in every published tree size', async () => {
      for (const { header } of blocks) {
        for (let index = 0; index < header.logSize; index++) {
          const { status, body } = await get(`/v1/log/proofs/inclusion?index=${index}&size=${header.logSize}`)
          assert.equal(status, 200)
          const leaf = fromBase64((await get(`/v1/log/leaves/${index}`)).body['leaf'] as string)
          verifyInclusion(leafHash(leaf), index, header.logSize, proofOf(body), rootAt(header.logSize))
        }
      }
    })

    test('consistency proofs verify between every pair of published tree sizes', async () => {
      for (const older of blocks) {
        for (const newer of blocks.filter((b) => b.header.logSize >= older.header.logSize)) {
          const [from, to] = [older.header.logSize, newer.header.logSize]
          const { status, body } = await get(`/v1/log/proofs/consistency?from=${from}&to=${to}`)
          assert.equal(status, 200)
          assert.deepEqual([body['from'], body['to']], [from, to])
          verifyConsistency(from, to, proofOf(body), rootAt(from), rootAt(to))
        }
      }
    })

    test('proofs past the log or for impossible sizes are refused with proof_out_of_range', async () => {
      for (const url of [
        '/v1/log/proofs/inclusion?index=0&size=29',
        '/v1/log/proofs/inclusion?index=28&size=28',
        '/v1/log/proofs/inclusion?index=0&size=0',
        '/v1/log/proofs/consistency?from=3&to=29',
        '/v1/log/proofs/consistency?from=0&to=28',
        '/v1/log/proofs/consistency?from=9&to=8',
      ]) {
        const { status, body } = await get(url)
        assert.equal(status, 400, url)
        assert.equal(body['code'], 'proof_out_of_range', url)
      }
      assert.equal((await get('/v1/log/proofs/inclusion?index=-1&size=3')).body['code'], 'invalid_request')
    })

    test('leaves are read one at a time or a bounded page at a time', async () => {
      const all = blocks.flatMap((b) => b.leaves)
      const one = await get('/v1/log/leaves/3')
      assert.equal(one.body['leaf'], all[3])
      assert.equal((await get('/v1/log/leaves/28')).body['code'], 'leaf_not_found')
      assert.deepEqual((await get('/v1/log/leaves?start=0&end=100')).body, { start: 0, leaves: all })
      assert.deepEqual((await get('/v1/log/leaves?start=5&end=9')).body, {
        start: 5,
        leaves: all.slice(5, 9),
      })
      assert.deepEqual((await get('/v1/log/leaves?start=30&end=40')).body, { start: 30, leaves: [] })
      assert.deepEqual((await get('/v1/log/leaves?start=9&end=5')).body, { start: 9, leaves: [] })
      assert.equal((await get('/v1/log/leaves?start=0')).status, 400)
    })

    test(`a page holds at most ${leavesPerPageMax} leaves`, async () => {
      const node = syntheticNode()
      const { app: big } = await browserApp(database, [node])
      const [block] = makeChain(node, [leavesPerPageMax + 10]).blocks
      assert.equal((await pushBlock(big, block)).status, 201)
      const page = (await big.inject('/v1/log/leaves?start=5&end=100000')).json() as { leaves: string[] }
      assert.equal(page.leaves.length, leavesPerPageMax)
      assert.equal(page.leaves[0], block!.leaves[5])
      await big.close()
    })

    test('leaves are stored a bounded number of leaves and bytes to a page, and read back exact', async () => {
      const node = syntheticNode()
      const { app: big } = await browserApp(database, [node])
      const kib = [30, 50, 20, 70, 1]
      const leavesOf = () => kib.map((size, i) => new Uint8Array(size * 1024).fill(i + 1))
      const [block] = makeChain(node, [kib.length], leavesOf).blocks
      assert.equal((await pushBlock(big, block)).status, 201)
      // 30 + 50 and 50 + 20 pass 64 KiB; a 70 KiB leaf is a page of its own.
      assert.equal((await storedState(database.db, node.id)).leafPages, 5)
      for (const [index, leaf] of block!.leaves.entries())
        assert.equal((await big.inject(`/v1/log/leaves/${index}`)).json().leaf, leaf)
      const answer = await big.inject({ url: '/v1/blocks/0', headers: { accept: binaryMediaType } })
      assert.deepEqual(blockFromRaw(decodeRawBlock(answer.rawPayload)), block)
      await big.close()
    })

    test('blocks by height, and 404 past the head', async () => {
      assert.deepEqual((await get('/v1/blocks/2')).body, blocks[2])
      assert.equal((await get('/v1/blocks/5')).body['code'], 'block_not_found')
    })

    const binary = async (url: string) => {
      const response = await app.inject({ url, headers: { accept: binaryMediaType } })
      assert.equal(response.statusCode, 200, url)
      assert.equal(response.headers['content-type'], binaryMediaType)
      return new Uint8Array(response.rawPayload)
    }

    test('a block in the binary form is the JSON block, its leaves as bytes', async () => {
      for (const [height, block] of blocks.entries()) {
        assert.deepEqual(blockFromRaw(decodeRawBlock(await binary(`/v1/blocks/${height}`))), block)
      }
      const missing = await app.inject({ url: '/v1/blocks/5', headers: { accept: binaryMediaType } })
      assert.equal(missing.statusCode, 404)
      assert.equal(missing.json().code, 'block_not_found')
    })

    test('leaf hashes, in JSON or binary, are the hashes of the leaves, a bounded page at a time', async () => {
      const hashes = blocks.flatMap((b) => b.leaves).map((leaf) => leafHash(fromBase64(leaf)))
      const page = (await get('/v1/log/leaf-hashes?start=5&end=9')).body
      assert.deepEqual(page, { start: 5, hashes: hashes.slice(5, 9).map((hash) => toBase64(hash)) })
      assert.deepEqual(await binary('/v1/log/leaf-hashes?start=0&end=100'), concatBytes(...hashes))
      assert.deepEqual(await binary('/v1/log/leaf-hashes?start=30&end=40'), new Uint8Array(0))
      assert.equal((await get('/v1/log/leaf-hashes?start=0')).body['code'], 'invalid_request')
    })
  })
}

describe('the browser as a service', () => {
  let database: BrowserDatabase
  let app: FastifyInstance
  const target = sqliteTarget()

  before(async () => {
    database = await target.open()
    ;({ app } = await browserApp(database, [syntheticNode()]))
  })
  after(async () => {
    await app.close()
    await database.close()
    await target.dispose()
  })

  test('an empty log answers log_empty, health and readiness answer', async () => {
    assert.equal((await app.inject('/v1/log/checkpoint')).json().code, 'log_empty')
    assert.equal((await app.inject('/v1/blocks')).json().code, 'log_empty')
    assert.deepEqual((await app.inject('/healthz')).json(), { status: 'ok' })
    assert.deepEqual((await app.inject('/readyz')).json(), { status: 'ready' })
    assert.equal((await app.inject('/nowhere')).json().code, 'not_found')
  })

  test('OpenAPI lists the routes, per-node ones with their nodeId parameter', async () => {
    const spec = (await app.inject('/openapi.json')).json() as {
      paths: Record<string, Record<string, { parameters?: { name: string }[] }>>
    }
    for (const path of [
      '/v1/blocks',
      '/v1/log/leaves',
      '/v1/alarms',
      '/v1/nodes',
      '/v1/events',
      '/checkpoint',
    ]) {
      assert.ok(spec.paths[path], path)
    }
    const prefixed = spec.paths['/n/{nodeId}/v1/log/checkpoint']?.['get']
    assert.ok(prefixed?.parameters?.some((p) => p.name === 'nodeId'))
  })

  test('the page lists the followed nodes, with inline code allowed by nonce only', async () => {
    const page = await app.inject('/')
    assert.equal(page.statusCode, 200)
    assert.match(String(page.headers['content-type']), /^text\/html/)
    assert.match(page.body, /new EventSource\('\/v1\/events'\)/)
    const nonce = /script-src 'nonce-([^']+)'/.exec(String(page.headers['content-security-policy']))![1]
    assert.ok(page.body.includes(`<script nonce="${nonce}">`))
  })
})

test(`leafPages cuts a block's leaves into pages of at most ${leavesPerStoredPageMax} leaves`, () => {
  const leaves = Array.from({ length: 2 * leavesPerStoredPageMax + 8 }, (_, i) => new Uint8Array([i % 256]))
  const pages = leafPages(1000, leaves, leaves.map(leafHash))
  assert.deepEqual(
    pages.map((page) => [page.firstLeaf, page.leafCount]),
    [
      [1000, leavesPerStoredPageMax],
      [1000 + leavesPerStoredPageMax, leavesPerStoredPageMax],
      [1000 + 2 * leavesPerStoredPageMax, 8],
    ],
  )
  assert.deepEqual(
    pages.flatMap((page) => decodeLeafPage(page.leaves, leavesPerStoredPageMax)),
    leaves,
  )
  assert.deepEqual(
    pages.map((page) => page.leafHashes),
    pages.map((page) => concatBytes(...decodeLeafPage(page.leaves, leavesPerStoredPageMax).map(leafHash))),
  )
  assert.deepEqual(leafPages(0, [], []), [])
})
