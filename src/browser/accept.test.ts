import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { type Block, headerHash } from '../protocol/block.js'
import { toBase64, utf8 } from '../protocol/encoding.js'
import { generateSigningKey } from '../protocol/keys.js'
import {
  browserApp,
  type ChainState,
  databaseTargets,
  makeBlock,
  makeChain,
  newRecipient,
  nextState,
  plainLeaves,
  pushBlock,
  type SyntheticNode,
  sealedLeaf,
  storedState,
  syntheticNode,
} from './browser-fixtures.js'
import { blockBodyBytesMax } from './routes.js'
import type { BrowserDatabase } from './storage.js'

const stranger = generateSigningKey()

for (const target of await databaseTargets()) {
  describe(`accepting blocks (${target.name})`, { skip: target.skip }, () => {
    let database: BrowserDatabase

    before(async () => {
      database = await target.open()
    })
    after(async () => {
      await database?.close()
      await target.dispose()
    })

    /** A browser following a fresh node (tables are keyed by node, so tests share the database). */
    async function freshBrowser(more: SyntheticNode[] = []) {
      const node = syntheticNode()
      const { app } = await browserApp(database, [node, ...more])
      return { node, app }
    }

    async function pushAll(app: FastifyInstance, blocks: readonly Block[]) {
      for (const block of blocks) {
        const { status, body } = await pushBlock(app, block)
        assert.equal(status, 201, JSON.stringify(body))
      }
    }

    test('a valid chain is accepted block by block and served exactly as pushed', async () => {
      const { node, app } = await freshBrowser()
      const { blocks } = makeChain(node, [1, 3, 2, 5])
      for (const block of blocks) {
        const { status, body } = await pushBlock(app, block)
        assert.equal(status, 201)
        assert.deepEqual(body, { node: node.id, height: block.header.height, logSize: block.header.logSize })
      }
      const last = blocks.at(-1)!
      const head = await app.inject('/v1/blocks')
      assert.deepEqual(head.json(), { header: last.header, signature: last.signature })
      const checkpoint = await app.inject('/v1/log/checkpoint')
      assert.equal(checkpoint.body, last.checkpoint)
      assert.match(String(checkpoint.headers['content-type']), /^text\/plain/)
      for (const block of blocks) {
        assert.deepEqual((await app.inject(`/v1/blocks/${block.header.height}`)).json(), block)
      }
      const state = await storedState(database.db, node.id)
      assert.equal(state.blocks, 4)
      assert.equal(state.leaves, 11)
      // Every perfect subtree of 11 leaves: the 11 leaves' hashes, then 5 + 2 + 1 above them.
      assert.equal(state.treeNodes, 19)
      const metrics = (await app.inject('/metrics')).body
      assert.match(metrics, new RegExp(`vmoney_browser_blocks_accepted_total\\{node="${node.id}"\\} 4`))
      assert.match(metrics, new RegExp(`vmoney_browser_log_size\\{node="${node.id}"\\} 11`))
      await app.close()
    })

    test('opening the database again migrates nothing and keeps what it holds', async () => {
      const { node, app } = await freshBrowser()
      await pushAll(app, makeChain(node, [2, 1]).blocks)
      const again = await target.open()
      try {
        assert.deepEqual(await storedState(again.db, node.id), await storedState(database.db, node.id))
        assert.equal((await storedState(again.db, node.id)).blocks, 2)
      } finally {
        await again.close()
        await app.close()
      }
    })

    describe('refusals leave everything stored unchanged', () => {
      let node: SyntheticNode
      let app: FastifyInstance
      let previous: ChainState
      let unchanged: Awaited<ReturnType<typeof storedState>>

      before(async () => {
        ;({ node, app } = await freshBrowser())
        const { blocks, states } = makeChain(node, [2, 3])
        await pushAll(app, blocks)
        previous = states.at(-1)!
        unchanged = await storedState(database.db, node.id)
      })
      after(async () => app.close())

      async function refused(body: unknown, status: number, code: string) {
        const answer = await pushBlock(app, body)
        assert.equal(answer.status, status, JSON.stringify(answer.body))
        assert.equal(answer.body['code'], code)
        assert.match(String(answer.response.headers['content-type']), /^application\/problem\+json/)
        assert.deepEqual(await storedState(database.db, node.id), unchanged)
        return answer.body
      }

      const next = (options: Parameters<typeof makeBlock>[3] = {}, leaves = plainLeaves(2, 2)) =>
        makeBlock(node, previous, leaves, options)

      test('a signature by another key', async () => {
        await refused(next({ signer: stranger.secretKey }), 400, 'block_signature_invalid')
      })

      test('a header changed after signing', async () => {
        const block = next()
        await refused(
          { ...block, header: { ...block.header, time: '2030-01-01T00:00:00.000Z' } },
          400,
          'block_signature_invalid',
        )
      })

      test('a height beyond head + 1 (a gap) answers what is expected', async () => {
        const skipped = next()
        const beyond = makeBlock(node, nextState(previous, skipped), plainLeaves(3, 1))
        const problem = await refused(beyond, 409, 'block_height_gap')
        assert.equal(problem['expected'], 2)
      })

      test('a height that is not a count', async () => {
        const block = next()
        await refused({ ...block, header: { ...block.header, height: -1 } }, 400, 'block_malformed')
        await refused({ ...block, header: { ...block.header, height: 2.5 } }, 400, 'block_malformed')
      })

      test('a wrong previous header hash', async () => {
        await refused(
          next({ changes: { previous: toBase64(randomBytes(32)) } }),
          400,
          'block_previous_mismatch',
        )
      })

      test('a block dated before the previous one', async () => {
        await refused(next({ changes: { time: '2025-03-01T08:00:00.000Z' } }), 400, 'block_time_invalid')
      })

      test('a wrong first leaf', async () => {
        await refused(next({ changes: { firstLeaf: 4 } }), 400, 'block_leaves_mismatch')
      })

      test('an extra leaf, a missing leaf, no leaves', async () => {
        const block = next()
        await refused(
          { ...block, leaves: [...block.leaves, toBase64(utf8('{}'))] },
          400,
          'block_leaves_mismatch',
        )
        await refused({ ...block, leaves: block.leaves.slice(1) }, 400, 'block_leaves_mismatch')
        await refused(next({}, []), 400, 'block_leaves_mismatch')
      })

      test('a changed leaf', async () => {
        const block = next()
        await refused(
          { ...block, leaves: [block.leaves[0], toBase64(utf8('{"forged":1}'))] },
          400,
          'block_root_mismatch',
        )
      })

      test('a wrong log root', async () => {
        await refused(next({ changes: { logRoot: toBase64(randomBytes(32)) } }), 400, 'block_root_mismatch')
      })

      test('a checkpoint not signed by the node, or for another size', async () => {
        await refused(next({ checkpointSigner: stranger.secretKey }), 400, 'block_checkpoint_invalid')
        await refused(next({ checkpointSize: 4 }), 400, 'block_checkpoint_invalid')
      })

      test('a malformed block', async () => {
        await refused({ ...next(), extra: 1 }, 400, 'block_malformed')
        await refused([], 400, 'block_malformed')
      })

      test('garbage JSON and an oversized body', async () => {
        await refused('{"header": ', 400, 'malformed_json')
        await refused(`"${'a'.repeat(blockBodyBytesMax)}"`, 413, 'body_too_large')
      })

      test('a block of a node not followed', async () => {
        const other = syntheticNode()
        await refused(makeChain(other, [1]).blocks[0], 404, 'node_not_followed')
      })

      test('each refusal is counted by its code', async () => {
        const metrics = (await app.inject('/metrics')).body
        for (const code of [
          'block_signature_invalid',
          'block_height_gap',
          'malformed_json',
          'body_too_large',
        ]) {
          assert.match(metrics, new RegExp(`vmoney_browser_refusals_total\\{code="${code}"\\} [1-9]`))
        }
      })
    })

    test('pushing a held block again is an idempotent success', async () => {
      const { node, app } = await freshBrowser()
      const { blocks } = makeChain(node, [1, 2, 3])
      await pushAll(app, blocks)
      const before = await storedState(database.db, node.id)
      for (const block of [blocks[2]!, blocks[0]!, blocks[2]!]) {
        const { status, body } = await pushBlock(app, block)
        assert.equal(status, 200)
        assert.deepEqual(body, {
          status: 'duplicate',
          node: node.id,
          height: block.header.height,
          logSize: block.header.logSize,
        })
      }
      assert.deepEqual(await storedState(database.db, node.id), before)
      await app.close()
    })

    test('a held header offered with other leaves is refused without an alarm', async () => {
      const { node, app } = await freshBrowser()
      const { blocks } = makeChain(node, [2, 2])
      await pushAll(app, blocks)
      const before = await storedState(database.db, node.id)
      const forged = { ...blocks[1]!, leaves: [blocks[1]!.leaves[1]!, blocks[1]!.leaves[0]!] }
      const { status, body } = await pushBlock(app, forged)
      assert.equal(status, 400)
      assert.equal(body['code'], 'block_leaves_mismatch')
      assert.deepEqual(await storedState(database.db, node.id), before)
      await app.close()
    })

    test('a different block validly signed at a held height is a rewrite: 409 and an alarm', async () => {
      const { node, app } = await freshBrowser()
      const { blocks, states } = makeChain(node, [2, 2, 1])
      await pushAll(app, blocks)
      const before = await storedState(database.db, node.id)
      const rewrite = makeBlock(node, states[0]!, plainLeaves(9, 2))
      for (let attempt = 0; attempt < 2; attempt++) {
        const { status, body } = await pushBlock(app, rewrite)
        assert.equal(status, 409)
        assert.equal(body['code'], 'block_rewrite')
        assert.equal(body['height'], 1)
      }
      // Unsigned garbage at a held height is no evidence of anything: no alarm.
      const unsigned = makeBlock(node, states[0]!, plainLeaves(8, 2), { signer: stranger.secretKey })
      assert.equal((await pushBlock(app, unsigned)).body['code'], 'block_signature_invalid')

      const after = await storedState(database.db, node.id)
      assert.deepEqual({ ...after, alarms: before.alarms }, before)
      assert.equal(after.alarms, 1, 'the same evidence twice is one alarm')
      const alarms = (await app.inject('/v1/alarms')).json() as {
        alarms: Record<string, unknown>[]
        next: unknown
      }
      const mine = alarms.alarms.filter((alarm) => alarm['node'] === node.id)
      assert.equal(mine.length, 1)
      const alarm = mine[0]!
      assert.equal(alarm['kind'], 'rewrite')
      assert.equal(alarm['height'], 1)
      assert.equal(alarm['heldHeaderHash'], toBase64(headerHash(blocks[1]!.header)))
      assert.equal(alarm['offeredHeaderHash'], toBase64(headerHash(rewrite.header)))
      const evidence = alarm['evidence'] as {
        held: { header: unknown }
        offered: { header: unknown; signature: string }
      }
      assert.deepEqual(evidence.held.header, blocks[1]!.header)
      assert.deepEqual(evidence.offered, { header: rewrite.header, signature: rewrite.signature })
      const metrics = (await app.inject('/metrics')).body
      assert.match(metrics, new RegExp(`vmoney_browser_alarms\\{node="${node.id}",kind="rewrite"\\} 1`))
      await app.close()
    })

    test('alarms are listed newest first, a bounded page at a time', async () => {
      const { node, app } = await freshBrowser()
      const { blocks, states } = makeChain(node, [1, 1, 1, 1])
      await pushAll(app, blocks)
      for (const height of [1, 2, 3]) {
        const rewrite = makeBlock(node, states[height - 1]!, plainLeaves(50 + height, 1))
        assert.equal((await pushBlock(app, rewrite)).status, 409)
      }
      const first = (await app.inject(`/v1/alarms?node=${node.id}&limit=2`)).json() as {
        alarms: { id: number; height: number }[]
        next: number | null
      }
      assert.deepEqual(
        first.alarms.map((a) => a.height),
        [3, 2],
      )
      assert.equal(first.next, first.alarms[1]!.id)
      const second = (await app.inject(`/v1/alarms?node=${node.id}&limit=2&before=${first.next}`)).json() as {
        alarms: { height: number }[]
        next: number | null
      }
      assert.deepEqual(
        second.alarms.map((a) => a.height),
        [1],
      )
      assert.equal(second.next, null)
      assert.equal((await app.inject('/v1/alarms?limit=1000')).statusCode, 400)
      await app.close()
    })

    test('recipients of sealed leaves are indexed; leaves that do not decode are kept, not indexed', async () => {
      const { node, app } = await freshBrowser()
      const alice = newRecipient()
      const bob = newRecipient()
      const leaves = (height: number) =>
        height === 0
          ? [sealedLeaf([alice, bob]), utf8('not json'), sealedLeaf([alice])]
          : [sealedLeaf([bob]), sealedLeaf([alice, alice])]
      const { blocks } = makeChain(node, [3, 2], leaves)
      await pushAll(app, blocks)
      const page = async (kid: string, query = '') =>
        (await app.inject(`/v1/log/recipients/${kid}${query}`)).json() as {
          leaves: number[]
          next: number | null
        }
      assert.deepEqual(await page(alice.kid), { leaves: [0, 2, 4], next: null })
      assert.deepEqual(await page(bob.kid), { leaves: [0, 3], next: null })
      assert.deepEqual(await page(alice.kid, '?limit=2'), { leaves: [0, 2], next: 2 })
      assert.deepEqual(await page(alice.kid, '?limit=2&after=2'), { leaves: [4], next: null })
      assert.deepEqual(await page(newRecipient().kid), { leaves: [], next: null })
      assert.equal((await app.inject(`/v1/log/recipients/${alice.kid}?limit=1001`)).statusCode, 400)
      await app.close()
    })

    test('several nodes are kept apart and served under /n/<nodeId>', async () => {
      const second = syntheticNode()
      const { node, app } = await freshBrowser([second])
      await pushAll(app, makeChain(node, [1]).blocks)
      const secondChain = makeChain(second, [2, 2]).blocks
      await pushAll(app, secondChain)
      assert.equal((await app.inject('/v1/blocks')).json().header.node, node.id)
      assert.equal((await app.inject(`/n/${second.id}/v1/blocks`)).json().header.height, 1)
      assert.equal((await app.inject(`/n/${second.id}/v1/log/checkpoint`)).body, secondChain[1]!.checkpoint)
      assert.equal((await app.inject(`/n/${node.id}/v1/log/leaves/0`)).statusCode, 200)
      assert.equal((await app.inject(`/n/${node.id}/v1/log/leaves/1`)).json().code, 'leaf_not_found')
      const unknown = await app.inject(`/n/${syntheticNode().id}/v1/blocks`)
      assert.equal(unknown.statusCode, 404)
      assert.equal(unknown.json().code, 'node_not_followed')
      const nodes = (await app.inject('/v1/nodes')).json() as {
        nodes: { nodeId: string; head: { height: number; logSize: number } | null }[]
      }
      assert.deepEqual(
        nodes.nodes.map((n) => [n.nodeId, n.head?.height, n.head?.logSize]),
        [
          [node.id, 0, 1],
          [second.id, 1, 4],
        ],
      )
      const info = (await app.inject(`/n/${second.id}/v1/node`)).json()
      assert.equal(info.nodeId, second.id)
      assert.equal(info.origin, `vmoney/${second.id}`)
      await app.close()
    })
  })
}
