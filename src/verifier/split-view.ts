/**
 * Where two views of one log part. Each server attests, through proofs checked against its own signed
 * checkpoint, the root of every prefix of its log; the prefix roots of the two views agree up to some
 * size and differ from there on, so a binary search over the prefix size finds the first leaf where
 * they differ in O(log n) proofs per side.
 */
import type { Block } from '../protocol/block.js'
import { toBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { leafHash, nodeHash, rootFromConsistencyProof, verifyInclusion } from '../protocol/merkle.js'
import type { LogServer } from './http.js'

/** A server's log as its verified checkpoint shows it. */
export interface LogView {
  readonly server: LogServer
  readonly size: number
  readonly root: Uint8Array
}

/** A server could not prove what its own checkpoint commits to. */
export class ProofRefused extends VmError {
  readonly server: LogServer

  constructor(server: LogServer, message: string, cause: unknown) {
    super('proof_refused', `the ${server.role} ${message}: ${(cause as Error).message}`, {
      status: 502,
      cause,
    })
    this.server = server
  }
}

function isPowerOfTwo(value: number): boolean {
  return value > 0 && 2 ** Math.round(Math.log2(value)) === value
}

/** The root of the first `size` leaves of `view`, proven against the view's checkpoint. */
export async function prefixRoot(view: LogView, size: number): Promise<Uint8Array> {
  if (size === view.size) return view.root
  const { server } = view
  try {
    if (!isPowerOfTwo(size)) {
      return rootFromConsistencyProof(
        size,
        view.size,
        await server.consistencyProof(size, view.size),
        view.root,
      )
    }
    // A consistency proof from a power of two omits the old root. That root is the perfect subtree over
    // leaves [0, size): the inclusion path of its last leaf passes through it, every sibling on the left.
    const index = size - 1
    const hash = leafHash(await server.leaf(index))
    const proof = await server.inclusionProof(index, view.size)
    verifyInclusion(hash, index, view.size, proof, view.root)
    let subtree = hash
    for (let level = 0; 2 ** level < size; level++) subtree = nodeHash(proof[level]!, subtree)
    return subtree
  } catch (error) {
    if (error instanceof VmError && error.code === 'server_unreachable') throw error
    throw new ProofRefused(server, `cannot prove the root of its first ${size} leaves`, error)
  }
}

/**
 * The index of the first leaf where the views differ, given that their prefixes of `size` differ (both
 * views hold at least `size` leaves). Throws ProofRefused when a side cannot back its own checkpoint.
 */
export async function firstDifferingLeaf(a: LogView, b: LogView, size: number): Promise<number> {
  let low = 1
  let high = size
  while (low < high) {
    const middle = Math.floor((low + high) / 2)
    const [rootA, rootB] = await Promise.all([prefixRoot(a, middle), prefixRoot(b, middle)])
    if (toBase64(rootA) === toBase64(rootB)) low = middle + 1
    else high = middle
  }
  return low - 1
}

/** The block holding leaf `index`, found by binary search over the server's heights; null if none. */
export async function blockHolding(server: LogServer, index: number): Promise<Block | null> {
  let low = 0
  let high = (await server.head()).header.height
  while (low <= high) {
    const middle = Math.floor((low + high) / 2)
    const block = await server.block(middle)
    const { firstLeaf, logSize } = block.header
    if (index < firstLeaf) high = middle - 1
    else if (index >= logSize) low = middle + 1
    else return block
  }
  return null
}
