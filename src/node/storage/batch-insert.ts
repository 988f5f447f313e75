import type { Insertable, Kysely, Transaction } from 'kysely'
import type { Database } from './schema.js'

/** SQLite allows 32,766 bound parameters per statement; stay below with room to spare. */
export const parametersPerStatementMax = 30_000

type Executor = Kysely<Database> | Transaction<Database>

/** Multi-row insert split into statements that fit the parameter limit. */
export async function insertRows<T extends keyof Database & string>(
  db: Executor,
  table: T,
  rows: readonly Insertable<Database[T]>[],
  upsertKey?: readonly string[],
): Promise<void> {
  if (rows.length === 0) return
  const columns = Object.keys(rows[0]!)
  const rowsPerStatement = Math.max(1, Math.floor(parametersPerStatementMax / columns.length))
  for (let start = 0; start < rows.length; start += rowsPerStatement) {
    const chunk = rows.slice(start, start + rowsPerStatement)
    // biome-ignore lint/suspicious/noExplicitAny: Kysely's generic insert types cannot follow a table name parameter.
    const query = (db as Kysely<any>).insertInto(table).values(chunk as any[])
    if (upsertKey === undefined) {
      await query.execute()
      continue
    }
    const updated = columns.filter((c) => !upsertKey.includes(c))
    // biome-ignore lint/suspicious/noExplicitAny: as above.
    const upsert = (conflict: any) =>
      conflict
        .columns(upsertKey)
        .doUpdateSet((eb: { ref(column: string): unknown }) =>
          Object.fromEntries(updated.map((c) => [c, eb.ref(`excluded.${c}`)])),
        )
    await query.onConflict(upsert).execute()
  }
}
