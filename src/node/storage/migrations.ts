import { type Expression, type Kysely, type Migration, type MigrationProvider, Migrator, sql } from 'kysely'
import { VmError } from '../../protocol/errors.js'
import type { Dialect } from '../../storage/connect.js'

/**
 * Versioned migrations, applied at start and by `vmoney migrate`. Each is written once with Kysely's
 * schema builder; where SQL differs between dialects the difference lives in these column types.
 */
/** A column's SQL type, as the dialect spells it. */
type ColumnType = Expression<unknown>

interface ColumnTypes {
  /** Positions, heights, times in ms and counts: 64-bit. */
  readonly integer: ColumnType
  /** Text compared byte by byte (as SQLite does), so that ordering and cursors agree on every dialect. */
  readonly text: ColumnType
  readonly bytes: ColumnType
  /** Amounts in minor units, exact up to 128 bits (39 digits), signed. */
  readonly amount: ColumnType
  /** An integer key assigned in insertion order. */
  readonly serial: ColumnType
  /**
   * SQLite stores a table keyed by something other than an integer in its key's B-tree (one write per
   * row, not two). An integer `seq` primary key is SQLite's rowid: assigned in order, never reused here,
   * since rows are never deleted.
   */
  readonly keyed: ColumnType
}

function columnTypes(dialect: Dialect): ColumnTypes {
  if (dialect === 'postgres') {
    return {
      integer: sql`bigint`,
      text: sql`text collate "C"`,
      bytes: sql`bytea`,
      amount: sql`numeric(40, 0)`,
      serial: sql`bigserial`,
      keyed: sql``,
    }
  }
  // SQLite has no 128-bit integers: amounts are decimal text there, exact all the same.
  return {
    integer: sql`integer`,
    text: sql`text`,
    bytes: sql`blob`,
    amount: sql`text`,
    serial: sql`integer`,
    keyed: sql`without rowid`,
  }
}

function migrations(dialect: Dialect): Record<string, Migration> {
  const { integer, text, bytes, amount, serial, keyed } = columnTypes(dialect)
  return {
    '0001-core': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('pool')
          .addColumn('seq', serial, (c) => c.primaryKey())
          .addColumn('id', text, (c) => c.notNull().unique())
          .addColumn('content_hash', text, (c) => c.notNull())
          .addColumn('signed', text, (c) => c.notNull())
          .addColumn('type', text, (c) => c.notNull())
          .addColumn('signer', text, (c) => c.notNull())
          .addColumn('linked', integer, (c) => c.notNull())
          .addColumn('status', text, (c) => c.notNull())
          .addColumn('code', integer)
          .addColumn('code_name', text)
          .addColumn('block_height', integer)
          .addColumn('received_at', integer, (c) => c.notNull())
          .addColumn('decided_at', integer)
          .execute()
        // Only undecided rows are indexed: the funnel finds them at start without scanning the decided past.
        await db.schema
          .createIndex('pool_pending')
          .on('pool')
          .column('seq')
          .where(sql.ref('status'), '=', 'pending')
          .execute()
        await db.schema.createIndex('pool_content_hash').on('pool').column('content_hash').execute()

        await db.schema
          .createTable('chain_blocks')
          .addColumn('height', integer, (c) => c.primaryKey())
          .addColumn('header', text, (c) => c.notNull())
          .addColumn('header_hash', text, (c) => c.notNull().unique())
          .addColumn('signature', text, (c) => c.notNull())
          .addColumn('checkpoint', text, (c) => c.notNull())
          .addColumn('first_leaf', integer, (c) => c.notNull())
          .addColumn('leaf_count', integer, (c) => c.notNull())
          .addColumn('log_size', integer, (c) => c.notNull())
          .addColumn('log_root', text, (c) => c.notNull())
          .addColumn('time', integer, (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('chain_leaves')
          .addColumn('leaf_index', integer, (c) => c.primaryKey())
          .addColumn('block_height', integer, (c) => c.notNull())
          .addColumn('transaction_id', text, (c) => c.notNull().unique())
          .addColumn('leaf', text, (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('chain_nodes')
          .addColumn('level', integer, (c) => c.notNull())
          .addColumn('node_index', integer, (c) => c.notNull())
          .addColumn('hash', bytes, (c) => c.notNull())
          .addPrimaryKeyConstraint('chain_nodes_pk', ['level', 'node_index'])
          .modifyEnd(keyed)
          .execute()

        await db.schema
          .createTable('ledger_persons')
          .addColumn('id', text, (c) => c.primaryKey())
          .addColumn('kind', text, (c) => c.notNull())
          .addColumn('person', text, (c) => c.notNull())
          .addColumn('roles', text, (c) => c.notNull())
          .addColumn('kyc', text, (c) => c.notNull())
          .addColumn('created_leaf', integer, (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('ledger_keys')
          .addColumn('key_id', text, (c) => c.primaryKey())
          .addColumn('person_id', text, (c) => c.notNull())
          .addColumn('device_key', text, (c) => c.notNull())
          .addColumn('revoked', integer, (c) => c.notNull())
          .addColumn('added_leaf', integer, (c) => c.notNull())
          .addColumn('revoked_leaf', integer)
          .execute()
        await db.schema.createIndex('ledger_keys_person').on('ledger_keys').column('person_id').execute()
        await db.schema
          .createTable('ledger_assets')
          .addColumn('id', text, (c) => c.primaryKey())
          .addColumn('issuer', text, (c) => c.notNull())
          .addColumn('scale', integer, (c) => c.notNull())
          .addColumn('name', text, (c) => c.notNull())
          .addColumn('created_leaf', integer, (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('ledger_accounts')
          .addColumn('id', text, (c) => c.primaryKey())
          .addColumn('owner', text, (c) => c.notNull())
          .addColumn('asset', text, (c) => c.notNull())
          .addColumn('flags', text, (c) => c.notNull())
          .addColumn('issuance_limit', amount)
          .addColumn('debits_pending', amount, (c) => c.notNull())
          .addColumn('debits_posted', amount, (c) => c.notNull())
          .addColumn('credits_pending', amount, (c) => c.notNull())
          .addColumn('credits_posted', amount, (c) => c.notNull())
          .addColumn('closed', integer, (c) => c.notNull())
          .addColumn('created_leaf', integer, (c) => c.notNull())
          .execute()
        await db.schema.createIndex('ledger_accounts_owner').on('ledger_accounts').column('owner').execute()
        await db.schema
          .createTable('ledger_transfers')
          .addColumn('id', text, (c) => c.primaryKey())
          .addColumn('debit', text, (c) => c.notNull())
          .addColumn('credit', text, (c) => c.notNull())
          .addColumn('asset', text, (c) => c.notNull())
          .addColumn('amount', amount, (c) => c.notNull())
          .addColumn('state', text, (c) => c.notNull())
          .addColumn('expires_at', integer)
          .addColumn('posted_amount', amount)
          .addColumn('memo', text)
          .addColumn('leaf', integer, (c) => c.notNull())
          .addColumn('time', integer, (c) => c.notNull())
          .modifyEnd(keyed)
          .execute()
        // The funnel loads the two-phase transfers at start; single-phase ones stay out of this index.
        await db.schema
          .createIndex('ledger_transfers_two_phase')
          .on('ledger_transfers')
          .column('id')
          .where(sql.ref('expires_at'), 'is not', null)
          .execute()
        await db.schema
          .createTable('ledger_entries')
          .addColumn('seq', serial, (c) => c.primaryKey())
          .addColumn('account', text, (c) => c.notNull())
          .addColumn('leaf', integer, (c) => c.notNull())
          .addColumn('transaction_id', text, (c) => c.notNull())
          .addColumn('transfer_id', text, (c) => c.notNull())
          .addColumn('kind', text, (c) => c.notNull())
          .addColumn('phase', text, (c) => c.notNull())
          .addColumn('amount', amount, (c) => c.notNull())
          .addColumn('time', integer, (c) => c.notNull())
          .execute()
        await db.schema
          .createIndex('ledger_entries_account_seq')
          .on('ledger_entries')
          .columns(['account', 'seq'])
          .execute()

        await db.schema
          .createTable('node_settings')
          .addColumn('name', text, (c) => c.primaryKey())
          .addColumn('value', text, (c) => c.notNull())
          .addColumn('updated_at', integer, (c) => c.notNull())
          .execute()
      },
    },
    /**
     * Views (seed 000: "views on other people data"). Read-only keys need no column: a key's `use` lives in
     * its `device_key` JSON. A view's accounts are also rows of a table keyed by account first, because the
     * api asks "which views cover this account" on every read of another person's account.
     */
    '0002-views': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('ledger_views')
          .addColumn('id', text, (c) => c.primaryKey())
          .addColumn('grantor', text, (c) => c.notNull())
          .addColumn('grantee', text)
          .addColumn('accounts', text, (c) => c.notNull())
          .addColumn('from_time', integer, (c) => c.notNull())
          .addColumn('until_time', integer, (c) => c.notNull())
          .addColumn('revoked', integer, (c) => c.notNull())
          .addColumn('created_leaf', integer, (c) => c.notNull())
          .addColumn('revoked_leaf', integer)
          .execute()
        await db.schema.createIndex('ledger_views_grantor').on('ledger_views').column('grantor').execute()
        await db.schema.createIndex('ledger_views_grantee').on('ledger_views').column('grantee').execute()
        await db.schema
          .createTable('ledger_view_accounts')
          .addColumn('account', text, (c) => c.notNull())
          .addColumn('view_id', text, (c) => c.notNull())
          .addPrimaryKeyConstraint('ledger_view_accounts_pk', ['account', 'view_id'])
          .modifyEnd(keyed)
          .execute()
        await db.schema
          .createIndex('ledger_view_accounts_view')
          .on('ledger_view_accounts')
          .column('view_id')
          .execute()
      },
    },
  }
}

class StaticMigrationProvider implements MigrationProvider {
  readonly #dialect: Dialect
  constructor(dialect: Dialect) {
    this.#dialect = dialect
  }
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations(this.#dialect)
  }
}

export async function migrateToLatest(db: Kysely<unknown>, dialect: Dialect): Promise<readonly string[]> {
  const migrator = new Migrator({ db, provider: new StaticMigrationProvider(dialect) })
  const { error, results } = await migrator.migrateToLatest()
  if (error !== undefined) {
    throw new VmError(
      'migration_failed',
      `database migration failed: ${String((error as Error).message ?? error)}`,
      {
        status: 500,
        cause: error,
      },
    )
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName)
}
