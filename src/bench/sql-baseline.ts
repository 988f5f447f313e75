/**
 * For scale, what a typical SQL ledger does on the same database: unsigned transfers, one per database
 * transaction, each locking both accounts' rows, checking the balance, updating both and recording the
 * transfer. No signatures, no log, no blocks.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Kysely, sql } from 'kysely'
import { connect, type Dialect } from '../storage/connect.js'
import { createTestDatabase, dropTestDatabase } from '../testing/databases.js'

export const baselineAccounts = 256
export const baselineClients = 16
export const baselineMs = 5_000
const startingBalance = 1_000_000_000

interface BaselineSchema {
  baseline_accounts: { id: number; balance: number }
  baseline_transfers: { id?: number; debit: number; credit: number; amount: number }
}

/** Committed transfers per second over `baselineMs`, from `baselineClients` concurrent clients. */
export async function measureSqlBaseline(dialect: Dialect): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'vmoney-baseline-'))
  const url = await createTestDatabase(dir, dialect)
  // SQLite has one writer: more connections would only wait on its lock.
  const clients = dialect === 'sqlite' ? 1 : baselineClients
  const { db } = await connect<BaselineSchema>(url, { connectionsMax: clients, waitMs: 10_000 })
  try {
    const serial =
      dialect === 'postgres' ? 'bigserial' : dialect === 'mysql' ? 'bigint auto_increment' : 'integer'
    await sql`create table baseline_accounts (id bigint primary key, balance bigint not null)`.execute(db)
    await sql`create table baseline_transfers (id ${sql.raw(serial)} primary key, debit bigint not null, credit bigint not null, amount bigint not null)`.execute(
      db,
    )
    await db
      .insertInto('baseline_accounts')
      .values(Array.from({ length: baselineAccounts }, (_, id) => ({ id, balance: startingBalance })))
      .execute()
    const end = performance.now() + baselineMs
    let committed = 0
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < end) {
          const debit = Math.floor(Math.random() * baselineAccounts)
          const credit = (debit + 1 + Math.floor(Math.random() * (baselineAccounts - 1))) % baselineAccounts
          if (await transfer(db, dialect, debit, credit, 1 + Math.floor(Math.random() * 100))) committed++
        }
      }),
    )
    return Math.round(committed / (baselineMs / 1000))
  } finally {
    await db.destroy()
    await dropTestDatabase(dir, dialect)
    rmSync(dir, { recursive: true, force: true })
  }
}

/** One transfer in its own transaction; false when the balance does not cover it. */
async function transfer(
  db: Kysely<BaselineSchema>,
  dialect: Dialect,
  debit: number,
  credit: number,
  amount: number,
): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    // Both rows locked in id order, so that two transfers between the same accounts cannot deadlock.
    let locking = trx
      .selectFrom('baseline_accounts')
      .select(['id', 'balance'])
      .where('id', 'in', [debit, credit])
      .orderBy('id')
    if (dialect !== 'sqlite') locking = locking.forUpdate()
    const rows = await locking.execute()
    const from = rows.find((row) => Number(row.id) === debit)
    if (from === undefined || Number(from.balance) < amount) return false
    await trx
      .updateTable('baseline_accounts')
      .set({ balance: sql`balance - ${amount}` })
      .where('id', '=', debit)
      .execute()
    await trx
      .updateTable('baseline_accounts')
      .set({ balance: sql`balance + ${amount}` })
      .where('id', '=', credit)
      .execute()
    await trx.insertInto('baseline_transfers').values({ debit, credit, amount }).execute()
    return true
  })
}
