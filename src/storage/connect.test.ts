import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import SqliteDatabase from 'better-sqlite3'
import { Kysely, SqliteDialect, sql } from 'kysely'
import { VmError } from '../protocol/errors.js'
import { testDialect, testMysqlServer, testPostgresServer } from '../testing/databases.js'
import { freePort, runCli } from '../testing/node-process.js'
import {
  connect,
  dialectOf,
  postgresTarget,
  preparingOnce,
  redactUrl,
  sqliteStatementsCachedMax,
  sqliteWalBytesMax,
  sqliteWalCheckpointPages,
} from './connect.js'

const refusedWith = (code: string) => (error: unknown) => error instanceof VmError && error.code === code

describe('database URLs', () => {
  test('sqlite:, postgres:// and mysql:// name their dialects; any other scheme is refused at once', () => {
    assert.equal(dialectOf('sqlite:./data/node.db'), 'sqlite')
    assert.equal(dialectOf('mysql://u@h/db'), 'mysql')
    assert.equal(dialectOf('mariadb://u@h/db'), 'mysql')
    assert.equal(dialectOf('postgres://u@h/db'), 'postgres')
    assert.equal(dialectOf('postgresql://u@h/db'), 'postgres')
    assert.throws(
      () => dialectOf('redis://u:secret@h/0'),
      (error: unknown) => {
        assert.ok(refusedWith('database_url_unsupported')(error))
        assert.doesNotMatch((error as Error).message, /secret/, 'the password never shows')
        return true
      },
    )
  })

  test("PostgreSQL URLs may list several hosts and ask for a read-write server, as libpq's do", () => {
    const target = postgresTarget(
      'postgres://app:pw@db1:5432,db2:5433,[::1]:5434/ledger?sslmode=disable&target_session_attrs=read-write',
    )
    assert.equal(target.readWrite, true)
    assert.deepEqual(target.hosts, ['db1:5432', 'db2:5433', '[::1]:5434'])
    assert.deepEqual(target.urls, [
      'postgres://app:pw@db1:5432/ledger?sslmode=disable',
      'postgres://app:pw@db2:5433/ledger?sslmode=disable',
      'postgres://app:pw@[::1]:5434/ledger?sslmode=disable',
    ])
    const single = postgresTarget('postgres://app@db1/ledger?target_session_attrs=any')
    assert.deepEqual([single.urls, single.readWrite], [['postgres://app@db1/ledger'], false])
    const plain = 'postgres://postgres@127.0.0.1:5432/vmoney'
    assert.deepEqual(postgresTarget(plain).urls, [plain])
    const invalid = (e: VmError) => e.code === 'config_invalid'
    assert.throws(() => postgresTarget('postgres://db1/x?target_session_attrs=standby'), invalid)
    assert.throws(() => postgresTarget('postgres://db1,,db2/x'), invalid)
    assert.throws(() => postgresTarget(`postgres://${Array(9).fill('h').join(',')}/x`), invalid)
  })

  test('passwords are redacted', () => {
    assert.equal(redactUrl('postgres://vm:s3cret@db:5432/node'), 'postgres://vm:***@db:5432/node')
  })

  test('the CLI names an unknown scheme and exits with the usage code, before starting anything', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-url-'))
    try {
      const result = await runCli(['node', '--data-dir', dataDir, '--database-url', 'oracle://db/node'])
      assert.equal(result.code, 2, result.stderr)
      assert.match(result.stderr, /database_url_unsupported: unsupported database URL "oracle:\/\/db\/node"/)
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})

describe('a database server that does not answer at start', () => {
  test('is retried with growing waits for waitMs, then given up with the count of attempts', async () => {
    const url = `postgres://postgres@127.0.0.1:${await freePort()}/none`
    const waits: number[] = []
    const started = Date.now()
    await assert.rejects(
      connect(url, { connectionsMax: 1, waitMs: 1_500, onRetry: (_message, waitMs) => waits.push(waitMs) }),
      (error: unknown) => {
        assert.ok(refusedWith('database_unreachable')(error), String(error))
        assert.match((error as Error).message, /did not answer in 1500 ms \(\d+ attempts\)/)
        return true
      },
    )
    assert.ok(Date.now() - started < 5_000, 'the wait is bounded by waitMs')
    assert.deepEqual(waits.slice(0, 2), [250, 500], 'the waits double')
  })

  test('the CLI exits with the unreachable code after the configured wait', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-url-'))
    try {
      const url = `postgres://postgres@127.0.0.1:${await freePort()}/none`
      const args = ['migrate', '--data-dir', dataDir, '--database-url', url, '--database-wait-ms', '600']
      const result = await runCli(args)
      assert.equal(result.code, 3, result.stderr)
      assert.match(result.stderr, /database_unreachable: PostgreSQL at .* did not answer in 600 ms/)
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})

describe(`a ${testDialect} server that refuses the node`, { skip: testDialect === 'sqlite' }, () => {
  const server = testDialect === 'mysql' ? testMysqlServer : testPostgresServer
  const admin = testDialect === 'mysql' ? 'root' : 'postgres'
  for (const [what, url] of [
    [
      'an unknown user',
      `${server.replace(`//${admin}@`, '//no_such_user@')}/${admin === 'root' ? 'mysql' : 'postgres'}`,
    ],
    ['a database that does not exist', `${server}/no_such_database_here`],
  ] as const) {
    test(`${what} is refused at once, not retried`, async () => {
      const started = Date.now()
      let retries = 0
      await assert.rejects(
        connect(url, { connectionsMax: 1, waitMs: 10_000, onRetry: () => retries++ }),
        (error: unknown) => {
          assert.ok(refusedWith('database_refused')(error), String(error))
          return true
        },
      )
      assert.equal(retries, 0)
      assert.ok(Date.now() - started < 5_000)
    })
  }
})

describe('an SQLite database', () => {
  test('is opened durable (WAL synced on every commit), checkpointing and trimming its WAL by the set limits', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-sqlite-'))
    const { db, sqlite } = await connect(`sqlite:${join(dataDir, 'node.db')}`, {
      connectionsMax: 1,
      waitMs: 0,
    })
    try {
      assert.ok(sqlite !== null)
      assert.equal(sqlite.pragma('journal_mode', { simple: true }), 'wal')
      assert.equal(sqlite.pragma('synchronous', { simple: true }), 2, 'FULL')
      assert.equal(sqlite.pragma('wal_autocheckpoint', { simple: true }), sqliteWalCheckpointPages)
      assert.equal(sqlite.pragma('journal_size_limit', { simple: true }), sqliteWalBytesMax)
    } finally {
      await db.destroy()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})

describe('SQLite statements prepared once', () => {
  test('one statement per text, a fresh one while it iterates, the oldest text dropped beyond the bound', () => {
    const sqlite = new SqliteDatabase(':memory:')
    const handle = preparingOnce(sqlite)
    try {
      sqlite.exec('create table t (a integer)')
      const select = handle.prepare('select a from t')
      assert.equal(handle.prepare('select a from t'), select)
      assert.notEqual(handle.prepare('select a + 1 from t'), select)
      sqlite.exec('insert into t values (1), (2)')
      const rows = select.iterate([])
      rows.next()
      const meanwhile = handle.prepare('select a from t')
      assert.notEqual(meanwhile, select, 'a busy statement is not shared')
      assert.deepEqual(meanwhile.all([]), [{ a: 1 }, { a: 2 }])
      rows.return?.()
      assert.equal(handle.prepare('select a from t'), select, 'the cached one serves again once done')
      for (let i = 0; i < sqliteStatementsCachedMax; i++) handle.prepare(`select ${i}`)
      assert.notEqual(handle.prepare('select a from t'), select, 'the oldest text was dropped')
    } finally {
      handle.close()
    }
  })

  test('through Kysely: the same query again, and again after the schema changed', async () => {
    const db = new Kysely<{ t: { a: number; b?: number } }>({
      dialect: new SqliteDialect({ database: preparingOnce(new SqliteDatabase(':memory:')) }),
    })
    try {
      await sql`create table t (a integer)`.execute(db)
      for (const a of [1, 2]) await db.insertInto('t').values({ a }).execute()
      const all = () => sql<Record<string, number | null>>`select * from t order by a`.execute(db)
      assert.deepEqual((await all()).rows, [{ a: 1 }, { a: 2 }])
      await sql`alter table t add column b integer`.execute(db)
      assert.deepEqual((await all()).rows, [
        { a: 1, b: null },
        { a: 2, b: null },
      ])
    } finally {
      await db.destroy()
    }
  })
})
