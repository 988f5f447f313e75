import type { Kysely, Transaction } from 'kysely'
import { type BlockHeader, headerHash, type RawBlock } from '../../protocol/block.js'
import { toBase64, utf8 } from '../../protocol/encoding.js'
import { VmError } from '../../protocol/errors.js'
import { Frontier, frontierNodeIds, leafHash, type NodeId, type NodeWrite } from '../../protocol/merkle.js'
import { insertRows } from '../storage/batch-insert.js'
import type { Database } from '../storage/schema.js'

type Executor = Kysely<Database> | Transaction<Database>

export interface LeafWrite {
  readonly index: number
  readonly transactionId: string
  /** The leaf's RFC 8785 text; its UTF-8 bytes are what the leaf hash covers. */
  readonly text: string
}

/** A block's row and its tree nodes: what is written once all its leaves are. */
export interface BlockHeadWrite {
  readonly header: BlockHeader
  readonly signature: string
  /** The C2SP signed note for the log after this block. */
  readonly checkpoint: string
  readonly nodes: readonly NodeWrite[]
}

export interface BlockWrite extends BlockHeadWrite {
  readonly leaves: readonly LeafWrite[]
}

export interface StoredBlockHead {
  readonly header: BlockHeader
  readonly signature: string
}

export async function writeBlock(trx: Executor, block: BlockWrite): Promise<void> {
  await writeLeaves(trx, block.header.height, block.leaves)
  await writeBlockHead(trx, block)
}

/** Leaves of the block at `height`, written in the transaction that writes its head (in parts or at once). */
export async function writeLeaves(
  trx: Executor,
  height: number,
  leaves: readonly LeafWrite[],
): Promise<void> {
  await insertRows(
    trx,
    'chain_leaves',
    leaves.map((leaf) => ({
      leaf_index: leaf.index,
      block_height: height,
      transaction_id: leaf.transactionId,
      leaf: leaf.text,
    })),
  )
}

/** The block's row and tree nodes, after its leaves (writeLeaves) in the same transaction. */
export async function writeBlockHead(trx: Executor, block: BlockHeadWrite): Promise<void> {
  const { header } = block
  await trx
    .insertInto('chain_blocks')
    .values({
      height: header.height,
      header: JSON.stringify(header),
      header_hash: toBase64(headerHash(header)),
      signature: block.signature,
      checkpoint: block.checkpoint,
      first_leaf: header.firstLeaf,
      leaf_count: header.leafCount,
      log_size: header.logSize,
      log_root: header.logRoot,
      time: Date.parse(header.time),
    })
    .execute()
  await insertRows(
    trx,
    'chain_nodes',
    block.nodes.map((node) => ({ level: node.level, node_index: node.index, hash: node.hash })),
  )
}

export async function latestBlock(db: Executor): Promise<StoredBlockHead | null> {
  const row = await db
    .selectFrom('chain_blocks')
    .select(['header', 'signature'])
    .orderBy('height', 'desc')
    .limit(1)
    .executeTakeFirst()
  return row === undefined
    ? null
    : { header: JSON.parse(row.header) as BlockHeader, signature: row.signature }
}

export async function latestCheckpoint(db: Executor): Promise<string | null> {
  const row = await db
    .selectFrom('chain_blocks')
    .select('checkpoint')
    .orderBy('height', 'desc')
    .limit(1)
    .executeTakeFirst()
  return row?.checkpoint ?? null
}

export async function blockAt(db: Executor, height: number): Promise<RawBlock | null> {
  const row = await db
    .selectFrom('chain_blocks')
    .select(['header', 'signature', 'checkpoint'])
    .where('height', '=', height)
    .executeTakeFirst()
  if (row === undefined) return null
  const header = JSON.parse(row.header) as BlockHeader
  const leaves = await leafRange(db, header.firstLeaf, header.firstLeaf + header.leafCount)
  return { header, signature: row.signature, checkpoint: row.checkpoint, leaves }
}

/** The exact bytes of the leaves [start, end). */
export async function leafRange(db: Executor, start: number, end: number): Promise<Uint8Array[]> {
  const rows = await db
    .selectFrom('chain_leaves')
    .select(['leaf_index', 'leaf'])
    .where('leaf_index', '>=', start)
    .where('leaf_index', '<', end)
    .orderBy('leaf_index')
    .execute()
  return rows.map((row) => new Uint8Array(Buffer.from(row.leaf, 'utf8')))
}

/**
 * Perfect-subtree hashes by id. Levels above 0 are stored; a level-0 hash is the hash of its leaf, which
 * is read and hashed (one leaf per proof at most), so the funnel writes one row less per transaction.
 */
export async function readNodes(db: Executor, ids: readonly NodeId[]): Promise<Uint8Array[]> {
  if (ids.length === 0) return []
  const byId = new Map<string, Uint8Array>()
  const leafIndexes = ids.filter((id) => id.level === 0).map((id) => id.index)
  if (leafIndexes.length > 0) {
    const rows = await db
      .selectFrom('chain_leaves')
      .select(['leaf_index', 'leaf'])
      .where('leaf_index', 'in', leafIndexes)
      .execute()
    for (const row of rows) byId.set(`0/${row.leaf_index}`, leafHash(utf8(row.leaf)))
  }
  const inner = ids.filter((id) => id.level > 0)
  if (inner.length > 0) {
    const rows = await db
      .selectFrom('chain_nodes')
      .select(['level', 'node_index', 'hash'])
      .where((eb) =>
        eb.or(inner.map((id) => eb.and([eb('level', '=', id.level), eb('node_index', '=', id.index)]))),
      )
      .execute()
    for (const row of rows) byId.set(`${row.level}/${row.node_index}`, new Uint8Array(row.hash))
  }
  return ids.map((id) => {
    const hash = byId.get(`${id.level}/${id.index}`)
    if (hash === undefined)
      throw new VmError('internal', `tree node ${id.level}/${id.index} is missing`, { status: 500 })
    return hash
  })
}

export async function loadFrontier(db: Executor, size: number): Promise<Frontier> {
  return new Frontier(size, await readNodes(db, frontierNodeIds(size)))
}
