import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'
import { sql } from 'kysely'
import { fromBase64, toBase64 } from '../protocol/encoding.js'
import { leafHash, verifyInclusion } from '../protocol/merkle.js'
import { browserApp, databaseTargets, makeChain, syntheticNode } from './browser-fixtures.js'
import { leafRange, readTreeNodes } from './browser-store.js'

for (const target of await databaseTargets()) {
  describe(`browser migrations (${target.name})`, { skip: target.skip }, () => {
    after(() => target.dispose())

    test('a log accepted before leaf hashes were stored gets them at the next start, and proves with them', async () => {
      const node = syntheticNode()
      const { blocks } = makeChain(node, [3, 6, 1])
      let database = await target.open()
      const { context } = await browserApp(database, [node])
      for (const block of blocks) await context.acceptor.accept(block)
      // The database as the first schema left it: no level-0 nodes, the second migration not applied.
      await sql`delete from browser_tree_nodes where level = 0`.execute(database.db)
      await sql`delete from browser_migration where name = '0002-leaf-hashes'`.execute(database.db)
      await database.close()

      database = await target.open()
      try {
        const leaves = await leafRange(database.db, node.id, 0, 10)
        assert.equal(leaves.length, 10)
        const ids = leaves.map((_, index) => ({ level: 0, index }))
        const stored = await readTreeNodes(database.db, node.id, ids)
        assert.deepEqual(stored.map(toBase64), leaves.map(leafHash).map(toBase64))

        const reopened = await browserApp(database, [node])
        const answer = await reopened.app.inject('/v1/log/proofs/inclusion?index=7&size=10')
        assert.equal(answer.statusCode, 200, answer.body)
        const { proof } = answer.json() as { proof: string[] }
        const root = fromBase64(blocks.at(-1)!.header.logRoot)
        verifyInclusion(leafHash(leaves[7]!), 7, 10, proof.map(fromBase64), root)
        await reopened.app.close()
      } finally {
        await database.close()
      }
    })
  })
}
