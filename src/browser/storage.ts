import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import SqliteDatabase from 'better-sqlite3'
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely'
import pg from 'pg'
import { redactUrl } from '../node/storage/database.js'
import { VmError } from '../protocol/errors.js'
import type { NodeId } from '../protocol/merkle.js'
import { readTreeNodes } from './browser-store.js'
import { type BrowserDialect, migrateBrowser } from './migrations.js'
import type { BrowserSchema } from './schema.js'

/** Perfect-subtree hashes of one node's log by id, in the order asked: what every proof reads. */
export type TreeNodeReader = (node: string, ids: readonly NodeId[]) => Promise<Uint8Array[]>

export interface BrowserDatabase {
  readonly db: Kysely<BrowserSchema>
  readonly dialect: BrowserDialect
  /** The proofs' reads: on SQLite through statements prepared once, the hottest path of a browser. */
  readonly readTreeNodes: TreeNodeReader
  /** The URL without its password, for logs. */
  readonly url: string
  close(): Promise<void>
}

/** How long a writer waits for SQLite's lock held by another process (a backup, a CLI). */
export const sqliteBusyTimeoutMs = 5_000
/** PostgreSQL connections per browser: appends are serialised per node, reads are short. */
export const postgresConnectionsMax = 10
export const postgresConnectTimeoutMs = 5_000
/** No statement may hold a connection longer than this. */
export const postgresStatementTimeoutMs = 30_000

const int8Oid = 20

/** Opens the browser's database (`sqlite:<file>` or `postgres://...`) and brings its schema up to date. */
export async function openBrowserDatabase(url: string): Promise<BrowserDatabase> {
  if (url.startsWith('sqlite:')) return openSqlite(url)
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return openPostgres(url)
  throw new VmError(
    'database_url_unsupported',
    `unsupported browser database URL ${JSON.stringify(redactUrl(url))}: use sqlite:<file> or postgres://...`,
    { status: 500 },
  )
}

/** Bytes of the database file mapped into memory (address space, not memory: the OS pages it in). */
export const sqliteMmapBytes = 4 * 1024 ** 3
/** SQLite's own page cache, in KiB. */
export const sqliteCacheKiB = 64 * 1024

async function openSqlite(url: string): Promise<BrowserDatabase> {
  const file = resolve(url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, ''))
  mkdirSync(dirname(file), { recursive: true })
  let sqlite: SqliteDatabase.Database
  try {
    sqlite = new SqliteDatabase(file, { timeout: sqliteBusyTimeoutMs })
  } catch (error) {
    throw unreachable(`cannot open SQLite database ${file}: ${(error as Error).message}`, error)
  }
  // WAL lets readers run beside the writer; FULL syncs every commit, so an accepted block survives a
  // power loss (the node is told 201 only after that).
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma('synchronous = FULL')
  // Proofs read a few rows at random places in a large file: mapped pages cost no system call per read.
  sqlite.pragma(`mmap_size = ${sqliteMmapBytes}`)
  sqlite.pragma(`cache_size = -${sqliteCacheKiB}`)
  const db = new Kysely<BrowserSchema>({ dialect: new SqliteDialect({ database: sqlite }) })
  return finishOpening(db, 'sqlite', `sqlite:${file}`, () => sqliteTreeNodeReader(sqlite))
}

async function openPostgres(url: string): Promise<BrowserDatabase> {
  const pool = new pg.Pool({
    connectionString: url,
    max: postgresConnectionsMax,
    connectionTimeoutMillis: postgresConnectTimeoutMs,
    statement_timeout: postgresStatementTimeoutMs,
    types: { getTypeParser },
  })
  // An idle connection that breaks (a server restart) must not crash the process; the next query reconnects.
  pool.on('error', () => {})
  const db = new Kysely<BrowserSchema>({ dialect: new PostgresDialect({ pool }) })
  return finishOpening(db, 'postgres', redactUrl(url), () => (node, ids) => readTreeNodes(db, node, ids))
}

/** bigint columns (and counts) come back as strings by default; every value here is a safe integer. */
const getTypeParser = ((oid: number, format?: 'text' | 'binary') =>
  oid === int8Oid ? parseInt8 : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser

function parseInt8(text: string): number {
  const value = Number(text)
  if (!Number.isSafeInteger(value))
    throw new VmError('internal', `${text} is not a safe integer`, { status: 500 })
  return value
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

async function finishOpening(
  db: Kysely<BrowserSchema>,
  dialect: BrowserDialect,
  url: string,
  treeNodeReader: () => TreeNodeReader,
): Promise<BrowserDatabase> {
  try {
    await sql`select 1`.execute(db)
  } catch (error) {
    await db.destroy()
    throw unreachable(`cannot reach the browser database ${url}: ${(error as Error).message}`, error)
  }
  try {
    await migrateBrowser(db as Kysely<unknown>, dialect)
  } catch (error) {
    await db.destroy()
    throw error
  }
  return {
    db,
    dialect,
    readTreeNodes: cachedTreeNodeReader(treeNodeReader(), treeNodesCachedMax),
    url,
    async close() {
      await db.destroy()
    },
  }
}

function unreachable(message: string, cause: unknown): VmError {
  return new VmError('database_unreachable', message, { status: 500, cause })
}
