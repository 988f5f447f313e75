/**
 * Backup and restore of a node's database, the same on every dialect: a logical snapshot (one consistent
 * read transaction) written as NDJSON, checked by a SHA-256 over its lines, restorable into an empty
 * database of any dialect. A backup is written to a temporary name, synced and renamed, so a file under
 * the final name is always whole; a restore checks the whole file before it writes a row, and writes
 * every row in one transaction.
 */
import { createHash } from 'node:crypto'
import {
  closeSync,
  createReadStream,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs'
import { createInterface } from 'node:readline'
import { type Kysely, sql, type Transaction } from 'kysely'
import { fromBase64, toBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { dialectOfDb } from '../storage/connect.js'
import { insertRows } from './storage/batch-insert.js'
import type { NodeDatabase } from './storage/database.js'
import type { Database } from './storage/schema.js'

export const backupFormat = 'vmoney-backup/1'
/** Rows read per query within the snapshot, and rows per write on restore. */
export const backupPageRows = 1_000
/** A line of the file (one row) longer than this is refused: the largest leaf is far below it. */
export const backupLineBytesMax = 16 * 1024 * 1024

type TableName = keyof Database & string

/**
 * Every table, in restore order, with the key that orders its rows and the columns holding bytes. The
 * funnel's lease (`node_leases`) is left out: it belongs to the processes running, not to the data.
 */
export const backupTables: readonly { name: TableName; key: readonly string[]; bytes?: readonly string[] }[] =
  [
    { name: 'node_settings', key: ['name'] },
    { name: 'pool', key: ['seq'] },
    { name: 'chain_blocks', key: ['height'] },
    { name: 'chain_leaves', key: ['leaf_index'] },
    { name: 'chain_nodes', key: ['level', 'node_index'], bytes: ['hash'] },
    { name: 'ledger_persons', key: ['id'] },
    { name: 'ledger_keys', key: ['key_id'] },
    { name: 'ledger_assets', key: ['id'] },
    { name: 'ledger_accounts', key: ['id'] },
    { name: 'ledger_transfers', key: ['id'] },
    { name: 'ledger_entries', key: ['seq'] },
    { name: 'ledger_views', key: ['id'] },
    { name: 'ledger_view_accounts', key: ['account', 'view_id'] },
    { name: 'node_webhooks', key: ['id'] },
    { name: 'node_webhook_dead_letters', key: ['id'] },
  ]

interface BackupHeader {
  readonly format: string
  readonly dialect: string
  readonly migrations: readonly string[]
  readonly nodeId: string | null
  readonly createdAt: string
}

interface BackupTrailer {
  readonly end: true
  readonly rows: Record<string, number>
  readonly sha256: string
}

export interface BackupSummary {
  readonly file: string
  readonly rows: Record<string, number>
  readonly logSize: number
  readonly bytes: number
}

function backupError(code: string, message: string): VmError {
  return new VmError(code, message, { status: 400 })
}

/** Rows of a table after `after` (its key values), in key order, a page at a time. */
async function page(
  trx: Transaction<Database>,
  table: (typeof backupTables)[number],
  after: readonly unknown[] | null,
): Promise<Record<string, unknown>[]> {
  // biome-ignore lint/suspicious/noExplicitAny: the table is chosen at run time from backupTables.
  let query = (trx as Transaction<any>).selectFrom(table.name).selectAll()
  if (after !== null) {
    const columns = sql.join(table.key.map((column) => sql.ref(column)))
    query = query.where(sql`(${columns}) > (${sql.join(after.map((value) => sql`${value}`))})` as never)
  }
  for (const column of table.key) query = query.orderBy(column)
  return query.limit(backupPageRows).execute()
}

/** The migrations applied to the database, in order. */
async function appliedMigrations(db: Kysely<Database> | Transaction<Database>): Promise<string[]> {
  const rows = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db)
  return rows.rows.map((row) => row.name)
}

/** Writes a consistent snapshot of the node's database to `file` while the node runs. */
export async function backup(database: NodeDatabase, file: string): Promise<BackupSummary> {
  const temporary = `${file}.partial`
  const fd = openSync(temporary, 'wx', 0o600)
  const hash = createHash('sha256')
  let bytes = 0
  const write = (value: unknown) => {
    const line = `${JSON.stringify(value)}\n`
    hash.update(line)
    bytes += writeSync(fd, line)
  }
  const rows: Record<string, number> = {}
  let logSize = 0
  try {
    // One read transaction: every table as of one moment, whatever the node commits meanwhile.
    // (SQLite: a read transaction in WAL mode reads one snapshot; servers: REPEATABLE READ.)
    const snapshot = database.db.transaction()
    await (database.dialect === 'sqlite' ? snapshot : snapshot.setIsolationLevel('repeatable read')).execute(
      async (trx) => {
        const genesis = await trx
          .selectFrom('chain_blocks')
          .select('header')
          .where('height', '=', 0)
          .executeTakeFirst()
        const header: BackupHeader = {
          format: backupFormat,
          dialect: database.dialect,
          migrations: await appliedMigrations(trx),
          nodeId: genesis === undefined ? null : (JSON.parse(genesis.header) as { node: string }).node,
          createdAt: new Date().toISOString(),
        }
        write(header)
        for (const table of backupTables) {
          let count = 0
          let after: unknown[] | null = null
          for (;;) {
            const batch = await page(trx, table, after)
            for (const row of batch) {
              for (const column of table.bytes ?? []) row[column] = toBase64(row[column] as Uint8Array)
              write({ t: table.name, r: row })
            }
            count += batch.length
            if (batch.length < backupPageRows) break
            const last = batch.at(-1)!
            after = table.key.map((column) => last[column])
          }
          rows[table.name] = count
        }
        const head = await trx
          .selectFrom('chain_blocks')
          .select('log_size')
          .orderBy('height', 'desc')
          .limit(1)
          .executeTakeFirst()
        logSize = head?.log_size ?? 0
      },
    )
    const trailer: BackupTrailer = { end: true, rows, sha256: hash.digest('hex') }
    bytes += writeSync(fd, `${JSON.stringify(trailer)}\n`)
    fsyncSync(fd)
    closeSync(fd)
    renameSync(temporary, file)
  } catch (error) {
    closeSync(fd)
    rmSync(temporary, { force: true })
    throw error
  }
  return { file, rows, logSize, bytes }
}

/** The lines of a backup, each parsed, the trailer last; a line past the bound is refused. */
async function* lines(file: string): AsyncGenerator<{ text: string; value: unknown }> {
  const reader = createInterface({ input: createReadStream(file), crlfDelay: Number.POSITIVE_INFINITY })
  let number = 0
  for await (const text of reader) {
    number++
    if (text.length > backupLineBytesMax)
      throw backupError('backup_malformed', `line ${number} is longer than ${backupLineBytesMax} bytes`)
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch {
      throw backupError('backup_malformed', `line ${number} is not JSON`)
    }
    yield { text, value }
  }
}

/** Reads the file once to check its format, its trailer's checksum and counts; returns its header. */
async function checkBackup(file: string): Promise<{ header: BackupHeader; trailer: BackupTrailer }> {
  const hash = createHash('sha256')
  const counted: Record<string, number> = {}
  let header: BackupHeader | null = null
  let trailer: BackupTrailer | null = null
  const known = new Set(backupTables.map((table) => table.name))
  for await (const { text, value } of lines(file)) {
    if (trailer !== null) throw backupError('backup_malformed', 'lines follow the end of the backup')
    const line = value as Record<string, unknown>
    if (header === null) {
      if (line.format !== backupFormat)
        throw backupError('backup_malformed', `not a ${backupFormat} file: ${JSON.stringify(line.format)}`)
      header = line as unknown as BackupHeader
    } else if (line.end === true) {
      trailer = line as unknown as BackupTrailer
      continue
    } else {
      if (typeof line.t !== 'string' || !known.has(line.t as TableName) || typeof line.r !== 'object')
        throw backupError('backup_malformed', `a row of an unknown table: ${JSON.stringify(line.t)}`)
      counted[line.t] = (counted[line.t] ?? 0) + 1
    }
    hash.update(`${text}\n`)
  }
  if (header === null || trailer === null)
    throw backupError('backup_incomplete', 'the backup ends before its trailer: it was cut short')
  if (hash.digest('hex') !== trailer.sha256)
    throw backupError('backup_corrupt', 'the backup does not match its checksum')
  for (const table of backupTables) {
    if ((counted[table.name] ?? 0) !== (trailer.rows[table.name] ?? 0))
      throw backupError(
        'backup_corrupt',
        `the backup holds another number of ${table.name} rows than it says`,
      )
  }
  return { header, trailer }
}

/**
 * Restores a backup into an empty node database (of any dialect): the file is checked whole first, then
 * every row is written in one transaction. The node's private keys stay encrypted under the master key
 * of the node that made the backup: start the restored node with that key.
 */
export async function restore(database: NodeDatabase, file: string): Promise<BackupSummary> {
  const { header, trailer } = await checkBackup(file)
  const migrations = await appliedMigrations(database.db)
  if (JSON.stringify(migrations) !== JSON.stringify(header.migrations))
    throw backupError(
      'backup_schema_mismatch',
      `the backup's schema (${header.migrations.join(', ')}) is not this database's (${migrations.join(', ')})`,
    )
  const { db } = database
  await db.transaction().execute(async (trx) => {
    for (const table of backupTables) {
      // biome-ignore lint/suspicious/noExplicitAny: the table is chosen at run time from backupTables.
      const held = await (trx as Transaction<any>)
        .selectFrom(table.name)
        .select(sql`1`.as('one'))
        .limit(1)
        .execute()
      if (held.length > 0)
        throw backupError('restore_target_not_empty', `the target database already holds ${table.name} rows`)
    }
    const bytesOf = new Map(backupTables.map((table) => [table.name, table.bytes ?? []]))
    let batch: Record<string, unknown>[] = []
    let batchTable: TableName | null = null
    const flush = async () => {
      if (batchTable !== null && batch.length > 0) await insertRows(trx, batchTable, batch as never[])
      batch = []
    }
    let first = true
    for await (const { value } of lines(file)) {
      if (first) {
        first = false
        continue
      }
      const line = value as { t?: TableName; r?: Record<string, unknown>; end?: true }
      if (line.end === true) break
      const table = line.t!
      const row = line.r!
      for (const column of bytesOf.get(table) ?? []) row[column] = fromBase64(row[column] as string)
      if (table !== batchTable || batch.length === backupPageRows) {
        await flush()
        batchTable = table
      }
      batch.push(row)
    }
    await flush()
    // Serial keys continue after the restored rows (SQLite and MySQL do so by themselves).
    if (dialectOfDb(trx) === 'postgres') {
      for (const [table, column] of [
        ['pool', 'seq'],
        ['ledger_entries', 'seq'],
        ['node_webhook_dead_letters', 'id'],
      ] as const) {
        await sql`select setval(pg_get_serial_sequence(${table}, ${column}), coalesce((select max(${sql.ref(column)}) from ${sql.table(table)}), 0) + 1, false)`.execute(
          trx,
        )
      }
    }
  })
  const head = await db
    .selectFrom('chain_blocks')
    .select('log_size')
    .orderBy('height', 'desc')
    .limit(1)
    .executeTakeFirst()
  return { file, rows: trailer.rows, logSize: head?.log_size ?? 0, bytes: statSync(file).size }
}
