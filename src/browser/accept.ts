import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import {
  type Block,
  checkBlock,
  headerHash,
  validateBlock,
  verifyHeaderSignature,
} from '../protocol/block.js'
import { toBase64 } from '../protocol/encoding.js'
import { jweRecipientsMax } from '../protocol/envelope.js'
import { VmError } from '../protocol/errors.js'
import { decodeLeaf, leafRecipients } from '../protocol/leaf.js'
import type { NodeWrite } from '../protocol/merkle.js'
import { raiseAlarm } from './alarms.js'
import type { BlockEvents } from './block-events.js'
import {
  appendBlock,
  type BlockWrite,
  leafRange,
  loadFrontier,
  type StoredHeader,
  storedHead,
  storedHeaderAt,
} from './browser-store.js'
import type { FollowedNodeInfo, FollowedNodes } from './followed-nodes.js'
import type { BrowserMetrics } from './metrics.js'
import type { BrowserSchema } from './schema.js'

/** Blocks of one node waiting for their turn; past it 503, so a flood cannot pile up large bodies in memory. */
export const appendsQueuedPerNodeMax = 16
/** Recipients indexed per leaf: as many as a JWE may have; a leaf naming more is stored but not indexed. */
export const indexedRecipientsPerLeafMax = jweRecipientsMax

export interface AcceptResult {
  readonly status: 'accepted' | 'duplicate'
  readonly node: string
  readonly height: number
  readonly logSize: number
}

export interface AcceptorParts {
  readonly db: Kysely<BrowserSchema>
  /** Updated after each commit: the log size the routes bound their answers by. */
  readonly logSizes: Map<string, number>
  readonly nodes: FollowedNodes
  readonly metrics: BrowserMetrics
  readonly events: BlockEvents
  readonly log: Logger
  /** Called after a block beyond head + 1: the node's follower should pull what is missing. */
  readonly onGap: (nodeId: string) => void
}

function refusal(code: string, status: number, message: string, detail?: Record<string, unknown>): VmError {
  return new VmError(code, message, detail === undefined ? { status } : { status, detail })
}

/**
 * The one way a block gets into the browser, whether a node pushes it or a follower pulls it: block h+1
 * is stored only when `checkBlock` accepts it after the stored head and log. What is stored never changes.
 */
export class BlockAcceptor {
  readonly #parts: AcceptorParts
  readonly #queues = new Map<string, { tail: Promise<void>; length: number }>()

  constructor(parts: AcceptorParts) {
    this.#parts = parts
  }

  /** Accepts a block (exactly the JSON of the node's GET /v1/blocks/{height}); refusals throw VmError. */
  async accept(body: unknown): Promise<AcceptResult> {
    try {
      const block = validateBlock(body)
      const node = this.#parts.nodes.get(block.header.node)
      // Checked before queueing: only the node itself can make the browser do more work (a pull, an alarm).
      verifyHeaderSignature(block.header, block.signature, node.publicKey)
      return await this.#serialized(node.id, () => this.#append(node, block))
    } catch (error) {
      if (error instanceof VmError) this.#parts.metrics.refusals.inc({ code: error.code })
      throw error
    }
  }

  /** Appends of one node run one at a time, in arrival order. */
  async #serialized<T>(nodeId: string, work: () => Promise<T>): Promise<T> {
    const queue = this.#queues.get(nodeId) ?? { tail: Promise.resolve(), length: 0 }
    this.#queues.set(nodeId, queue)
    if (queue.length >= appendsQueuedPerNodeMax) {
      throw refusal('append_busy', 503, `${queue.length} blocks of this node are already waiting`, {
        retryAfterSeconds: 1,
      })
    }
    queue.length += 1
    const run = queue.tail.then(work)
    const done = () => {
      queue.length -= 1
    }
    queue.tail = run.then(done, done)
    return run
  }

  async #append(node: FollowedNodeInfo, block: Block): Promise<AcceptResult> {
    const { db } = this.#parts
    const head = await storedHead(db, node.id)
    const { height } = block.header
    if (head !== null && height <= head.header.height) return this.#held(node, block)
    const expected = head === null ? 0 : head.header.height + 1
    if (height > expected) {
      this.#parts.onGap(node.id)
      throw refusal('block_height_gap', 409, `block ${height} where ${expected} was expected`, { expected })
    }
    const previous =
      head === null
        ? null
        : { header: head.header, frontier: await loadFrontier(db, node.id, head.header.logSize) }
    const checked = { leaves: [] as Uint8Array[], leafHashes: [] as Uint8Array[], nodes: [] as NodeWrite[] }
    checkBlock(block, previous, node.publicKey, checked)
    await appendBlock(db, node.id, {
      block,
      headerHash: toBase64(headerHash(block.header)),
      leaves: checked.leaves,
      leafHashes: checked.leafHashes,
      nodes: checked.nodes,
      recipients: recipientsOf(checked.leaves, block.header.firstLeaf),
      receivedAt: Date.now(),
    })
    this.#announce(node, block)
    return { status: 'accepted', node: node.id, height, logSize: block.header.logSize }
  }

  #announce(node: FollowedNodeInfo, block: Block): void {
    const { header } = block
    this.#parts.metrics.blocksAccepted.inc({ node: node.id })
    this.#parts.logSizes.set(node.id, header.logSize)
    this.#parts.metrics.logSize.set({ node: node.id }, header.logSize)
    this.#parts.events.publish({
      node: node.id,
      height: header.height,
      logSize: header.logSize,
      logRoot: header.logRoot,
      leafCount: header.leafCount,
      time: header.time,
    })
  }

  /** A block at a height already held: a retry (idempotent), or the node signed a second history. */
  async #held(node: FollowedNodeInfo, block: Block): Promise<AcceptResult> {
    const { db } = this.#parts
    const { height } = block.header
    const held = await storedHeaderAt(db, node.id, height)
    if (held === null)
      throw new VmError('internal', `block ${height} is below the head but missing`, { status: 500 })
    const offeredHash = toBase64(headerHash(block.header))
    if (offeredHash === held.headerHash) {
      if (!(await sameLeaves(db, node.id, held, block))) {
        throw refusal(
          'block_leaves_mismatch',
          400,
          `the leaves differ from those of the held block ${height}`,
        )
      }
      return { status: 'duplicate', node: node.id, height, logSize: held.header.logSize }
    }
    // The signature was verified by accept(): the node itself signed two different blocks at this height.
    await this.#recordRewrite(node, held, block, offeredHash)
    throw refusal('block_rewrite', 409, `the node signed a different block ${height} than the one held`, {
      height,
      heldHeaderHash: held.headerHash,
      offeredHeaderHash: offeredHash,
    })
  }

  async #recordRewrite(node: FollowedNodeInfo, held: StoredHeader, block: Block, offeredHash: string) {
    const { height } = block.header
    const evidence = {
      held: { header: held.header, signature: held.signature },
      offered: { header: block.header, signature: block.signature },
    }
    await raiseAlarm(
      this.#parts,
      {
        node: node.id,
        height,
        kind: 'rewrite',
        held_hash: held.headerHash,
        offered_hash: offeredHash,
        evidence: JSON.stringify(evidence),
        fingerprint: `${node.id}/rewrite/${height}/${offeredHash}`,
        time: Date.now(),
      },
      `node ${node.id} signed two different blocks at height ${height}`,
    )
  }
}

async function sameLeaves(
  db: Kysely<BrowserSchema>,
  node: string,
  held: StoredHeader,
  block: Block,
): Promise<boolean> {
  const { firstLeaf, leafCount } = held.header
  const stored = await leafRange(db, node, firstLeaf, firstLeaf + leafCount)
  return (
    stored.length === block.leaves.length && stored.every((leaf, i) => toBase64(leaf) === block.leaves[i])
  )
}

/** Key ids named by each leaf. A leaf that does not decode is stored all the same, just not indexed. */
function recipientsOf(leaves: readonly Uint8Array[], firstLeaf: number): BlockWrite['recipients'] {
  const rows: { keyId: string; leafIndex: number }[] = []
  leaves.forEach((bytes, i) => {
    let keyIds: string[]
    try {
      keyIds = leafRecipients(decodeLeaf(bytes))
    } catch {
      return
    }
    for (const keyId of [...new Set(keyIds)].slice(0, indexedRecipientsPerLeafMax)) {
      rows.push({ keyId, leafIndex: firstLeaf + i })
    }
  })
  return rows
}
