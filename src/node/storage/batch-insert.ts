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
  const mysql = dialectOfDb(db) === 'mysql'
  for (const chunk of statementChunks(rows, columns.length)) {
    // biome-ignore lint/suspicious/noExplicitAny: Kysely's generic insert types cannot follow a table name parameter.
    const query = (db as Kysely<any>).insertInto(table).values(chunk as any[])
    if (upsertKey === undefined) {
      await query.execute()
    } else if (mysql) {
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
