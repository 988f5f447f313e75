import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'
import { sql } from 'kysely'
import { fromBase64, toBase64 } from '../protocol/encoding.js'
import { binaryMediaType, decodeRawBlock } from '../protocol/leaf-page.js'
import { leafHash, verifyInclusion } from '../protocol/merkle.js'
import { browserApp, databaseTargets, makeChain, storedState, syntheticNode } from './browser-fixtures.js'
import { leafRange, readTreeNodes } from './browser-store.js'

for (const target of await databaseTargets()) {
  describe(`browser migrations (${target.name})`, { skip: target.skip }, () => {
    after(() => target.dispose())

    test('a log stored by the first schema gets leaf hashes and leaf pages at the next start, and serves the same', async () => {
      const node = syntheticNode()
      // 150 leaves make one block of three pages; leaf ranges below cross page and block boundaries.
      const { blocks } = makeChain(node, [3, 150, 1])
      let database = await target.open()
      const { context } = await browserApp(database, [node])
      for (const block of blocks) await context.acceptor.accept(block)
      const size = blocks.at(-1)!.header.logSize
      const leaves = await leafRange(database.db, node.id, 0, size)
      assert.deepEqual(
        leaves.map(toBase64),
        blocks.flatMap((block) => block.leaves),
      )

      // The database as the first schema left it: one row a leaf, no level-0 nodes, later migrations not applied.
      const { db, dialect } = database
      const count = dialect === 'postgres' ? sql`bigint` : sql`integer`
      await sql`create table browser_leaves (node text not null, leaf_index ${count} not null,
        block_height ${count} not null, leaf ${dialect === 'postgres' ? sql`bytea` : sql`blob`} not null,
        primary key (node, leaf_index))`.execute(db)
      for (const block of blocks) {
        const { firstLeaf, height } = block.header
        await sql`insert into browser_leaves (node, leaf_index, block_height, leaf) values ${sql.join(
          block.leaves.map((leaf, i) => sql`(${node.id}, ${firstLeaf + i}, ${height}, ${fromBase64(leaf)})`),
        )}`.execute(db)
      }
      await sql`drop table browser_leaf_pages`.execute(db)
      await sql`delete from browser_tree_nodes where level = 0`.execute(db)
      await sql`delete from browser_migration where name in ('0002-leaf-hashes', '0003-leaf-pages')`.execute(
        db,
      )
      await database.close()

      database = await target.open()
      try {
        const moved = await leafRange(database.db, node.id, 0, size)
        assert.deepEqual(
          moved.map(toBase64),
          blocks.flatMap((block) => block.leaves),
        )
        for (const [start, end] of [
          [60, 70],
          [2, 4],
          [130, 154],
          [153, 154],
        ] as const)
          assert.deepEqual(await leafRange(database.db, node.id, start, end), moved.slice(start, end))
        assert.equal((await storedState(database.db, node.id)).leafPages, 1 + 3 + 1)
        const ids = moved.map((_, index) => ({ level: 0, index }))
        const stored = await readTreeNodes(database.db, node.id, ids)
        assert.deepEqual(stored.map(toBase64), moved.map(leafHash).map(toBase64))

        const reopened = await browserApp(database, [node])
        for (const block of blocks) {
          const json = await reopened.app.inject(`/v1/blocks/${block.header.height}`)
          assert.deepEqual(json.json(), block)
          const binary = await reopened.app.inject({
            url: `/v1/blocks/${block.header.height}`,
            headers: { accept: binaryMediaType },
          })
          assert.deepEqual(decodeRawBlock(binary.rawPayload).leaves.map(toBase64), block.leaves)
        }
        const answer = await reopened.app.inject(`/v1/log/proofs/inclusion?index=7&size=${size}`)
        assert.equal(answer.statusCode, 200, answer.body)
        const { proof } = answer.json() as { proof: string[] }
        const root = fromBase64(blocks.at(-1)!.header.logRoot)
        verifyInclusion(leafHash(moved[7]!), 7, size, proof.map(fromBase64), root)
        await reopened.app.close()
      } finally {
        await database.close()
      }
    })
  })
}
