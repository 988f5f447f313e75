import type { Kysely } from 'kysely'
import {
  type ConnectOptions,
  connect,
  type Dialect,
  databaseWaitMsDefault,
  withMigrationLock,
} from '../../storage/connect.js'
import { migrateToLatest } from './migrations.js'
import type { Database } from './schema.js'

export interface NodeDatabase {
  readonly db: Kysely<Database>
  readonly dialect: Dialect
  /** The URL without its password, for logs. */
  readonly url: string
  /** Migrations this opening applied (none when the schema was up to date). */
  readonly migrated: readonly string[]
  close(): Promise<void>
}

/** Server connections per process: the api's reads, or the writer's pool writes and the funnel's blocks. */
export const connectionsMax = 10

/** Opens the database named by a URL and brings its schema up to date. */
export async function openDatabase(
  url: string,
  options: Partial<Pick<ConnectOptions, 'waitMs' | 'onRetry'>> = {},
): Promise<NodeDatabase> {
  const connection = await connect<Database>(url, {
    connectionsMax,
    waitMs: databaseWaitMsDefault,
    ...options,
  })
  const { db, dialect, url: shown } = connection
  let migrated: readonly string[]
  try {
    migrated = await withMigrationLock(connection, () => migrateToLatest(db as Kysely<unknown>, dialect))
  } catch (error) {
    await db.destroy()
    throw error
  }
  return {
    db,
    dialect,
    url: shown,
    migrated,
    async close() {
      await db.destroy()
    },
  }
}
