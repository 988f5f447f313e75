import { createHash } from 'node:crypto'
import { join } from 'node:path'
import mysql from 'mysql2/promise'
import pg from 'pg'
import type { Dialect } from '../storage/connect.js'

/**
 * The database the test suite runs its nodes on: `VMONEY_TEST_DIALECT` (sqlite by default), set by the
 * test runner for each dialect it runs the suite against.
 */
export const testDialect: Dialect = dialectFromEnvironment(process.env.VMONEY_TEST_DIALECT)
/** The servers of the postgres and mysql runs, without a database name. */
export const testPostgresServer = process.env.VMONEY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432'
export const testMysqlServer = process.env.VMONEY_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306'
/** Databases this run creates start with this, so that the runner can drop what a killed test left. */
export const testDatabasePrefix = process.env.VMONEY_TEST_DATABASE_PREFIX ?? 'vmoney_test_'

function dialectFromEnvironment(value: string | undefined): Dialect {
  if (value === undefined || value === '' || value === 'sqlite') return 'sqlite'
  if (value === 'postgres' || value === 'mysql') return value
  throw new Error(`VMONEY_TEST_DIALECT must be sqlite, postgres or mysql, got ${JSON.stringify(value)}`)
}

/** Runs statements on a database server as its administrator (`postgres` or `mysql`). */
export async function onTestServer(
  dialect: Exclude<Dialect, 'sqlite'>,
  statements: (run: (statement: string, values?: unknown[]) => Promise<unknown[]>) => Promise<void>,
  connectTimeoutMs = 10_000,
): Promise<void> {
  if (dialect === 'postgres') {
    const client = new pg.Client({
      connectionString: `${testPostgresServer}/postgres`,
      connectionTimeoutMillis: connectTimeoutMs,
    })
    await client.connect()
    try {
      await statements(async (statement, values) => (await client.query(statement, values)).rows)
    } finally {
      await client.end()
    }
    return
  }
  const connection = await mysql.createConnection({ uri: testMysqlServer, connectTimeout: connectTimeoutMs })
  try {
    await statements(async (statement, values) => (await connection.query(statement, values))[0] as unknown[])
  } finally {
    await connection.end()
  }
}

/** The name of the server database of a test node keeping its files in `dataDir`. */
function databaseName(dataDir: string): string {
  return `${testDatabasePrefix}${createHash('sha256').update(dataDir).digest('hex').slice(0, 16)}`
}

/**
 * The URL of the node database of a test node keeping its files in `dataDir` (see createTestDatabase), in
 * the suite's dialect unless another is named (the bench chooses its own).
 */
export function testDatabaseUrl(dataDir: string, dialect: Dialect = testDialect): string {
  if (dialect === 'sqlite') return `sqlite:${join(dataDir, 'node.db')}`
  const server = dialect === 'postgres' ? testPostgresServer : testMysqlServer
  return `${server}/${databaseName(dataDir)}`
}

/** Creates the node database of `dataDir` on the test server (a file needs nothing) and returns its URL. */
export async function createTestDatabase(dataDir: string, dialect: Dialect = testDialect): Promise<string> {
  if (dialect === 'postgres') {
    await onTestServer('postgres', async (run) => {
      try {
        await run(`create database ${databaseName(dataDir)}`)
      } catch (error) {
        // 42P04: it exists already, as when a test starts the same node again.
        if ((error as { code?: string }).code !== '42P04') throw error
      }
    })
  } else if (dialect === 'mysql') {
    await onTestServer('mysql', async (run) => {
      await run(`create database if not exists ${databaseName(dataDir)} character set utf8mb4`)
    })
  }
  return testDatabaseUrl(dataDir, dialect)
}

/** Drops the node database of `dataDir` from the test server; the file goes with the directory. */
export async function dropTestDatabase(dataDir: string, dialect: Dialect = testDialect): Promise<void> {
  if (dialect === 'sqlite') return
  const name = databaseName(dataDir)
  await onTestServer(dialect, async (run) => {
    await run(
      dialect === 'postgres'
        ? `drop database if exists ${name} with (force)`
        : `drop database if exists ${name}`,
    )
  })
}

/** `--database-url` for a `vmoney` command run on the node database of `dataDir`. */
export function testDatabaseArgs(dataDir: string): string[] {
  return ['--database-url', testDatabaseUrl(dataDir)]
}
