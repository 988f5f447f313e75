/**
 * The full check (`--full`): every block of the browser, checked with checkBlock (the node's signature,
 * the link to the previous header, the leaves re-hashed into the header's log root, the block's
 * checkpoint), so the header chain and the Merkle tree are shown to bind the same leaves (DESIGN §12,
 * the immudb lesson); and the node's leaves compared with the browser's, leaf by leaf, a page at a time.
 * Headers and the frontier are kept, so a later run checks the kept chain again and downloads only new
 * blocks.
 */
import {
  type BlockHeader,
  checkRawBlock,
  genesisPrevious,
  headerHash,
  type RawBlock,
  verifyHeaderSignature,
} from '../protocol/block.js'
import { bytesEqual, fromBase64, toBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { Frontier, leafHash } from '../protocol/merkle.js'
import type { LogServer } from './http.js'
import type { Findings } from './report.js'
import { blockHolding } from './split-view.js'
import type { FullState, StoredHeader } from './state.js'

/** Blocks requested ahead of the one being checked, so the network and the hashing overlap. */
export const blocksInFlightMax = 8
/** Leaves per bulk read: the servers' page size. */
export const leavesPerPageMax = 4096
/** Pages of the node's leaves requested ahead of the comparison. */
export const pagesInFlightMax = 2

export interface FullOptions {
  readonly browser: LogServer
  readonly node: LogServer
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

/** Fetches blocks in height order (binary: leaves as bytes), a bounded number ahead. */
class BlockFetcher {
  readonly #server: LogServer
  readonly #last: number
  readonly #ahead: Promise<RawBlock>[] = []
  #next: number

  constructor(server: LogServer, first: number, last: number) {
    this.#server = server
    this.#next = first
    this.#last = last
  }

  async take(): Promise<RawBlock> {
    while (this.#ahead.length < blocksInFlightMax && this.#next <= this.#last) {
      const fetching = this.#server.rawBlock(this.#next++)
      // Blocks fetched ahead may be abandoned when a check fails: their failures are not unhandled.
      fetching.catch(() => {})
      this.#ahead.push(fetching)
    }
    const block = this.#ahead.shift()
    if (block === undefined)
      throw new Error(`the browser's newest block is ${this.#last}, before its checkpoint`)
    return block
  }
}

/** The hashes of the node's leaves [start, end) in pages of leavesPerPageMax, a bounded number fetched ahead. */
class PageFetcher {
  readonly #server: LogServer
  readonly #end: number
  readonly #ahead: Promise<{ start: number; hashes: Uint8Array[] }>[] = []
  #next: number

  constructor(server: LogServer, start: number, end: number) {
    this.#server = server
    this.#next = start
    this.#end = end
  }

  async take(): Promise<{ start: number; hashes: Uint8Array[] }> {
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
 * Compares the node's leaves with those of the browser's checked blocks, leaf by leaf, by their hashes:
 * the node hashes what it holds, so a leaf changed in its tables shows here, at 32 bytes a leaf.
 */
class LeafComparer {
  readonly #pages: PageFetcher
  readonly #end: number
  #page: { start: number; hashes: Uint8Array[] }
  #compared: number

  constructor(node: LogServer, start: number, end: number) {
    this.#pages = new PageFetcher(node, start, end)
    // An empty page that ends where the comparison starts: the first leaf takes the first page.
    this.#page = { start: start - leavesPerPageMax, hashes: [] }
    this.#compared = start
    this.#end = end
  }

  get compared(): number {
    return this.#compared
  }

  /**
   * The first leaf of the block where the node differs, with the node's hash of it (null when it serves
   * none), or null. `leafHashes` are the block's own, as checkRawBlock computed them.
   */
  async compare(
    block: RawBlock,
    leafHashes: readonly Uint8Array[],
  ): Promise<{ index: number; nodeHash: Uint8Array | null } | null> {
    const { firstLeaf } = block.header
    for (let i = 0; i < leafHashes.length && firstLeaf + i < this.#end; i++) {
      const index = firstLeaf + i
      // Pages are requested whole; a short page (a node that serves fewer leaves) shows as a missing leaf.
      if (index >= this.#page.start + leavesPerPageMax) this.#page = await this.#pages.take()
      const nodeHash = this.#page.hashes[index - this.#page.start]
      if (nodeHash === undefined) return { index, nodeHash: null }
      if (!bytesEqual(nodeHash, leafHashes[i]!)) return { index, nodeHash }
      this.#compared = index + 1
    }
    return null
  }
}

export async function checkFull(options: FullOptions, out: Findings): Promise<FullResult> {
  const { browser, node, nodeId, nodeKey, target, stored } = options
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
  const leafHashes: Uint8Array[] = []
  if (size < target.size) {
    const head = await browser.head()
    const fetcher = new BlockFetcher(browser, (previous?.header.height ?? -1) + 1, head.header.height)
    while (size < target.size) {
      let block: RawBlock
      try {
        block = await fetcher.take()
        if (block.header.node !== nodeId)
          throw new Error(`block ${block.header.height} is by node ${block.header.node}`)
        leafHashes.length = 0
        previous = { header: block.header, frontier: checkRawBlock(block, previous, nodeKey, { leafHashes }) }
      } catch (error) {
        if (error instanceof VmError && error.code === 'server_unreachable') throw error
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
      const differing = await comparer.compare(block, leafHashes)
      if (differing !== null) {
        out.check('blocks', true, `${blocks} blocks checked up to leaf ${size}`)
        await splitViewAt(node, { ...differing, block }, out)
        return failed
      }
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
