/**
 * Connections to the databases a node and a block browser run on, chosen by URL: `sqlite:<file>` (the
 * embedded default), `postgres://...` (production) or `mysql://...` (MySQL and MariaDB; the node only).
 * Each component applies its own migrations on the connection; what differs between dialects at
 * connection time lives here and nowhere else.
 */
import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import SqliteDatabase from 'better-sqlite3'
import {
  Kysely,
  MysqlAdapter,
  MysqlDialect,
  PostgresAdapter,
  PostgresDialect,
  SqliteDialect,
  type SqliteDatabase as SqliteHandle,
  sql,
} from 'kysely'
import { createPool as createMysqlPool } from 'mysql2'
import pg from 'pg'
import { VmError } from '../protocol/errors.js'

export type Dialect = 'sqlite' | 'postgres' | 'mysql'

export interface Connection<Schema> {
  readonly db: Kysely<Schema>
  readonly dialect: Dialect
  /** The URL without its password, for logs and errors. */
  readonly url: string
  /** The SQLite handle, for statements prepared once on hot paths; null on a server. */
  readonly sqlite: SqliteDatabase.Database | null
}

export interface ConnectOptions {
  /** Connections in a server's pool. */
  readonly connectionsMax: number
  /** How long a server that does not answer at start is tried again before giving up. */
  readonly waitMs: number
  /** Hears each failed attempt at start, before the wait that follows it. */
  readonly onRetry?: (message: string, waitMs: number) => void
  /** SQLite's own page cache and memory-mapped bytes; its defaults when absent. */
  readonly sqliteCacheKiB?: number
  readonly sqliteMmapBytes?: number
}

/** How long a writer waits for SQLite's lock held by another process (a CLI audit, a backup). */
export const sqliteBusyTimeoutMs = 5_000
/**
 * WAL pages written before a commit copies them into the database file (SQLite's default is 1,000). Each
 * such checkpoint syncs the database file on the committing writer's path; 16,384 pages (64 MiB) make
 * them 16 times rarer, which measured about 14% more funnel throughput (`npm run bench -- --part node`).
 */
export const sqliteWalCheckpointPages = 16_384
/** After a checkpoint the WAL file is cut back to this, so that one burst does not keep it large. */
export const sqliteWalBytesMax = 64 * 1024 * 1024
/** How long one attempt to connect to a server may take. */
export const serverConnectTimeoutMs = 5_000
/** No statement may hold a server connection longer than this. */
export const postgresStatementTimeoutMs = 30_000
/**
 * A transaction left open this long without a statement is ended by the server (PostgreSQL, MariaDB), so
 * that a paused process (SIGSTOP, a frozen VM) cannot keep its locks and stall the funnel that takes over.
 * Above the longest pause within the funnel's block (sealing a full block).
 */
export const idleInTransactionMsMax = 2_000
/** Waits between attempts to reach a server at start: doubling from the first to the last. */
export const connectRetryFirstMs = 250
export const connectRetryLastMs = 4_000
/** The default of `waitMs`: a server restarting with the node gets this long to come up. */
export const databaseWaitMsDefault = 30_000

/** The dialect a URL names; any other scheme is refused at once. */
export function dialectOf(url: string): Dialect {
  if (url.startsWith('sqlite:')) return 'sqlite'
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return 'postgres'
  if (url.startsWith('mysql://') || url.startsWith('mariadb://')) return 'mysql'
  throw new VmError(
    'database_url_unsupported',
    `unsupported database URL ${JSON.stringify(redactUrl(url))}: use sqlite:<file>, postgres://... or mysql://...`,
    { status: 500 },
  )
}

/** Database URLs may carry passwords; logs and errors show them without. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):([^@]+)@/, '//$1:***@')
}

export async function connect<Schema>(url: string, options: ConnectOptions): Promise<Connection<Schema>> {
  const dialect = dialectOf(url)
  if (dialect === 'sqlite') return connectSqlite<Schema>(url, options)
  const db = dialect === 'postgres' ? postgresKysely<Schema>(url, options) : mysqlKysely<Schema>(url, options)
  await untilAnswered(db as Kysely<unknown>, dialect, redactUrl(url), options)
  return { db, dialect, url: redactUrl(url), sqlite: null }
}

function connectSqlite<Schema>(url: string, options: ConnectOptions): Connection<Schema> {
  const file = resolve(url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, ''))
  mkdirSync(dirname(file), { recursive: true })
  let sqlite: SqliteDatabase.Database
  try {
    sqlite = new SqliteDatabase(file, { timeout: sqliteBusyTimeoutMs })
  } catch (error) {
    throw new VmError(
      'database_open_failed',
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
  sqlite.pragma(`wal_autocheckpoint = ${sqliteWalCheckpointPages}`)
  sqlite.pragma(`journal_size_limit = ${sqliteWalBytesMax}`)
  if (options.sqliteMmapBytes !== undefined) sqlite.pragma(`mmap_size = ${options.sqliteMmapBytes}`)
  if (options.sqliteCacheKiB !== undefined) sqlite.pragma(`cache_size = -${options.sqliteCacheKiB}`)
  const db = new Kysely<Schema>({ dialect: new SqliteDialect({ database: preparingOnce(sqlite) }) })
  return { db, dialect: 'sqlite', url: `sqlite:${file}`, sqlite }
}

/** Statements kept per SQLite connection: a component's queries have few texts (batches come in few sizes). */
export const sqliteStatementsCachedMax = 512

/**
 * The SQLite handle as Kysely uses it, with each SQL text prepared once: preparing the funnel's queries
 * every time took about a tenth of its thread. A statement still iterating (busy) is never shared; a
 * fresh one serves meanwhile. SQLite prepares a statement again by itself after a schema change.
 */
export function preparingOnce(sqlite: SqliteDatabase.Database): SqliteHandle {
  const statements = new Map<string, SqliteDatabase.Statement>()
  return {
    prepare(text) {
      const cached = statements.get(text)
      if (cached !== undefined && !cached.busy) return cached
      const statement = sqlite.prepare(text)
      if (cached === undefined) {
        // The oldest text goes first: a cache, not a record of every query.
        if (statements.size >= sqliteStatementsCachedMax) statements.delete(statements.keys().next().value!)
        statements.set(text, statement)
      }
      return statement
    },
    close: () => sqlite.close(),
  }
}

const int8Oid = 20
const numericOid = 1700

/**
 * bigint columns and counts are numbers here (every one a safe integer: positions, times, counts);
 * NUMERIC stays a decimal string, as amounts are in code.
 */
const getTypeParser = ((oid: number, format?: 'text' | 'binary') => {
  if (oid === int8Oid) return parseInt8
  if (oid === numericOid) return (text: string) => text
  return pg.types.getTypeParser(oid, format)
}) as typeof pg.types.getTypeParser

function parseInt8(text: string): number {
  const value = Number(text)
  if (!Number.isSafeInteger(value))
    throw new VmError('internal', `${text} is not a safe integer`, { status: 500 })
  return value
}

/**
 * Server errors that no waiting cures: wrong credentials, a database that does not exist, a refused role
 * (PostgreSQL's SQLSTATEs, MySQL's error names). Anything else at start (a refused or timed-out
 * connection, a server starting up) is tried again until `waitMs`.
 */
const permanentCodes = new Set([
  '28P01',
  '28000',
  '3D000',
  '42501',
  'ER_ACCESS_DENIED_ERROR',
  'ER_DBACCESS_DENIED_ERROR',
  'ER_BAD_DB_ERROR',
])

interface PostgresTarget {
  /** The URL for each host, without libpq's multi-host parameters (node-postgres knows neither). */
  readonly urls: readonly string[]
  /** `host:port` of each, for messages. */
  readonly hosts: readonly string[]
  /** `target_session_attrs=read-write`: connect only to a server that takes writes (a primary). */
  readonly readWrite: boolean
}

/** Servers one URL may list (libpq's `host1:port1,host2:port2`). */
export const postgresHostsMax = 8

/**
 * Reads libpq's multi-host form, `postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write`,
 * which node-postgres does not: the pool then tries the hosts in turn.
 */
export function postgresTarget(url: string): PostgresTarget {
  const match = /^(postgres(?:ql)?:\/\/(?:[^@/?#]*@)?)([^/?#]*)(.*)$/.exec(url)
  if (match === null) return { urls: [url], hosts: [], readWrite: false }
  const [, prefix, hostList, rest] = match as unknown as [string, string, string, string]
  let readWrite = false
  const remaining = rest.replace(
    /([?&])target_session_attrs=([^&#]*)&?/,
    (_all, lead: string, value: string) => {
      if (value !== 'read-write' && value !== 'any')
        throw new VmError(
          'config_invalid',
          `target_session_attrs must be read-write or any, got ${JSON.stringify(value)}`,
        )
      readWrite = value === 'read-write'
      return lead
    },
  )
  const cleaned = remaining.replace(/[?&]$/, '')
  const hosts = hostList.split(',')
  for (const host of hosts) {
    if (!/^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(:\d{1,5})?$/.test(host))
      throw new VmError('config_invalid', `${JSON.stringify(host)} is not host[:port] in the database URL`)
  }
  if (hosts.length > postgresHostsMax)
    throw new VmError('config_invalid', `a database URL lists at most ${postgresHostsMax} hosts`)
  return { urls: hosts.map((host) => `${prefix}${host}${cleaned}`), hosts, readWrite }
}

/** SQLSTATE read_only_sql_transaction: what a standby answers, and what a read-write target refuses. */
const readOnlyServerCode = '25006'

/**
 * A pg client class that connects to the host the pool last found good and moves to the next one when
 * that one refuses the connection or, for a read-write target, turns out to be a standby: after a
 * failover the pool finds the promoted server by itself.
 */
function failoverClient(target: PostgresTarget): typeof pg.Client {
  const { hosts, urls } = target
  let current = 0
  const moveOn = (from: number) => {
    if (current === from) current = (from + 1) % hosts.length
  }
  return class FailoverClient extends pg.Client {
    readonly hostIndex: number
    constructor(config: pg.ClientConfig) {
      const at = current
      super({ ...config, connectionString: urls[at]! })
      this.hostIndex = at
    }
    // biome-ignore lint/suspicious/noExplicitAny: the pool calls the callback form of an overloaded method
    override connect(callback?: any): any {
      if (callback === undefined) return super.connect()
      super.connect((error: Error | null) => {
        if (error) moveOn(this.hostIndex)
        callback(error)
      })
    }
    /** Checked by the pool on every new connection. */
    async checkWritable(): Promise<void> {
      const { rows } = await this.query<{ standby: boolean }>('select pg_is_in_recovery() as standby')
      if (rows[0]?.standby !== true) return
      moveOn(this.hostIndex)
      throw Object.assign(new Error(`${hosts[this.hostIndex]} is a standby (read-only)`), {
        code: readOnlyServerCode,
      })
    }
  }
}

function postgresKysely<Schema>(url: string, options: ConnectOptions): Kysely<Schema> {
  const target = postgresTarget(url)
  const failover = target.hosts.length > 1 || target.readWrite
  const pool = new pg.Pool({
    connectionString: target.urls[0]!,
    max: options.connectionsMax,
    connectionTimeoutMillis: serverConnectTimeoutMs,
    statement_timeout: postgresStatementTimeoutMs,
    idle_in_transaction_session_timeout: idleInTransactionMsMax,
    types: { getTypeParser },
    ...(failover
      ? {
          Client: failoverClient(target) as never,
          onConnect: target.readWrite
            ? (client: pg.ClientBase) =>
                (client as unknown as { checkWritable(): Promise<void> }).checkWritable()
            : undefined,
        }
      : {}),
  })
  // A connection that breaks (a server restart, a failover) must not crash the process: its query fails
  // (and the api answers 503), the next query takes a new connection. node-postgres reports the break as
  // an 'error' event on the pool when idle, on the client when in use.
  pool.on('error', () => {})
  pool.on('connect', (client) => client.on('error', () => {}))
  return new Kysely<Schema>({ dialect: new PostgresDialect({ pool }) })
}

function mysqlKysely<Schema>(url: string, options: ConnectOptions): Kysely<Schema> {
  const pool = createMysqlPool({
    uri: url.replace(/^mariadb:/, 'mysql:'),
    connectionLimit: options.connectionsMax,
    connectTimeout: serverConnectTimeoutMs,
    charset: 'utf8mb4',
    // BIGINT as numbers (every one a safe integer here), DECIMAL amounts as exact strings.
    supportBigNumbers: true,
    bigNumberStrings: false,
    decimalNumbers: false,
    timezone: 'Z',
    // An UPDATE counts the rows it matched, as on PostgreSQL and SQLite, not only those it changed.
    flags: ['FOUND_ROWS'],
  })
  pool.on('connection', (connection) => {
    // As for PostgreSQL: a broken connection fails its query, never the process.
    connection.on('error', () => {})
    // MariaDB ends idle transactions itself (MySQL has no such setting: there the query fails, harmlessly).
    connection.query(`set session idle_transaction_timeout = ${idleInTransactionMsMax / 1000}`, () => {})
  })
  return new Kysely<Schema>({ dialect: new MysqlDialect({ pool }) })
}

/** Tries the server until it answers, `waitMs` at most, with doubling waits; refusals end it at once. */
async function untilAnswered(
  db: Kysely<unknown>,
  dialect: Dialect,
  shown: string,
  options: ConnectOptions,
): Promise<void> {
  const server = dialect === 'postgres' ? 'PostgreSQL' : 'MySQL'
  const giveUpAt = Date.now() + options.waitMs
  let wait = connectRetryFirstMs
  for (let attempt = 1; ; attempt++) {
    try {
      await sql`select 1`.execute(db)
      return
    } catch (error) {
      const code = (error as { code?: unknown }).code
      const reason = (error as Error).message || String(code ?? error)
      if (typeof code === 'string' && permanentCodes.has(code)) {
        await db.destroy()
        throw new VmError('database_refused', `${server} at ${shown} refused the connection: ${reason}`, {
          status: 500,
          cause: error,
        })
      }
      if (Date.now() + wait > giveUpAt) {
        await db.destroy()
        throw new VmError(
          'database_unreachable',
          `${server} at ${shown} did not answer in ${options.waitMs} ms (${attempt} attempts): ${reason}`,
          { status: 503, cause: error },
        )
      }
      options.onRetry?.(`${server} at ${shown} did not answer: ${reason}`, wait)
      await sleep(wait)
      wait = Math.min(wait * 2, connectRetryLastMs)
    }
  }
}

/** The dialect behind a Kysely instance or one of its transactions, for the few statements that differ. */
export function dialectOfDb(db: { getExecutor(): { readonly adapter: unknown } }): Dialect {
  const { adapter } = db.getExecutor()
  if (adapter instanceof MysqlAdapter) return 'mysql'
  if (adapter instanceof PostgresAdapter) return 'postgres'
  return 'sqlite'
}

/** Connection failures by the drivers' codes: the server went away, or refuses connections for now. */
const unavailableCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'PROTOCOL_CONNECTION_LOST',
  'ER_SERVER_SHUTDOWN',
  'ER_CON_COUNT_ERROR',
  '57P01',
  '57P02',
  '57P03',
  '53300',
  readOnlyServerCode,
  'SQLITE_BUSY',
])

/**
 * Whether a failed query failed because the database is away or busy (worth retrying later), not because
 * of the query: a server that stopped, a cut connection, no free connection in time, SQLite's lock held
 * past its timeout.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const { code, message } = error as { code?: unknown; message?: unknown }
  if (typeof code === 'string' && (unavailableCodes.has(code) || code.startsWith('08'))) return true
  // node-postgres reports a dropped connection and a pool wait that ran out by message only.
  return (
    typeof message === 'string' &&
    (message.includes('Connection terminated') || message.includes('timeout exceeded when trying to connect'))
  )
}

/** How long a process waits for another one migrating the same SQLite file. */
export const migrationLockWaitMs = 120_000

/**
 * Runs a migration so that two processes migrating one database at once are safe. On SQLite it runs in
 * one IMMEDIATE transaction: the second process waits for the first, then finds nothing to do, and a
 * migration that fails leaves nothing behind. On PostgreSQL Kysely's migrator holds an advisory lock and
 * a transaction itself.
 */
export async function withMigrationLock<T>(
  connection: Pick<Connection<unknown>, 'sqlite'>,
  migrate: () => Promise<T>,
): Promise<T> {
  const { sqlite } = connection
  if (sqlite === null) return migrate()
  const giveUpAt = Date.now() + migrationLockWaitMs
  for (;;) {
    try {
      // Waits up to the busy timeout for another process's lock; tried again until migrationLockWaitMs.
      sqlite.exec('begin immediate')
      break
    } catch (error) {
      if ((error as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() > giveUpAt) throw error
    }
  }
  try {
    const result = await migrate()
    sqlite.exec('commit')
    return result
  } catch (error) {
    sqlite.exec('rollback')
    throw error
  }
}
