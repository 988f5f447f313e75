import { type Insertable, type Kysely, sql, type Transaction } from 'kysely'
import { dialectOfDb } from '../../storage/connect.js'
import { statementChunks } from '../../storage/statements.js'
import type { Database } from './schema.js'

/**
 * Multi-row insert split into statements that fit the limits. With `upsertKey`, a row whose key exists
 * replaces the stored one (ON CONFLICT ... DO UPDATE; on MySQL, ON DUPLICATE KEY UPDATE), or is left as
 * it is when the key is all the row holds.
 */
type Executor = Kysely<Database> | Transaction<Database>

export async function insertRows<T extends keyof Database & string>(
  db: Executor,
  table: T,
  rows: readonly Insertable<Database[T]>[],
  upsertKey?: readonly string[],
): Promise<void> {
  if (rows.length === 0) return
  const columns = Object.keys(rows[0]!)
  const updated = columns.filter((c) => !upsertKey?.includes(c))
  const dialect = dialectOfDb(db)
  for (const chunk of statementChunks(rows, columns.length)) {
    if (dialect === 'postgres') {
      await insertFromJson(db, table, columns, chunk, upsertKey, updated)
      continue
    }
    // biome-ignore lint/suspicious/noExplicitAny: Kysely's generic insert types cannot follow a table name parameter.
    const query = (db as Kysely<any>).insertInto(table).values(chunk as any[])
    if (upsertKey === undefined) {
      await query.execute()
    } else if (dialect === 'mysql') {
      // `key = key` changes nothing: MySQL's way to leave an existing row as it is.
      const set = updated.length === 0 ? upsertKey.slice(0, 1) : updated
      const value = (c: string) => (updated.length === 0 ? sql.ref(c) : sql`values(${sql.ref(c)})`)
      await query.onDuplicateKeyUpdate(Object.fromEntries(set.map((c) => [c, value(c)])) as never).execute()
    } else if (updated.length === 0) {
      await query.onConflict((conflict) => conflict.columns(upsertKey as never[]).doNothing()).execute()
    } else {
      await query
        .onConflict((conflict) =>
          conflict
            .columns(upsertKey as never[])
            .doUpdateSet(Object.fromEntries(updated.map((c) => [c, sql.ref(`excluded.${c}`)])) as never),
        )
        .execute()
    }
  }
}

/**
 * PostgreSQL: the rows travel as one JSON parameter that the server reads by the table's own column types
 * (json_populate_recordset). A statement of a thousand rows is then as short as one of a single row, and
 * neither side handles thousands of parameters: the funnel's blocks are written in a fraction of the time.
 */
async function insertFromJson(
  db: Executor,
  table: string,
  columns: readonly string[],
  rows: readonly object[],
  upsertKey: readonly string[] | undefined,
  updated: readonly string[],
): Promise<void> {
  const names = sql.join(columns.map((c) => sql.ref(c)))
  const conflict =
    upsertKey === undefined
      ? sql``
      : updated.length === 0
        ? sql`on conflict (${sql.join(upsertKey.map((c) => sql.ref(c)))}) do nothing`
        : sql`on conflict (${sql.join(upsertKey.map((c) => sql.ref(c)))}) do update set ${sql.join(
            updated.map((c) => sql`${sql.ref(c)} = excluded.${sql.ref(c)}`),
          )}`
  await sql`insert into ${sql.table(table)} (${names})
    select ${names} from json_populate_recordset(null::${sql.table(table)}, ${JSON.stringify(rows, jsonValue)}::json)
    ${conflict}`.execute(db)
}

/**
 * Bytes as PostgreSQL's bytea text (hex), read from the row itself: a Buffer would reach the replacer as
 * its toJSON object. A missing value is a null, as it would be in the row.
 */
function jsonValue(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const original = this[key]
  if (original instanceof Uint8Array)
    return `\\x${Buffer.from(original.buffer, original.byteOffset, original.byteLength).toString('hex')}`
  return value === undefined ? null : value
}
