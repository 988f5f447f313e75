import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import SqliteDatabase from 'better-sqlite3'
import { Kysely, SqliteDialect } from 'kysely'
import { VmError } from '../../protocol/errors.js'
import { migrateToLatest } from './migrations.js'
import type { Database } from './schema.js'

export type Dialect = 'sqlite'

export interface NodeDatabase {
  readonly db: Kysely<Database>
  readonly dialect: Dialect
  readonly url: string
  close(): Promise<void>
}

/** How long a writer waits for SQLite's lock held by another process (a CLI audit, a backup). */
export const sqliteBusyTimeoutMs = 5_000

/** Opens the database named by a URL and brings its schema up to date. */
export async function openDatabase(url: string): Promise<NodeDatabase> {
  if (!url.startsWith('sqlite:')) {
    throw new VmError(
      'database_url_unsupported',
      `unsupported database URL scheme in ${JSON.stringify(redactUrl(url))}: use sqlite:<file>`,
      {
        status: 500,
      },
    )
  }
  const file = resolve(url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, ''))
  mkdirSync(dirname(file), { recursive: true })
  let sqlite: SqliteDatabase.Database
  try {
    sqlite = new SqliteDatabase(file, { timeout: sqliteBusyTimeoutMs })
  } catch (error) {
    throw new VmError(
      'database_unreachable',
      `cannot open SQLite database ${file}: ${(error as Error).message}`,
      {
        status: 500,
        cause: error,
      },
    )
  }
  // WAL lets readers run beside the one writer; FULL syncs the WAL on every commit, so nothing
  // acknowledged is lost when the machine loses power.
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma('synchronous = FULL')
  sqlite.pragma('foreign_keys = ON')
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) })
  await migrateToLatest(db as Kysely<unknown>)
  return {
    db,
    dialect: 'sqlite',
    url: `sqlite:${file}`,
    async close() {
      await db.destroy()
    },
  }
}

/** Database URLs may carry passwords; logs and errors show them without. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):([^@]+)@/, '//$1:***@')
}
