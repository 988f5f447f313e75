/**
 * The full check (`--full`): every block of the browser, checked with checkBlock (the node's signature,
 * the link to the previous header, the leaves re-hashed into the header's log root, the block's
 * checkpoint), so the header chain and the Merkle tree are shown to bind the same leaves (DESIGN §12,
 * the immudb lesson); and the node's leaves compared with the browser's, leaf by leaf, a page at a time.
 * Headers and the frontier are kept, so a later run checks the kept chain again and downloads only new
 * blocks.
 */

import { BytePool } from '../client/read-bounded.js'
import {
  type BlockHeader,
  checkHashedBlock,
  genesisPrevious,
  headerHash,
  type RawBlock,
  verifyHeaderSignature,
} from '../protocol/block.js'
import { bytesEqual, fromBase64, toBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { hashSize } from '../protocol/hash.js'
import { Frontier, leafHash } from '../protocol/merkle.js'
import type { BlockHasher, HashedBlock } from './block-hashing.js'
import type { LogServer } from './http.js'
import type { Findings } from './report.js'
import { blockHolding } from './split-view.js'
import type { FullState, StoredHeader } from './state.js'

/** Blocks requested ahead of the one being checked, so the network and the hashing overlap. */
export const blocksInFlightMax = 8
/** Leaves per bulk read: the servers' page size. */
export const leavesPerPageMax = 4096
/** Block buffers kept for the blocks that follow (BytePool): those in flight, and the one being checked. */
const blockBuffersKept = blocksInFlightMax + 2
/** Pages of the node's leaves requested ahead of the comparison. */
export const pagesInFlightMax = 2

export interface FullOptions {
  readonly browser: LogServer
  readonly node: LogServer
  /** Hashes the downloaded blocks (block-hashing.ts); the caller closes it. */
  readonly hasher: BlockHasher
  readonly nodeId: string
  readonly nodeKey: Uint8Array
  /** The browser's verified checkpoint: blocks are downloaded up to its size. */
  readonly target: { readonly size: number; readonly root: Uint8Array }
  /** The node's verified checkpoint size: leaves are compared up to the smaller of both sizes. */
  readonly nodeSize: number
  readonly stored: FullState | null
  readonly onProgress: (done: number, total: number) => void
}

export interface FullResult {
  /** The new full state; null when a check failed. */
  readonly state: FullState | null
  readonly leaves: number
  /** Leaves downloaded, checked and compared per second; null when a check failed. */
  readonly leavesPerSecond: number | null
}

/**
 * Why the stored header chain is not a chain of this node's headers, or null when it is. Every header
 * must link to the one before; the newest must carry the node's signature, which through the links
 * commits to every older header, so their signatures need not be checked again.
 */
function storedChainFault(full: FullState, nodeId: string, nodeKey: Uint8Array): string | null {
  let previous: BlockHeader | null = null
  for (const [height, { header }] of full.headers.entries()) {
    const expectedPrevious = previous === null ? genesisPrevious : toBase64(headerHash(previous))
    if (
      header.height !== height ||
      header.node !== nodeId ||
      header.previous !== expectedPrevious ||
      header.firstLeaf !== (previous?.logSize ?? 0) ||
      header.logSize !== header.firstLeaf + header.leafCount
    ) {
      return `the stored header ${height} does not follow the one before it`
    }
    previous = header
  }
  const newest = full.headers.at(-1)
  if (newest === undefined || previous === null) return 'no header is stored'
  try {
    verifyHeaderSignature(newest.header, newest.signature, nodeKey)
  } catch {
    return `the stored header ${newest.header.height} is not signed by the node's key`
  }
  const frontier = new Frontier(full.frontier.size, full.frontier.hashes.map(fromBase64))
  if (previous.logSize !== frontier.size || previous.logRoot !== toBase64(frontier.root()))
    return 'the stored frontier is not the log of the last stored header'
  return null
}

/**
 * Fetches blocks in height order, in the binary form, and hashes their leaves, a bounded number ahead:
 * downloads and hashing overlap each other and the checks.
 */
class BlockFetcher {
  readonly #server: LogServer
  readonly #hasher: BlockHasher
  readonly #last: number
  readonly #ahead: { readonly height: number; readonly block: Promise<HashedBlock> }[] = []
  readonly #pool = new BytePool(blockBuffersKept)
  #next: number

  constructor(server: LogServer, hasher: BlockHasher, first: number, last: number) {
    this.#server = server
    this.#hasher = hasher
    this.#next = first
    this.#last = last
  }

  async take(): Promise<HashedBlock & { readonly height: number }> {
    while (this.#ahead.length < blocksInFlightMax && this.#next <= this.#last) {
      const height = this.#next++
      const block = this.#server.blockBytes(height, this.#pool).then((bytes) => this.#hasher.hash(bytes))
      // Blocks fetched ahead may be abandoned when a check fails: their failures are not unhandled.
      block.catch(() => {})
      this.#ahead.push({ height, block })
    }
    const ahead = this.#ahead.shift()
    if (ahead === undefined)
      throw new Error(`the browser's newest block is ${this.#last}, before its checkpoint`)
    return { ...(await ahead.block), height: ahead.height }
  }

  /** The block taken is checked: its bytes serve the next ones, and no view of them may be used again. */
  done(block: HashedBlock): void {
    this.#pool.give(block.bytes.buffer as ArrayBuffer)
  }
}

/** A page of the node's leaf hashes: those of leaves [start, start + hashes.length / 32). */
interface HashPage {
  readonly start: number
  readonly hashes: Uint8Array
}

/** The hashes of the node's leaves [start, end) in pages of leavesPerPageMax, a bounded number fetched ahead. */
class PageFetcher {
  readonly #server: LogServer
  readonly #end: number
  readonly #ahead: Promise<HashPage>[] = []
  #next: number

  constructor(server: LogServer, start: number, end: number) {
    this.#server = server
    this.#next = start
    this.#end = end
  }

  async take(): Promise<HashPage> {
    while (this.#ahead.length < pagesInFlightMax && this.#next < this.#end) {
      const start = this.#next
      this.#next = Math.min(start + leavesPerPageMax, this.#end)
      const fetching = this.#server.leafHashes(start, this.#next).then((hashes) => ({ start, hashes }))
      fetching.catch(() => {})
      this.#ahead.push(fetching)
    }
    const page = this.#ahead.shift()
    if (page === undefined) throw new Error('invariant violated: no node page past the end')
    return page
  }
}

/**
 * Compares the node's leaves with those of the browser's checked blocks by their hashes, a run of leaves
 * at a time: the node hashes what it holds, so a leaf changed in its tables shows here, at 32 bytes a leaf.
 */
class LeafComparer {
  readonly #pages: PageFetcher
  readonly #end: number
  #page: HashPage
  #compared: number

  constructor(node: LogServer, start: number, end: number) {
    this.#pages = new PageFetcher(node, start, end)
    // An empty page that ends where the comparison starts: the first leaf takes the first page.
    this.#page = { start: start - leavesPerPageMax, hashes: new Uint8Array(0) }
    this.#compared = start
    this.#end = end
  }

  get compared(): number {
    return this.#compared
  }

  /**
   * The first leaf of the block where the node differs, with the node's hash of it (null when it serves
   * none), or null. `leafHashes` are the block's own (32 bytes a leaf).
   */
  async compare(
    block: RawBlock,
    leafHashes: Uint8Array,
  ): Promise<{ index: number; nodeHash: Uint8Array | null } | null> {
    const { firstLeaf } = block.header
    const end = Math.min(firstLeaf + block.leaves.length, this.#end)
    let index = firstLeaf
    while (index < end) {
      // Pages are requested whole; a short page (a node that serves fewer leaves) shows as a missing leaf.
      if (index >= this.#page.start + leavesPerPageMax) this.#page = await this.#pages.take()
      const served = this.#page.start + this.#page.hashes.length / hashSize
      if (index >= served) return { index, nodeHash: null }
      const runEnd = Math.min(end, served)
      const nodeRun = hashRun(this.#page.hashes, index - this.#page.start, runEnd - index)
      const blockRun = hashRun(leafHashes, index - firstLeaf, runEnd - index)
      if (!bytesEqual(nodeRun, blockRun)) {
        for (let i = index; i < runEnd; i++) {
          const nodeHash = hashRun(this.#page.hashes, i - this.#page.start, 1)
          if (!bytesEqual(nodeHash, hashRun(leafHashes, i - firstLeaf, 1))) return { index: i, nodeHash }
        }
      }
      index = runEnd
      this.#compared = index
    }
    return null
  }
}

/** The hashes of `count` leaves from the `first`-th in hashes laid one after another. */
function hashRun(hashes: Uint8Array, first: number, count: number): Uint8Array {
  return hashes.subarray(first * hashSize, (first + count) * hashSize)
}

export async function checkFull(options: FullOptions, out: Findings): Promise<FullResult> {
  const { browser, node, hasher, nodeId, nodeKey, target, stored } = options
  const failed = { state: null, leaves: 0, leavesPerSecond: null }
  let headers: StoredHeader[] = []
  let previous: { header: BlockHeader; frontier: Frontier } | null = null
  if (stored !== null) {
    const fault = storedChainFault(stored, nodeId, nodeKey)
    if (!out.check('stored headers', fault === null, fault ?? `${stored.headers.length} headers re-checked`))
      return failed
    const last = stored.headers.at(-1)!
    if (target.size < last.header.logSize) {
      out.check(
        'blocks',
        false,
        `the browser's log (${target.size}) is shorter than the blocks verified before`,
      )
      out.add({
        kind: 'rollback',
        severity: 'failure',
        message: `the browser shows ${target.size} leaves; block ${last.header.height} verified before ends at ${last.header.logSize}`,
        block: { browser: last.header.height },
      })
      return failed
    }
    headers = stored.headers.slice()
    previous = {
      header: last.header,
      frontier: new Frontier(stored.frontier.size, stored.frontier.hashes.map(fromBase64)),
    }
  }

  const start = previous?.frontier.size ?? 0
  const compareEnd = Math.min(options.nodeSize, target.size)
  const comparer = new LeafComparer(node, start, compareEnd)
  const began = performance.now()
  let size = start
  let blocks = 0
  if (size < target.size) {
    const head = await browser.head()
    const fetcher = new BlockFetcher(browser, hasher, (previous?.header.height ?? -1) + 1, head.header.height)
    while (size < target.size) {
      let hashed: HashedBlock & { readonly height: number }
      let block: RawBlock
      try {
        hashed = await fetcher.take()
        block = browser.decodeBlock(hashed.height, hashed.bytes)
        if (block.header.node !== nodeId)
          throw new Error(`block ${block.header.height} is by node ${block.header.node}`)
        previous = {
          header: block.header,
          frontier: checkHashedBlock(block, previous, nodeKey, hashed.subtrees),
        }
      } catch (error) {
        // An unreachable server, or a fault of this verifier (its hashing thread), is no finding on the browser.
        if (error instanceof VmError && (error.code === 'server_unreachable' || error.code === 'internal'))
          throw error
        const height = (previous?.header.height ?? -1) + 1
        out.check('blocks', false, `block ${height}: ${(error as Error).message}`)
        out.add({
          kind: 'block',
          severity: 'failure',
          message: `the browser's block ${height} does not check: ${(error as Error).message}`,
          block: { browser: height },
        })
        return failed
      }
      headers.push({ header: block.header, signature: block.signature })
      size = block.header.logSize
      blocks++
      const differing = await comparer.compare(block, hashed.leafHashes)
      if (differing !== null) {
        out.check('blocks', true, `${blocks} blocks checked up to leaf ${size}`)
        await splitViewAt(node, { ...differing, block }, out)
        return failed
      }
      fetcher.done(hashed)
      options.onProgress(size - start, target.size - start)
    }
  }
  const seconds = (performance.now() - began) / 1000
  const leaves = size - start
  const root = previous?.frontier.root()
  if (size !== target.size || root === undefined || !bytesEqual(root, target.root)) {
    out.check(
      'blocks',
      false,
      `the blocks end at ${size} leaves, not at the browser's checkpoint (${target.size})`,
    )
    out.add({
      kind: 'block',
      severity: 'failure',
      message: `the browser's blocks do not end at its checkpoint of ${target.size} leaves and its root`,
    })
    return failed
  }
  out.check('blocks', true, `${blocks} new blocks, ${leaves} leaves re-hashed into their headers' roots`)
  out.check(
    'node leaves match browser',
    true,
    compareEnd > start
      ? `leaves ${start} to ${comparer.compared - 1} are the same bytes`
      : 'no new leaves to compare',
  )
  const frontier = previous!.frontier
  return {
    state: { headers, frontier: { size: frontier.size, hashes: frontier.hashes().map(toBase64) } },
    leaves,
    leavesPerSecond: seconds > 0 ? Math.round(leaves / seconds) : 0,
  }
}

async function splitViewAt(
  node: LogServer,
  differing: { index: number; block: RawBlock; nodeHash: Uint8Array | null },
  out: Findings,
): Promise<void> {
  const { index, block, nodeHash } = differing
  const nodeHeight = await blockHolding(node, index).then(
    (held) => held?.header.height,
    () => undefined,
  )
  const browserLeaf = block.leaves[index - block.header.firstLeaf]!
  out.check('node leaves match browser', false, `leaf ${index} differs`)
  out.add({
    kind: 'split_view',
    severity: 'failure',
    message:
      nodeHash === null
        ? `SPLIT VIEW: the node serves no leaf ${index}, which the browser holds in block ${block.header.height}`
        : `SPLIT VIEW: the node's leaf ${index} differs from the browser's, in block ${block.header.height}`,
    leafIndex: index,
    block: { ...(nodeHeight === undefined ? {} : { node: nodeHeight }), browser: block.header.height },
    leafHash: {
      ...(nodeHash === null ? {} : { node: toBase64(nodeHash) }),
      browser: toBase64(leafHash(browserLeaf)),
    },
  })
}
