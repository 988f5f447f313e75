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
  /**
   * Identifiers and short names, indexed and compared byte by byte (as SQLite does), so that ordering and
   * cursors agree on every dialect. None is longer than 255 characters (the protocol's patterns).
   */
  readonly key: ColumnType
  /** Text of any length: signed transactions, leaves, JSON documents. */
  readonly document: ColumnType
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
      key: sql`text collate "C"`,
      document: sql`text`,
      bytes: sql`bytea`,
      amount: sql`numeric(40, 0)`,
      serial: sql`bigserial`,
      keyed: sql``,
    }
  }
  // SQLite has no 128-bit integers: amounts are decimal text there, exact all the same.
  if (dialect === 'mysql') {
    return {
      integer: sql`bigint`,
      key: sql`varchar(255) character set utf8mb4 collate utf8mb4_bin`,
      document: sql`longtext character set utf8mb4 collate utf8mb4_bin`,
      bytes: sql`longblob`,
      amount: sql`decimal(40, 0)`,
      serial: sql`bigint auto_increment`,
      keyed: sql``,
    }
  }
  return {
    integer: sql`integer`,
    key: sql`text`,
    document: sql`text`,
    bytes: sql`blob`,
    amount: sql`text`,
    serial: sql`integer`,
    keyed: sql`without rowid`,
  }
}

function migrations(dialect: Dialect): Record<string, Migration> {
  const { integer, key, document, bytes, amount, serial, keyed } = columnTypes(dialect)
  return {
    '0001-core': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('pool')
          .addColumn('seq', serial, (c) => c.primaryKey())
          .addColumn('id', key, (c) => c.notNull().unique())
          .addColumn('content_hash', key, (c) => c.notNull())
          .addColumn('signed', document, (c) => c.notNull())
          .addColumn('type', key, (c) => c.notNull())
          .addColumn('signer', key, (c) => c.notNull())
          .addColumn('linked', integer, (c) => c.notNull())
          .addColumn('status', key, (c) => c.notNull())
          .addColumn('code', integer)
          .addColumn('code_name', key)
          .addColumn('block_height', integer)
          .addColumn('received_at', integer, (c) => c.notNull())
          .addColumn('decided_at', integer)
          .execute()
        // Only undecided rows are indexed: the funnel finds them at start without scanning the decided past.
        // MySQL has no partial indexes: there the status leads the index, which serves the same query.
        const pending = db.schema.createIndex('pool_pending').on('pool')
        await (dialect === 'mysql'
          ? pending.columns(['status', 'seq'])
          : pending.column('seq').where(sql.ref('status'), '=', 'pending')
        ).execute()
        await db.schema.createIndex('pool_content_hash').on('pool').column('content_hash').execute()

        await db.schema
          .createTable('chain_blocks')
          .addColumn('height', integer, (c) => c.primaryKey())
          .addColumn('header', document, (c) => c.notNull())
          .addColumn('header_hash', key, (c) => c.notNull().unique())
          .addColumn('signature', document, (c) => c.notNull())
          .addColumn('checkpoint', document, (c) => c.notNull())
          .addColumn('first_leaf', integer, (c) => c.notNull())
          .addColumn('leaf_count', integer, (c) => c.notNull())
          .addColumn('log_size', integer, (c) => c.notNull())
          .addColumn('log_root', key, (c) => c.notNull())
          .addColumn('time', integer, (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('chain_leaves')
          .addColumn('leaf_index', integer, (c) => c.primaryKey())
          .addColumn('block_height', integer, (c) => c.notNull())
          .addColumn('transaction_id', key, (c) => c.notNull().unique())
          .addColumn('leaf', document, (c) => c.notNull())
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
          .addColumn('id', key, (c) => c.primaryKey())
          .addColumn('kind', key, (c) => c.notNull())
          .addColumn('person', document, (c) => c.notNull())
          .addColumn('roles', document, (c) => c.notNull())
          .addColumn('kyc', document, (c) => c.notNull())
          .addColumn('created_leaf', integer, (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('ledger_keys')
          .addColumn('key_id', key, (c) => c.primaryKey())
          .addColumn('person_id', key, (c) => c.notNull())
          .addColumn('device_key', document, (c) => c.notNull())
          .addColumn('revoked', integer, (c) => c.notNull())
          .addColumn('added_leaf', integer, (c) => c.notNull())
          .addColumn('revoked_leaf', integer)
          .execute()
        await db.schema.createIndex('ledger_keys_person').on('ledger_keys').column('person_id').execute()
        await db.schema
          .createTable('ledger_assets')
          .addColumn('id', key, (c) => c.primaryKey())
          .addColumn('issuer', key, (c) => c.notNull())
          .addColumn('scale', integer, (c) => c.notNull())
          .addColumn('name', document, (c) => c.notNull())
          .addColumn('created_leaf', integer, (c) => c.notNull())
          .execute()
        await db.schema
          .createTable('ledger_accounts')
          .addColumn('id', key, (c) => c.primaryKey())
          .addColumn('owner', key, (c) => c.notNull())
          .addColumn('asset', key, (c) => c.notNull())
          .addColumn('flags', document, (c) => c.notNull())
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
          .addColumn('id', key, (c) => c.primaryKey())
          .addColumn('debit', key, (c) => c.notNull())
          .addColumn('credit', key, (c) => c.notNull())
          .addColumn('asset', key, (c) => c.notNull())
          .addColumn('amount', amount, (c) => c.notNull())
          .addColumn('state', key, (c) => c.notNull())
          .addColumn('expires_at', integer)
          .addColumn('posted_amount', amount)
          .addColumn('memo', document)
          .addColumn('leaf', integer, (c) => c.notNull())
          .addColumn('time', integer, (c) => c.notNull())
          .modifyEnd(keyed)
          .execute()
        // The funnel loads the two-phase transfers at start; single-phase ones stay out of this index (on
        // MySQL, without partial indexes, they sort first under their null expiry).
        const twoPhase = db.schema.createIndex('ledger_transfers_two_phase').on('ledger_transfers')
        await (dialect === 'mysql'
          ? twoPhase.columns(['expires_at', 'id'])
          : twoPhase.column('id').where(sql.ref('expires_at'), 'is not', null)
        ).execute()
        await db.schema
          .createTable('ledger_entries')
          .addColumn('seq', serial, (c) => c.primaryKey())
          .addColumn('account', key, (c) => c.notNull())
          .addColumn('leaf', integer, (c) => c.notNull())
          .addColumn('transaction_id', key, (c) => c.notNull())
          .addColumn('transfer_id', key, (c) => c.notNull())
          .addColumn('kind', key, (c) => c.notNull())
          .addColumn('phase', key, (c) => c.notNull())
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
          .addColumn('name', key, (c) => c.primaryKey())
          .addColumn('value', document, (c) => c.notNull())
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
          .addColumn('id', key, (c) => c.primaryKey())
          .addColumn('grantor', key, (c) => c.notNull())
          .addColumn('grantee', key)
          .addColumn('accounts', document, (c) => c.notNull())
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
          .addColumn('account', key, (c) => c.notNull())
          .addColumn('view_id', key, (c) => c.notNull())
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
    /** The funnel's lease: which process sequences, until when, and the epoch that fences the others. */
    '0003-funnel-lease': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('node_leases')
          .addColumn('name', key, (c) => c.primaryKey())
          .addColumn('holder', key, (c) => c.notNull())
          .addColumn('epoch', integer, (c) => c.notNull())
          .addColumn('expires_at', integer, (c) => c.notNull())
          .execute()
      },
    },
    /**
     * Operators' webhooks: each delivers the committed log's events from its own cursor; batches that
     * failed every attempt wait in a dead-letter list until replayed. Rows are never deleted (a removed
     * webhook is marked so), which keeps SQLite's integer keys unique for good.
     */
    '0004-webhooks': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('node_webhooks')
          .addColumn('id', key, (c) => c.primaryKey())
          .addColumn('url', document, (c) => c.notNull())
          .addColumn('secret', document, (c) => c.notNull())
          .addColumn('events', document, (c) => c.notNull())
          .addColumn('cursor_height', integer, (c) => c.notNull())
          .addColumn('cursor_seq', integer, (c) => c.notNull())
          .addColumn('removed', integer, (c) => c.notNull())
          .addColumn('created_at', integer, (c) => c.notNull())
          .addColumn('last_error', document)
          .execute()
        await db.schema
          .createTable('node_webhook_dead_letters')
          .addColumn('id', serial, (c) => c.primaryKey())
          .addColumn('webhook_id', key, (c) => c.notNull())
          .addColumn('events', document, (c) => c.notNull())
          .addColumn('event_count', integer, (c) => c.notNull())
          .addColumn('attempts', integer, (c) => c.notNull())
          .addColumn('last_error', document, (c) => c.notNull())
          .addColumn('failed_at', integer, (c) => c.notNull())
          .addColumn('state', key, (c) => c.notNull())
          .addColumn('replayed_at', integer)
          .execute()
        await db.schema
          .createIndex('node_webhook_dead_letters_webhook')
          .on('node_webhook_dead_letters')
          .columns(['webhook_id', 'state', 'id'])
          .execute()
      },
    },
    /** The changefeed asks of each new block whether it added or revoked keys or revoked views. */
    '0005-rights-by-leaf': {
      async up(db: Kysely<unknown>) {
        await db.schema.createIndex('ledger_keys_added_leaf').on('ledger_keys').column('added_leaf').execute()
        await db.schema
          .createIndex('ledger_keys_revoked_leaf')
          .on('ledger_keys')
          .column('revoked_leaf')
          .execute()
        await db.schema
          .createIndex('ledger_views_revoked_leaf')
          .on('ledger_views')
          .column('revoked_leaf')
          .execute()
      },
    },
  }
}

/** The migrations' names, in the order they apply. */
export function migrationNames(dialect: Dialect): string[] {
  return Object.keys(migrations(dialect))
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
