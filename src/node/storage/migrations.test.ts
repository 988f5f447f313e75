import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { createTestDatabase, dropTestDatabase, testDialect } from '../../testing/databases.js'
import { runCli } from '../../testing/node-process.js'
import { openDatabase } from './database.js'
import { migrationNames } from './migrations.js'

test(`two processes migrating one fresh ${testDialect} database at once are safe; a third finds nothing to do`, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-migrate-'))
  try {
    const url = await createTestDatabase(dataDir)
    const migrate = () => runCli(['migrate', '--data-dir', dataDir, '--database-url', url])
    const both = await Promise.all([migrate(), migrate()])
    for (const result of both) assert.equal(result.code, 0, result.stderr)
    const outputs = both.map((result) => result.stdout).sort()
    assert.ok(
      outputs[0]!.endsWith(`: applied ${migrationNames(testDialect).join(', ')}\n`),
      `every migration, once, in order: ${outputs[0]}`,
    )
    assert.match(outputs[1]!, /: the schema is up to date\n$/)
    const again = await migrate()
    assert.equal(again.code, 0, again.stderr)
    assert.match(again.stdout, /up to date/)

    const database = await openDatabase(url)
    try {
      assert.deepEqual(database.migrated, [])
      const pending = await database.db.selectFrom('pool').select('seq').execute()
      assert.deepEqual(pending, [], 'the tables exist, empty')
    } finally {
      await database.close()
    }
  } finally {
    await dropTestDatabase(dataDir)
    rmSync(dataDir, { recursive: true, force: true })
  }
})
