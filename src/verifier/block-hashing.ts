/**
 * The hashes of downloaded blocks: every leaf's, and those of the perfect subtrees the block's leaves
 * make (rangeSubtrees), so that the log takes the block as a few subtrees. In Node they are computed on
 * a worker thread while the verifier's own thread downloads, checks the chain and compares; in a web
 * page, in the calling thread. Hashing is most of the cost of a full check.
 */
import type { Worker } from 'node:worker_threads'
import { hashSize } from '../protocol/hash.js'
import { decodeRawBlock } from '../protocol/leaf-page.js'
import { leafHash, type NodeWrite, rangeSubtrees } from '../protocol/merkle.js'
import { WorkerJobs } from '../threads/worker-jobs.js'

export interface HashedBlock {
  /** The block in the binary form, back from the thread that hashed it. */
  readonly bytes: Uint8Array
  /** Its leaves' hashes, 32 bytes each, one after another. */
  readonly leafHashes: Uint8Array
  /** The perfect subtrees its leaves make, from its header's first leaf on. */
  readonly subtrees: readonly NodeWrite[]
}

/** The hashes of a block in the binary form; none when it does not decode. */
export function hashRawBlock(bytes: Uint8Array): HashedBlock {
  let block: ReturnType<typeof decodeRawBlock>
  try {
    block = decodeRawBlock(bytes)
  } catch {
    // Decoding the block again, on the caller's side, says what is wrong with it.
    return { bytes, leafHashes: new Uint8Array(0), subtrees: [] }
  }
  const leafHashes = new Uint8Array(hashSize * block.leaves.length)
  for (let i = 0; i < block.leaves.length; i++) leafHashes.set(leafHash(block.leaves[i]!), i * hashSize)
  return { bytes, leafHashes, subtrees: rangeSubtrees(block.header.firstLeaf, leafHashes) }
}

export interface BlockHasher {
  /**
   * hashRawBlock, perhaps on another thread: `bytes` then travel there and back without a copy, and
   * until they are back, they and every view of their buffer are empty.
   */
  hash(bytes: Uint8Array): Promise<HashedBlock>
  close(): Promise<void>
}

interface WorkerThreads {
  Worker: new (url: URL) => Worker
}

/** Node's worker threads, looked up at run time, so that a web page never loads them. */
const workerThreads = (
  globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }
).process?.getBuiltinModule?.('node:worker_threads') as WorkerThreads | undefined

export function openBlockHasher(): BlockHasher {
  if (workerThreads === undefined) {
    return { hash: async (bytes) => hashRawBlock(bytes), close: async () => {} }
  }
  const { Worker } = workerThreads
  const jobs = new WorkerJobs<Uint8Array, HashedBlock>(
    'block hashing thread',
    () => new Worker(new URL('./block-hashing-worker.js', import.meta.url)),
  )
  return {
    hash: (bytes) => jobs.run(bytes, [bytes.buffer as ArrayBuffer]),
    close: () => jobs.close(),
  }
}
