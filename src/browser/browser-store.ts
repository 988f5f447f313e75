import type { Insertable, Kysely, Transaction } from 'kysely'
import type { Block, BlockHeader } from '../protocol/block.js'
import { concatBytes } from '../protocol/encoding.js'
import { assert, VmError } from '../protocol/errors.js'
import { hashSize } from '../protocol/hash.js'
import { decodeLeafPage, encodeLeafPage } from '../protocol/leaf-page.js'
import { Frontier, frontierNodeIds, type NodeId, type NodeWrite } from '../protocol/merkle.js'
import { statementChunks } from '../storage/statements.js'
import type { AlarmTable, BrowserSchema } from './schema.js'

/** Everything the browser reads and writes, per followed node. One block is written in one transaction. */
type Executor = Kysely<BrowserSchema> | Transaction<BrowserSchema>

export interface StoredHeader {
  readonly header: BlockHeader
  readonly signature: string
  readonly headerHash: string
}

export interface BlockWrite {
  readonly block: Block
  readonly headerHash: string
  readonly leaves: readonly Uint8Array[]
  /** The leaves' hashes, in order. */
  readonly leafHashes: readonly Uint8Array[]
  /** Every perfect subtree above the leaves that the block's leaves complete. */
  readonly nodes: readonly NodeWrite[]
  readonly recipients: readonly { readonly keyId: string; readonly leafIndex: number }[]
  readonly receivedAt: number
}

export interface BlockSummary {
  readonly height: number
  readonly time: string
  readonly leafCount: number
  readonly logSize: number
  readonly logRoot: string
  readonly headerHash: string
}

async function insertChunked<T extends keyof BrowserSchema & string>(
  db: Executor,
  table: T,
  rows: readonly Insertable<BrowserSchema[T]>[],
): Promise<void> {
  if (rows.length === 0) return
  // biome-ignore lint/suspicious/noExplicitAny: Kysely's insert types cannot follow a table name parameter.
  const untyped = db as Kysely<any>
  for (const chunk of statementChunks(rows, Object.keys(rows[0]!).length)) {
    await untyped
      .insertInto(table)
      .values(chunk as never)
      .execute()
  }
}

/** Writes a checked block, its leaves, tree nodes and recipients: all of it or, on any failure, none. */
export async function appendBlock(db: Kysely<BrowserSchema>, node: string, write: BlockWrite): Promise<void> {
  const { header } = write.block
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto('browser_blocks')
      .values({
        node,
        height: header.height,
        header: JSON.stringify(header),
        header_hash: write.headerHash,
        signature: write.block.signature,
        checkpoint: write.block.checkpoint,
        first_leaf: header.firstLeaf,
        leaf_count: header.leafCount,
        log_size: header.logSize,
        log_root: header.logRoot,
        time: Date.parse(header.time),
        received_at: write.receivedAt,
      })
      .execute()
    await insertChunked(
      trx,
      'browser_leaf_pages',
      leafPages(header.firstLeaf, write.leaves, write.leafHashes).map((page) => ({
        node,
        first_leaf: page.firstLeaf,
        leaf_count: page.leafCount,
        leaves: page.leaves,
        leaf_hashes: page.leafHashes,
      })),
    )
    await insertChunked(
      trx,
      'browser_tree_nodes',
      write.nodes.map((n) => ({ node, level: n.level, node_index: n.index, hash: n.hash })),
    )
    await insertChunked(
      trx,
      'browser_recipients',
      write.recipients.map((r) => ({ node, key_id: r.keyId, leaf_index: r.leafIndex })),
    )
  })
}

function headerRow(row: { header: string; signature: string; header_hash: string }): StoredHeader {
  return {
    header: JSON.parse(row.header) as BlockHeader,
    signature: row.signature,
    headerHash: row.header_hash,
  }
}

/** The newest block's signed header, or null before the first block. */
export async function storedHead(db: Executor, node: string): Promise<StoredHeader | null> {
  const row = await db
    .selectFrom('browser_blocks')
    .select(['header', 'signature', 'header_hash'])
    .where('node', '=', node)
    .orderBy('height', 'desc')
    .limit(1)
    .executeTakeFirst()
  return row === undefined ? null : headerRow(row)
}

export async function storedHeaderAt(
  db: Executor,
  node: string,
  height: number,
): Promise<StoredHeader | null> {
  const row = await db
    .selectFrom('browser_blocks')
    .select(['header', 'signature', 'header_hash'])
    .where('node', '=', node)
    .where('height', '=', height)
    .executeTakeFirst()
  return row === undefined ? null : headerRow(row)
}

export async function latestCheckpoint(db: Executor, node: string): Promise<string | null> {
  const row = await db
    .selectFrom('browser_blocks')
    .select('checkpoint')
    .where('node', '=', node)
    .orderBy('height', 'desc')
    .limit(1)
    .executeTakeFirst()
  return row?.checkpoint ?? null
}

/** A stored block: its signed header and checkpoint, and its leaves as the pages they are stored in. */
export interface StoredBlock {
  readonly header: BlockHeader
  readonly signature: string
  readonly checkpoint: string
  /** Leaf pages (leaf-page.ts) in order; joined, they are one page of the block's leaves. */
  readonly pages: readonly Uint8Array[]
}

export async function blockAt(db: Executor, node: string, height: number): Promise<StoredBlock | null> {
  const row = await db
    .selectFrom('browser_blocks')
    .select(['header', 'signature', 'checkpoint'])
    .where('node', '=', node)
    .where('height', '=', height)
    .executeTakeFirst()
  if (row === undefined) return null
  const header = JSON.parse(row.header) as BlockHeader
  // A block's pages hold its leaves only: the pages that start inside it are all of them.
  const pages = await db
    .selectFrom('browser_leaf_pages')
    .select('leaves')
    .where('node', '=', node)
    .where('first_leaf', '>=', header.firstLeaf)
    .where('first_leaf', '<', header.logSize)
    .orderBy('first_leaf')
    .execute()
  return {
    header,
    signature: row.signature,
    checkpoint: row.checkpoint,
    pages: pages.map((page) => page.leaves),
  }
}

/** The newest blocks, newest first. */
export async function recentBlocks(db: Executor, node: string, limit: number): Promise<BlockSummary[]> {
  const rows = await db
    .selectFrom('browser_blocks')
    .select(['height', 'header', 'leaf_count', 'log_size', 'log_root', 'header_hash'])
    .where('node', '=', node)
    .orderBy('height', 'desc')
    .limit(limit)
    .execute()
  return rows.map((row) => ({
    height: row.height,
    time: (JSON.parse(row.header) as BlockHeader).time,
    leafCount: row.leaf_count,
    logSize: row.log_size,
    logRoot: row.log_root,
    headerHash: row.header_hash,
  }))
}

/**
 * Leaves per stored page, and the bytes after which a page takes no further leaf (it holds at least one).
 * Range reads rely on the first: it may grow, never shrink, or pages already stored would be missed.
 */
export const leavesPerStoredPageMax = 64
export const storedPageBytesMax = 64 * 1024

export interface LeafPage {
  readonly firstLeaf: number
  readonly leafCount: number
  /** The leaves in the leaf-page encoding. */
  readonly leaves: Uint8Array
  /** Their hashes, 32 bytes each. */
  readonly leafHashes: Uint8Array
}

/** The leaves of one block, from `firstLeaf` on, with their hashes, cut into the pages they are stored in. */
export function leafPages(
  firstLeaf: number,
  leaves: readonly Uint8Array[],
  leafHashes: readonly Uint8Array[],
): LeafPage[] {
  assert(leafHashes.length === leaves.length, 'every stored leaf has its hash')
  const pages: LeafPage[] = []
  let start = 0
  while (start < leaves.length) {
    let end = start + 1
    let bytes = leaves[start]!.length
    while (
      end < leaves.length &&
      end - start < leavesPerStoredPageMax &&
      bytes + leaves[end]!.length <= storedPageBytesMax
    ) {
      bytes += leaves[end]!.length
      end++
    }
    pages.push({
      firstLeaf: firstLeaf + start,
      leafCount: end - start,
      leaves: encodeLeafPage(leaves.slice(start, end)),
      leafHashes: concatBytes(...leafHashes.slice(start, end)),
    })
    start = end
  }
  return pages
}

/** The exact bytes of the leaves [start, end), as views into the pages that hold them. */
export async function leafRange(
  db: Executor,
  node: string,
  start: number,
  end: number,
): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  for (const page of await pagesHolding(db, node, start, end, 'leaves')) {
    const leaves = decodeLeafPage(page.bytes, leavesPerStoredPageMax)
    for (let i = Math.max(0, start - page.first); i < leaves.length && page.first + i < end; i++)
      out.push(leaves[i]!)
  }
  return out
}

/** The hashes of the leaves [start, end), 32 bytes each, one after another. */
export async function leafHashRange(
  db: Executor,
  node: string,
  start: number,
  end: number,
): Promise<Uint8Array> {
  const pages = await pagesHolding(db, node, start, end, 'leaf_hashes')
  return concatBytes(
    ...pages.map((page) =>
      page.bytes.subarray(Math.max(0, start - page.first) * hashSize, (end - page.first) * hashSize),
    ),
  )
}

/** One column of the stored pages holding leaves of [start, end), in order, with each page's first leaf. */
async function pagesHolding(
  db: Executor,
  node: string,
  start: number,
  end: number,
  column: 'leaves' | 'leaf_hashes',
): Promise<{ first: number; bytes: Uint8Array }[]> {
  if (end <= start) return []
  // The page holding `start` begins at most leavesPerStoredPageMax - 1 leaves before it.
  const rows = await db
    .selectFrom('browser_leaf_pages')
    .select((eb) => ['first_leaf', eb.ref(column).as('bytes')])
    .where('node', '=', node)
    .where('first_leaf', '>', start - leavesPerStoredPageMax)
    .where('first_leaf', '<', end)
    .orderBy('first_leaf')
    .execute()
  return rows.map((row) => ({ first: row.first_leaf, bytes: row.bytes }))
}

/** Perfect-subtree hashes by id, in the order asked: a NodeReader for the protocol's proofs. */
export async function readTreeNodes(
  db: Executor,
  node: string,
  ids: readonly NodeId[],
): Promise<Uint8Array[]> {
  if (ids.length === 0) return []
  const byId = new Map<string, Uint8Array>()
  const rows = await db
    .selectFrom('browser_tree_nodes')
    .select(['level', 'node_index', 'hash'])
    // Every term names the whole key, so each is one index lookup (SQLite's OR optimization,
    // PostgreSQL's bitmap OR); `node = ?` outside the OR would make both scan all of the node's tree.
    .where((eb) =>
      eb.or(
        ids.map((id) =>
          eb.and([eb('node', '=', node), eb('level', '=', id.level), eb('node_index', '=', id.index)]),
        ),
      ),
    )
    .execute()
  for (const row of rows) byId.set(`${row.level}/${row.node_index}`, new Uint8Array(row.hash))
  return ids.map((id) => {
    const hash = byId.get(`${id.level}/${id.index}`)
    if (hash === undefined)
      throw new VmError('internal', `tree node ${id.level}/${id.index} is missing`, { status: 500 })
    return hash
  })
}

/** The hashes of nodes [start, end) of one tree level, in order (a tile's content). */
export async function treeNodeRange(
  db: Executor,
  node: string,
  level: number,
  start: number,
  end: number,
): Promise<Uint8Array[]> {
  const rows = await db
    .selectFrom('browser_tree_nodes')
    .select('hash')
    .where('node', '=', node)
    .where('level', '=', level)
    .where('node_index', '>=', start)
    .where('node_index', '<', end)
    .orderBy('node_index')
    .execute()
  if (rows.length !== end - start)
    throw new VmError('internal', `tree level ${level} lacks nodes in [${start}, ${end})`, { status: 500 })
  return rows.map((row) => row.hash)
}

export async function loadFrontier(db: Executor, node: string, size: number): Promise<Frontier> {
  return new Frontier(size, await readTreeNodes(db, node, frontierNodeIds(size)))
}

/** Leaf indexes above `after` that `keyId` can open, ascending. */
export async function recipientLeaves(
  db: Executor,
  node: string,
  keyId: string,
  after: number,
  limit: number,
): Promise<number[]> {
  const rows = await db
    .selectFrom('browser_recipients')
    .select('leaf_index')
    .where('node', '=', node)
    .where('key_id', '=', keyId)
    .where('leaf_index', '>', after)
    .orderBy('leaf_index')
    .limit(limit)
    .execute()
  return rows.map((row) => row.leaf_index)
}

export type AlarmWrite = Omit<AlarmTable, 'id'>

/** Stores an alarm unless the same evidence was already recorded; says whether it is new. */
export async function insertAlarm(db: Executor, alarm: AlarmWrite): Promise<boolean> {
  const result = await db
    .insertInto('browser_alarms')
    .values(alarm)
    .onConflict((oc) => oc.column('fingerprint').doNothing())
    .executeTakeFirst()
  return Number(result.numInsertedOrUpdatedRows ?? 0) > 0
}

export interface Alarm {
  readonly id: number
  readonly node: string
  readonly height: number | null
  readonly kind: string
  readonly heldHeaderHash: string | null
  readonly offeredHeaderHash: string | null
  readonly time: string
  readonly evidence: unknown
}

/** Alarms newest first, below the id cursor `before`, optionally of one node. */
export async function listAlarms(
  db: Executor,
  query: { readonly before: number | undefined; readonly limit: number; readonly node: string | undefined },
): Promise<Alarm[]> {
  let select = db.selectFrom('browser_alarms').selectAll().orderBy('id', 'desc').limit(query.limit)
  if (query.before !== undefined) select = select.where('id', '<', query.before)
  if (query.node !== undefined) select = select.where('node', '=', query.node)
  const rows = await select.execute()
  return rows.map((row) => ({
    id: row.id,
    node: row.node,
    height: row.height,
    kind: row.kind,
    heldHeaderHash: row.held_hash,
    offeredHeaderHash: row.offered_hash,
    time: new Date(row.time).toISOString(),
    evidence: JSON.parse(row.evidence) as unknown,
  }))
}

/** Stored alarms per node and kind, for the metrics gauge at start. */
export async function alarmCounts(db: Executor): Promise<{ node: string; kind: string; count: number }[]> {
  const rows = await db
    .selectFrom('browser_alarms')
    .select((eb) => ['node', 'kind', eb.fn.countAll<number>().as('count')])
    .groupBy(['node', 'kind'])
    .execute()
  return rows.map((row) => ({ node: row.node, kind: row.kind, count: Number(row.count) }))
}
