import type { Kysely } from 'kysely'
import { checkRawBlock, type RawBlock } from '../../protocol/block.js'
import { fromBase64, fromUtf8 } from '../../protocol/encoding.js'
import { Opener } from '../../protocol/envelope.js'
import { VmError } from '../../protocol/errors.js'
import { decodeLeaf, leafSummary, leafTransaction } from '../../protocol/leaf.js'
import type { NodeWrite } from '../../protocol/merkle.js'
import type { SignedTransaction } from '../../protocol/transaction.js'
import { LogServer } from '../../verifier/http.js'
import { signatureValid } from '../audit.js'
import { FunnelLease, takeoverMsMax } from '../funnel/lease.js'
import type { NodeIdentity } from '../identity.js'
import { loadLedgerSnapshot, writeLedgerChanges } from '../ledger/ledger-store.js'
import { resultCodes, resultName } from '../ledger/result-codes.js'
import { Ledger } from '../ledger/state-machine.js'
import { poolRow, poolTableRow } from '../pool/pool.js'
import { insertRows } from '../storage/batch-insert.js'
import type { Database } from '../storage/schema.js'
import { type LeafWrite, latestBlock, loadFrontier, writeBlock } from './chain-store.js'

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

function refused(message: string): VmError {
  return new VmError('replay_refused', message, { status: 409 })
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
  const epoch = await lease.acquire(
    () => Date.now() > deadline,
    () => {},
  )
  if (epoch === null)
    throw new VmError(
      'funnel_running',
      'a funnel holds the lease of this database: stop the node before replaying into it',
      { status: 409 },
    )
  try {
    const archive = new Opener(identity.encryption.secretKey)
    const ledger = Ledger.load(nodeId, await loadLedgerSnapshot(db))
    const stored = await latestBlock(db)
    let head = stored?.header ?? null
    let frontier = await loadFrontier(db, head?.logSize ?? 0)
    const target = (await browser.head()).header.height
    const first = (head?.height ?? -1) + 1
    let leaves = 0
    for (let height = first; height <= target; height++) {
      const published = await browser.block(height)
      const block: RawBlock = { ...published, leaves: published.leaves.map((leaf) => fromBase64(leaf)) }
      const nodes: NodeWrite[] = []
      // The block must extend the node's own chain exactly, signed by the node's key.
      const next = checkRawBlock(
        block,
        head === null ? null : { header: head, frontier },
        identity.signing.publicKey,
        { nodes },
      )
      const { writes, transactions } = openLeaves(block, archive)
      applyBlock(ledger, block, transactions, identity)
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
    await lease.release()
  }
}

interface ReplayedTransaction {
  readonly index: number
  readonly time: string
  readonly signed: SignedTransaction
}

/** The leaves as the node stores them, and the transactions they carry (opened with the archive key). */
function openLeaves(
  block: RawBlock,
  archive: Opener,
): { writes: LeafWrite[]; transactions: ReplayedTransaction[] } {
  const writes: LeafWrite[] = []
  const transactions: ReplayedTransaction[] = []
  block.leaves.forEach((bytes, i) => {
    const index = block.header.firstLeaf + i
    const leaf = decodeLeaf(bytes)
    const summary = leafSummary(leaf)
    writes.push({ index, transactionId: summary.id, text: fromUtf8(bytes) })
    const signed = leafTransaction(leaf, { opener: archive })
    if (signed !== null) transactions.push({ index, time: summary.time, signed })
    else if (leaf.v === 2 && leaf.type !== 'disclosure')
      throw refused(`block ${block.header.height} leaf ${index} is not sealed for this node's archive key`)
  })
  return { writes, transactions }
}

/** Applies a block's transactions, linked chains whole, as the funnel did; each must be accepted again. */
function applyBlock(
  ledger: Ledger,
  block: RawBlock,
  transactions: readonly ReplayedTransaction[],
  identity: NodeIdentity,
): void {
  const where = (index: number) => `block ${block.header.height} leaf ${index}`
  for (let start = 0; start < transactions.length; ) {
    let end = start
    while (transactions[end]!.signed.tx.linked === true && end + 1 < transactions.length) end++
    const chain = transactions.slice(start, end + 1)
    for (const { index, signed } of chain) {
      if (!signatureValid(ledger, signed, identity.nodeId, identity.signing.publicKey))
        throw refused(`${where(index)}: transaction ${signed.tx.id} has no valid signature`)
    }
    const codes = ledger.applyChain(
      chain.map(({ index, time, signed }) => ({ signed, context: { time: Date.parse(time), leaf: index } })),
    )
    codes.forEach((code, i) => {
      if (code !== resultCodes.ok) {
        const { index, signed } = chain[i]!
        throw refused(`${where(index)}: transaction ${signed.tx.id} does not re-apply: ${resultName(code)}`)
      }
    })
    start = end + 1
  }
}

/**
 * The pool results of a replayed block: a transaction pooled before the backup (pending there) is decided
 * accepted; one pooled after it gets its row, accepted. A row decided otherwise would mean two histories.
 */
async function recordAccepted(
  trx: Kysely<Database>,
  transactions: readonly ReplayedTransaction[],
  block: RawBlock,
): Promise<void> {
  if (transactions.length === 0) return
  const time = Date.parse(block.header.time)
  const ids = transactions.map(({ signed }) => signed.tx.id)
  const held = new Map<string, string>()
  for (let start = 0; start < ids.length; start += 1_000) {
    const rows = await trx
      .selectFrom('pool')
      .select(['id', 'status'])
      .where('id', 'in', ids.slice(start, start + 1_000))
      .execute()
    for (const row of rows) held.set(row.id, row.status)
  }
  const decided = [...held].find(([, status]) => status !== 'pending')
  if (decided !== undefined)
    throw refused(`transaction ${decided[0]} is already ${decided[1]} in this node's pool`)
  const pending = ids.filter((id) => held.has(id))
  for (let start = 0; start < pending.length; start += 1_000) {
    await trx
      .updateTable('pool')
      .set({
        status: 'accepted',
        code: resultCodes.ok,
        code_name: 'ok',
        block_height: block.header.height,
        decided_at: time,
      })
      .where('id', 'in', pending.slice(start, start + 1_000))
      .execute()
  }
  await insertRows(
    trx,
    'pool',
    transactions
      .filter(({ signed }) => !held.has(signed.tx.id))
      .map(({ signed }) => poolTableRow(poolRow(signed), time, block.header.height)),
  )
}
