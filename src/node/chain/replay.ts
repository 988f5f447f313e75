import type { Kysely } from 'kysely'
import { checkRawBlock, headerHash, type RawBlock } from '../../protocol/block.js'
import { bytesEqual, fromBase64, fromUtf8 } from '../../protocol/encoding.js'
import { Opener } from '../../protocol/envelope.js'
import { assert, VmError } from '../../protocol/errors.js'
import { decodeLeaf, leafSummary } from '../../protocol/leaf.js'
import type { Frontier, NodeWrite } from '../../protocol/merkle.js'
import { LogServer } from '../../verifier/http.js'
import { type BlockTransaction, reapplyBlock } from '../audit.js'
import { nodePrimitives } from '../crypto/node-primitives.js'
import { FunnelLease, leaseRenewMs, takeoverMsMax } from '../funnel/lease.js'
import type { NodeIdentity } from '../identity.js'
import { loadLedgerSnapshot, writeLedgerChanges } from '../ledger/ledger-store.js'
import { resultCodes } from '../ledger/result-codes.js'
import { Ledger } from '../ledger/state-machine.js'
import { poolRow, poolTableRow } from '../pool/pool.js'
import { insertRows } from '../storage/batch-insert.js'
import type { Database } from '../storage/schema.js'
import { blockAt, type LeafWrite, latestBlock, loadFrontier, writeBlock } from './chain-store.js'

export interface ReplaySummary {
  /** The browser replayed from. */
  readonly browser: string
  /** Blocks and leaves taken from it; 0 when the node was not behind. */
  readonly blocks: number
  readonly leaves: number
  /** The node's head after the replay (-1: no block). */
  readonly height: number
}

/** How long a replay waits for the funnel lease: a funnel that is gone lets it go within this. */
const leaseWaitMs = takeoverMsMax

function refused(message: string, cause?: unknown): VmError {
  return new VmError('replay_refused', message, { status: 409, cause })
}

/**
 * Takes into a node the blocks a block browser holds beyond the node's own head: what a node restored
 * from a backup lacks. Each block is checked as the browser and `vmoney audit` check it (its place in the
 * chain, the node's signature, the leaves against the log root, every transaction's signature), its
 * transactions are applied to the ledger as the funnel applied them (each must be accepted again), and it
 * is written as it was published, with its ledger effects and the transactions' pool results, in one
 * database transaction per block. The replay holds the funnel lease, so no funnel sequences meanwhile;
 * a block that fails a check stops it with nothing of that block written.
 */
export async function replayFromBrowser(
  db: Kysely<Database>,
  identity: NodeIdentity,
  browserUrl: string,
  onProgress: (done: number, total: number) => void = () => {},
): Promise<ReplaySummary> {
  const { nodeId } = identity
  const browser = new LogServer('browser', browserUrl).scoped(nodeId)
  const lease = new FunnelLease(db)
  const deadline = Date.now() + leaseWaitMs
  let leaseError: unknown = null
  const epoch = await lease.acquire(
    () => Date.now() > deadline,
    (error) => {
      leaseError = error
    },
  )
  if (epoch === null) {
    if (leaseError !== null) throw leaseError
    throw new VmError(
      'funnel_running',
      'a funnel holds the lease of this database: stop the node before replaying into it',
      { status: 409 },
    )
  }
  // Renewed on a timer too, so that a slow browser never lets the lease lapse between two blocks (a
  // standby funnel would take over and sign blocks of its own at the heights being replayed).
  let leaseLost: unknown = null
  const renewal = setInterval(() => {
    lease.extend(db).catch((error: unknown) => {
      leaseLost ??= error
    })
  }, leaseRenewMs)
  try {
    const archive = new Opener(identity.encryption.secretKey, { primitives: nodePrimitives })
    const ledger = Ledger.load(nodeId, await loadLedgerSnapshot(db))
    const stored = await latestBlock(db)
    let head = stored?.header ?? null
    let frontier = await loadFrontier(db, head?.logSize ?? 0)
    const published = (await browser.head()).header
    const target = published.height
    if (head !== null) {
      // Node and browser must hold the same block where both have one: else there are two histories.
      const common = Math.min(head.height, target)
      const ours = common === head.height ? head : (await blockAt(db, common))!.header
      const theirs = common === target ? published : (await browser.block(common)).header
      if (!bytesEqual(headerHash(ours), headerHash(theirs)))
        throw refused(`the browser holds another block ${common} than this node: two histories`)
    }
    const first = (head?.height ?? -1) + 1
    let leaves = 0
    for (let height = first; height <= target; height++) {
      if (leaseLost !== null) throw leaseLost
      const served = await browser.block(height)
      const block: RawBlock = { ...served, leaves: served.leaves.map((leaf) => fromBase64(leaf)) }
      const nodes: NodeWrite[] = []
      let next: Frontier
      let writes: LeafWrite[]
      try {
        // The block must extend the node's own chain exactly, signed by the node's key.
        next = checkRawBlock(
          block,
          head === null ? null : { header: head, frontier },
          identity.signing.publicKey,
          { nodes },
        )
        writes = leafWrites(block)
      } catch (error) {
        throw refused(`block ${height}: ${(error as Error).message}`, error)
      }
      const transactions = reapplyBlock(ledger, block, archive, identity, (index, message) => {
        throw refused(`block ${height} leaf ${index}: ${message}`)
      })
      await db.transaction().execute(async (trx) => {
        await lease.extend(trx)
        await writeLedgerChanges(trx, ledger.takeChanges())
        await recordAccepted(trx, transactions, block)
        await writeBlock(trx, {
          header: block.header,
          signature: block.signature,
          checkpoint: block.checkpoint,
          leaves: writes,
          // Leaf hashes (level 0) are not stored: the funnel does not store them either.
          nodes: nodes.filter((node) => node.level > 0),
        })
      })
      head = block.header
      frontier = next
      leaves += block.leaves.length
      onProgress(height - first + 1, target - first + 1)
    }
    return {
      browser: browserUrl,
      blocks: Math.max(0, target - first + 1),
      leaves,
      height: head?.height ?? -1,
    }
  } finally {
    clearInterval(renewal)
    // A failure to let the lease go must not hide the replay's own outcome: the lease then expires.
    await lease.release().catch(() => {})
  }
}

/**
 * After a restore and its replay: the transactions still pending were pending at the backup and are in no
 * block the browsers returned. The node may have refused them since, or accepted them in a block no
 * browser received; deciding them again could accept what a client was told was refused, so they are
 * refused (`undecided_at_restore`), and their clients may submit them again. The number refused.
 */
export async function refuseUndecided(db: Kysely<Database>): Promise<number> {
  const refusedRows = await db
    .updateTable('pool')
    .set({
      status: 'rejected',
      code: resultCodes.undecided_at_restore,
      code_name: 'undecided_at_restore',
      decided_at: Date.now(),
    })
    .where('status', '=', 'pending')
    .executeTakeFirst()
  return Number(refusedRows.numUpdatedRows)
}

/** The leaves as the node stores them: their texts and the ids of their transactions or disclosures. */
function leafWrites(block: RawBlock): LeafWrite[] {
  return block.leaves.map((bytes, i) => ({
    index: block.header.firstLeaf + i,
    transactionId: leafSummary(decodeLeaf(bytes)).id,
    text: fromUtf8(bytes),
  }))
}

/**
 * The pool results of a replayed block: a transaction pooled before the backup (pending there) is decided
 * accepted; one pooled after it gets its row, accepted. A row decided otherwise would mean two histories.
 */
async function recordAccepted(
  trx: Kysely<Database>,
  transactions: readonly BlockTransaction[],
  block: RawBlock,
): Promise<void> {
  if (transactions.length === 0) return
  const time = Date.parse(block.header.time)
  const rows = transactions.map(({ signed }) => poolRow(signed))
  const held = new Map<string, { status: string; contentHash: string }>()
  for (let start = 0; start < rows.length; start += 1_000) {
    const found = await trx
      .selectFrom('pool')
      .select(['id', 'status', 'content_hash'])
      .where(
        'id',
        'in',
        rows.slice(start, start + 1_000).map((row) => row.id),
      )
      .execute()
    for (const row of found) held.set(row.id, { status: row.status, contentHash: row.content_hash })
  }
  for (const row of rows) {
    const pooled = held.get(row.id)
    if (pooled === undefined) continue
    if (pooled.status !== 'pending')
      throw refused(`transaction ${row.id} is already ${pooled.status} in this node's pool`)
    if (pooled.contentHash !== row.contentHash)
      throw refused(`transaction ${row.id} is pooled here with other content than the browser's leaf`)
  }
  const pending = rows.filter((row) => held.has(row.id)).map((row) => row.id)
  for (let start = 0; start < pending.length; start += 1_000) {
    const ids = pending.slice(start, start + 1_000)
    const updated = await trx
      .updateTable('pool')
      .set({
        status: 'accepted',
        code: resultCodes.ok,
        code_name: 'ok',
        block_height: block.header.height,
        decided_at: time,
      })
      .where('id', 'in', ids)
      .where('status', '=', 'pending')
      .executeTakeFirst()
    assert(Number(updated.numUpdatedRows) === ids.length, 'the pending rows read are decided once')
  }
  await insertRows(
    trx,
    'pool',
    rows.filter((row) => !held.has(row.id)).map((row) => poolTableRow(row, time, block.header.height)),
  )
}
