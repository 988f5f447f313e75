import { createHash } from 'node:crypto'
import { join } from 'node:path'
import pg from 'pg'
import type { Dialect } from '../storage/connect.js'

/**
 * The database the test suite runs its nodes on: `VMONEY_TEST_DIALECT` (sqlite by default), set by the
 * test runner for each dialect it runs the suite against.
 */
export const testDialect: Dialect = dialectFromEnvironment(process.env.VMONEY_TEST_DIALECT)
/** The PostgreSQL server of the postgres run, without a database name. */
export const testPostgresServer = process.env.VMONEY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432'
/** Databases this run creates start with this, so that the runner can drop what a killed test left. */
export const testDatabasePrefix = process.env.VMONEY_TEST_DATABASE_PREFIX ?? 'vmoney_test_'

function dialectFromEnvironment(value: string | undefined): Dialect {
  if (value === undefined || value === '' || value === 'sqlite') return 'sqlite'
  if (value === 'postgres') return 'postgres'
  throw new Error(`VMONEY_TEST_DIALECT must be sqlite or postgres, got ${JSON.stringify(value)}`)
}

/** The name of the server database of a test node keeping its files in `dataDir`. */
function databaseName(dataDir: string): string {
  return `${testDatabasePrefix}${createHash('sha256').update(dataDir).digest('hex').slice(0, 16)}`
}

/** The URL of the node database of a test node keeping its files in `dataDir` (see createTestDatabase). */
export function testDatabaseUrl(dataDir: string): string {
  if (testDialect === 'sqlite') return `sqlite:${join(dataDir, 'node.db')}`
  return `${testPostgresServer}/${databaseName(dataDir)}`
}

async function withAdmin<T>(run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: `${testPostgresServer}/postgres` })
  await client.connect()
  try {
    return await run(client)
  } finally {
    await client.end()
  }
}

/** Creates the node database of `dataDir` on the test server (a file needs nothing) and returns its URL. */
export async function createTestDatabase(dataDir: string): Promise<string> {
  if (testDialect === 'postgres') {
    await withAdmin(async (client) => {
      try {
        await client.query(`create database ${databaseName(dataDir)}`)
      } catch (error) {
        // 42P04: it exists already, as when a test starts the same node again.
        if ((error as { code?: string }).code !== '42P04') throw error
      }
    })
  }
  return testDatabaseUrl(dataDir)
}

/** Drops the node database of `dataDir` from the test server; the file goes with the directory. */
export async function dropTestDatabase(dataDir: string): Promise<void> {
  if (testDialect !== 'postgres') return
  await withAdmin((client) => client.query(`drop database if exists ${databaseName(dataDir)} with (force)`))
}

/** `--database-url` for a `vmoney` command run on the node database of `dataDir`. */
export function testDatabaseArgs(dataDir: string): string[] {
  return ['--database-url', testDatabaseUrl(dataDir)]
}
