import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from 'kysely'
import { VmError } from '../protocol/errors.js'
import { leafHash } from '../protocol/merkle.js'
import type { Dialect } from '../storage/connect.js'
import { statementChunks } from '../storage/statements.js'
import { leafPages } from './browser-store.js'

/**
 * The browser's schema, versioned. Its own migration tables keep it apart from the node's, should both
 * ever share one database. Where SQL differs between dialects the difference lives here only.
 */
function migrations(dialect: Dialect): Record<string, Migration> {
  // Log positions and times can pass 2^31: PostgreSQL needs bigint (SQLite's integer is 64-bit already).
  const count = dialect === 'postgres' ? 'bigint' : 'integer'
  const bytes = dialect === 'postgres' ? 'bytea' : 'blob'
  // SQLite stores tables with a composite key in the key's own B-tree: one write per row, not two.
  const keyed = dialect === 'sqlite' ? sql`without rowid` : sql``

  return {
    '0001-browser': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('browser_blocks')
          .addColumn('node', 'text', (c) => c.notNull())
          .addColumn('height', count, (c) => c.notNull())
          .addColumn('header', 'text', (c) => c.notNull())
          .addColumn('header_hash', 'text', (c) => c.notNull())
          .addColumn('signature', 'text', (c) => c.notNull())
          .addColumn('checkpoint', 'text', (c) => c.notNull())
          .addColumn('first_leaf', count, (c) => c.notNull())
          .addColumn('leaf_count', count, (c) => c.notNull())
          .addColumn('log_size', count, (c) => c.notNull())
          .addColumn('log_root', 'text', (c) => c.notNull())
          .addColumn('time', count, (c) => c.notNull())
          .addColumn('received_at', count, (c) => c.notNull())
          .addPrimaryKeyConstraint('browser_blocks_pk', ['node', 'height'])
          .modifyEnd(keyed)
          .execute()
        await db.schema
          .createTable('browser_leaves')
          .addColumn('node', 'text', (c) => c.notNull())
          .addColumn('leaf_index', count, (c) => c.notNull())
          .addColumn('block_height', count, (c) => c.notNull())
          .addColumn('leaf', bytes, (c) => c.notNull())
          .addPrimaryKeyConstraint('browser_leaves_pk', ['node', 'leaf_index'])
          .modifyEnd(keyed)
          .execute()
        await db.schema
          .createTable('browser_tree_nodes')
          .addColumn('node', 'text', (c) => c.notNull())
          .addColumn('level', 'integer', (c) => c.notNull())
          .addColumn('node_index', count, (c) => c.notNull())
          .addColumn('hash', bytes, (c) => c.notNull())
          .addPrimaryKeyConstraint('browser_tree_nodes_pk', ['node', 'level', 'node_index'])
          .modifyEnd(keyed)
          .execute()
        await db.schema
          .createTable('browser_recipients')
          .addColumn('node', 'text', (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('leaf_index', count, (c) => c.notNull())
          .addPrimaryKeyConstraint('browser_recipients_pk', ['node', 'key_id', 'leaf_index'])
          .modifyEnd(keyed)
          .execute()
        await db.schema
          .createTable('browser_alarms')
          .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) => c.primaryKey())
          .addColumn('node', 'text', (c) => c.notNull())
          .addColumn('height', count)
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('held_hash', 'text')
          .addColumn('offered_hash', 'text')
          .addColumn('evidence', 'text', (c) => c.notNull())
          .addColumn('fingerprint', 'text', (c) => c.notNull().unique())
          .addColumn('time', count, (c) => c.notNull())
          .execute()
        await db.schema
          .createIndex('browser_alarms_node')
          .on('browser_alarms')
          .columns(['node', 'id'])
          .execute()
      },
    },
    // Leaf hashes join the tree nodes as level 0: proofs, level-0 tiles and pages of leaf hashes then
    // read 32 bytes a leaf instead of the leaf. Leaves accepted before are hashed here, a page at a time.
    '0002-leaf-hashes': {
      async up(db: Kysely<unknown>) {
        let after: { node: string; index: number } | null = null
        for (;;) {
          const page: { node: string; leaf_index: number | string; leaf: Uint8Array }[] = (
            await sql<{ node: string; leaf_index: number | string; leaf: Uint8Array }>`
              select node, leaf_index, leaf from browser_leaves
              ${after === null ? sql`` : sql`where (node, leaf_index) > (${after.node}, ${after.index})`}
              order by node, leaf_index limit ${backfillLeavesPerPage}`.execute(db)
          ).rows
          if (page.length === 0) return
          await sql`insert into browser_tree_nodes (node, level, node_index, hash) values ${sql.join(
            page.map((row) => sql`(${row.node}, 0, ${Number(row.leaf_index)}, ${leafHash(row.leaf)})`),
          )}`.execute(db)
          const last = page.at(-1)!
          after = { node: last.node, index: Number(last.leaf_index) }
        }
      },
    },
    // Leaves move into pages (schema.ts, LeafPageTable): serving a block read one row a leaf, which cost
    // more than everything else in a full download. Blocks are moved one at a time.
    '0003-leaf-pages': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('browser_leaf_pages')
          .addColumn('node', 'text', (c) => c.notNull())
          .addColumn('first_leaf', count, (c) => c.notNull())
          .addColumn('leaf_count', 'integer', (c) => c.notNull())
          .addColumn('leaves', bytes, (c) => c.notNull())
          .addColumn('leaf_hashes', bytes, (c) => c.notNull())
          .addPrimaryKeyConstraint('browser_leaf_pages_pk', ['node', 'first_leaf'])
          .execute()
        // Ciphertext does not compress: PostgreSQL stores the pages out of line as they are.
        if (dialect === 'postgres')
          await sql`alter table browser_leaf_pages alter column leaves set storage external`.execute(db)
        let after: { node: string; height: number } | null = null
        for (;;) {
          const blocks: {
            node: string
            height: number | string
            first_leaf: number | string
            leaf_count: number
          }[] = (
            await sql<{
              node: string
              height: number | string
              first_leaf: number | string
              leaf_count: number
            }>`
                select node, height, first_leaf, leaf_count from browser_blocks
                ${after === null ? sql`` : sql`where (node, height) > (${after.node}, ${after.height})`}
                order by node, height limit ${backfillBlocksPerPage}`.execute(db)
          ).rows
          if (blocks.length === 0) break
          for (const block of blocks) {
            const firstLeaf = Number(block.first_leaf)
            const leaves = (
              await sql<{ leaf: Uint8Array }>`
                select leaf from browser_leaves where node = ${block.node}
                and leaf_index >= ${firstLeaf} and leaf_index < ${firstLeaf + block.leaf_count}
                order by leaf_index`.execute(db)
            ).rows.map((row) => row.leaf)
            const pages = leafPages(firstLeaf, leaves, leaves.map(leafHash))
            for (const chunk of statementChunks(pages, 5)) {
              await sql`insert into browser_leaf_pages (node, first_leaf, leaf_count, leaves, leaf_hashes) values ${sql.join(
                chunk.map(
                  (page) =>
                    sql`(${block.node}, ${page.firstLeaf}, ${page.leafCount}, ${page.leaves}, ${page.leafHashes})`,
                ),
              )}`.execute(db)
            }
          }
          const last = blocks.at(-1)!
          after = { node: last.node, height: Number(last.height) }
        }
        await db.schema.dropTable('browser_leaves').execute()
      },
    },
  }
}

/** Leaves hashed per statement by the level-0 backfill: 3 parameters each, within every dialect's limit. */
const backfillLeavesPerPage = 4096
/** Blocks listed per query by the leaf-page backfill; their leaves are then moved one block at a time. */
const backfillBlocksPerPage = 256

class StaticMigrationProvider implements MigrationProvider {
  readonly #dialect: Dialect
  constructor(dialect: Dialect) {
    this.#dialect = dialect
  }
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations(this.#dialect)
  }
}

/** Brings the schema up to date; safe to run at every start (applied versions are skipped). */
export async function migrateBrowser(db: Kysely<unknown>, dialect: Dialect): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: new StaticMigrationProvider(dialect),
    migrationTableName: 'browser_migration',
    migrationLockTableName: 'browser_migration_lock',
  })
  const { error } = await migrator.migrateToLatest()
  if (error !== undefined) {
    throw new VmError('migration_failed', `browser database migration failed: ${(error as Error).message}`, {
      status: 500,
      cause: error,
    })
  }
}
