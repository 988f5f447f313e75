import type SqliteDatabase from 'better-sqlite3'
import type { Kysely } from 'kysely'
import { browserOnMysql } from '../node/config.js'
import { VmError } from '../protocol/errors.js'
import type { NodeId } from '../protocol/merkle.js'
import {
  type ConnectOptions,
  connect,
  type Dialect,
  databaseWaitMsDefault,
  dialectOf,
  withMigrationLock,
} from '../storage/connect.js'
import { readTreeNodes } from './browser-store.js'
import { migrateBrowser } from './migrations.js'
import type { BrowserSchema } from './schema.js'

/** Perfect-subtree hashes of one node's log by id, in the order asked: what every proof reads. */
export type TreeNodeReader = (node: string, ids: readonly NodeId[]) => Promise<Uint8Array[]>

export interface BrowserDatabase {
  readonly db: Kysely<BrowserSchema>
  readonly dialect: Dialect
  /** The proofs' reads: on SQLite through statements prepared once, the hottest path of a browser. */
  readonly readTreeNodes: TreeNodeReader
  /** The URL without its password, for logs. */
  readonly url: string
  close(): Promise<void>
}

/** PostgreSQL connections per browser: appends are serialised per node, reads are short. */
export const postgresConnectionsMax = 10
/** Bytes of the database file mapped into memory (address space, not memory: the OS pages it in). */
export const sqliteMmapBytes = 4 * 1024 ** 3
/** SQLite's own page cache, in KiB. */
export const sqliteCacheKiB = 64 * 1024

/** Opens the browser's database (`sqlite:<file>` or `postgres://...`) and brings its schema up to date. */
export async function openBrowserDatabase(
  url: string,
  options: Partial<Pick<ConnectOptions, 'waitMs' | 'onRetry'>> = {},
): Promise<BrowserDatabase> {
  if (dialectOf(url) === 'mysql') throw browserOnMysql(url)
  // Proofs read a few rows at random places in a large file: mapped pages cost no system call per read.
  const connection = await connect<BrowserSchema>(url, {
    connectionsMax: postgresConnectionsMax,
    waitMs: databaseWaitMsDefault,
    sqliteMmapBytes,
    sqliteCacheKiB,
    ...options,
  })
  const { db, dialect, url: shown, sqlite } = connection
  try {
    await withMigrationLock(connection, () => migrateBrowser(db as Kysely<unknown>, dialect))
  } catch (error) {
    await db.destroy()
    throw error
  }
  const reader: TreeNodeReader =
    sqlite === null ? (node, ids) => readTreeNodes(db, node, ids) : sqliteTreeNodeReader(sqlite)
  return {
    db,
    dialect,
    readTreeNodes: cachedTreeNodeReader(reader, treeNodesCachedMax),
    url: shown,
    async close() {
      await db.destroy()
    },
  }
}

/**
 * Tree nodes kept in memory (about 100 bytes each). The log is append-only, so a cached hash is never
 * stale; the upper levels, on every proof's path, stay in it.
 */
export const treeNodesCachedMax = 262_144

export function cachedTreeNodeReader(read: TreeNodeReader, entriesMax: number): TreeNodeReader {
  // One map per followed node, keyed by a number: a proof looks up some twenty nodes, and building and
  // hashing a string key for each cost as much as the reads the cache saves.
  const byNode = new Map<string, Map<number, Uint8Array>>()
  let size = 0
  return async (node, ids) => {
    let cache = byNode.get(node)
    if (cache === undefined) {
      cache = new Map()
      byNode.set(node, cache)
    }
    const out: Uint8Array[] = new Array(ids.length)
    const missing: number[] = []
    ids.forEach((id, i) => {
      const hash = cache.get(treeNodeKey(id))
      if (hash === undefined) missing.push(i)
      else out[i] = hash
    })
    if (missing.length > 0) {
      const fetched = await read(
        node,
        missing.map((i) => ids[i]!),
      )
      missing.forEach((i, j) => {
        out[i] = fetched[j]!
        // Past the bound the cache starts over: the upper levels, on every path, come back at once.
        if (size >= entriesMax) {
          byNode.clear()
          byNode.set(node, cache)
          cache.clear()
          size = 0
        }
        cache.set(treeNodeKey(ids[i]!), fetched[j]!)
        size++
      })
    }
    return out
  }
}

/** A tree node's place as one number: index < 2^40 leaves, level < 64, so it stays below 2^53. */
function treeNodeKey(id: NodeId): number {
  return id.level * 2 ** 40 + id.index
}

/**
 * One prepared statement per kind of row, reused by every proof: a proof reads about 2·log2(n) rows,
 * and parsing a query for each costs more than reading them.
 */
function sqliteTreeNodeReader(sqlite: SqliteDatabase.Database): TreeNodeReader {
  const hash = sqlite
    .prepare('select hash from browser_tree_nodes where node = ? and level = ? and node_index = ?')
    .pluck()
  return async (node, ids) =>
    ids.map((id) => {
      const row = hash.get(node, id.level, id.index) as Uint8Array | undefined
      if (row === undefined)
        throw new VmError('internal', `tree node ${id.level}/${id.index} is missing`, { status: 500 })
      return new Uint8Array(row)
    })
}
