/**
 * The RFC 9162 §2.1 Merkle log: leaf and node hashes, a compact frontier for appending, proofs built
 * from stored perfect-subtree hashes, and their verification.
 *
 * Appending and proving never re-hash the tree. Every perfect subtree (a node whose leaves are all
 * present) gets its hash once, when its last leaf is appended, and never changes afterwards; the
 * appender hands these nodes to storage. A proof of any kind is then a few stored nodes, plus at most
 * one "ephemeral" node on the ragged right edge of the tree that is folded from stored nodes.
 * This follows transparency-dev/merkle (packages `compact` and `proof`), ported to JavaScript numbers:
 * sizes and indexes are safe integers (below 2^53), so bit tricks use arithmetic, not 32-bit operators.
 */
import { bytesEqual, toHex } from './encoding.js'
import { assert, VmError } from './errors.js'
import { hashSize, sha256 } from './hash.js'

/** A perfect subtree: the node at `level` covering leaves [index·2^level, (index+1)·2^level). */
export interface NodeId {
  readonly level: number
  readonly index: number
}

/** A perfect-subtree hash that has just come into existence and should be stored. */
export interface NodeWrite extends NodeId {
  readonly hash: Uint8Array
}

/** Fetches the hashes of perfect subtrees, in the order asked, in one batch. */
export type NodeReader = (ids: readonly NodeId[]) => Promise<readonly Uint8Array[]>

/**
 * How to build a proof from stored nodes: read `ids`, then fold `ids[foldStart, foldEnd)` (the
 * perfect subtrees under the ephemeral node, lowest first) into one hash. An empty fold range means
 * every proof hash is a stored node.
 */
export interface ProofPlan {
  readonly ids: readonly NodeId[]
  readonly foldStart: number
  readonly foldEnd: number
}

const leafPrefix = new Uint8Array([0x00])
const nodePrefix = new Uint8Array([0x01])
const emptyTreeHash = sha256(new Uint8Array(0))

/** MTH({d(0)}) = SHA-256(0x00 ‖ d(0)). */
export function leafHash(leaf: Uint8Array): Uint8Array {
  return sha256(leafPrefix, leaf)
}

/** SHA-256(0x01 ‖ left ‖ right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(nodePrefix, left, right)
}

/** MTH({}) = SHA-256 of the empty string. A fresh copy, so no caller can change it for the others. */
export function emptyRoot(): Uint8Array {
  return emptyTreeHash.slice()
}

// Integer helpers for safe integers up to 2^53: JavaScript's bit operators truncate to 32 bits.
const twoPow32 = 2 ** 32

function isCount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0
}

function bitLength(value: number): number {
  const high = Math.floor(value / twoPow32)
  return high > 0 ? 64 - Math.clz32(high) : 32 - Math.clz32(value)
}

/** Requires value > 0. */
function trailingZeros(value: number): number {
  const low = value % twoPow32
  if (low !== 0) return 31 - Math.clz32(low & -low)
  return 32 + trailingZeros(value / twoPow32)
}

function popCount(value: number): number {
  let count = 0
  for (let rest = value; rest > 0; rest = Math.floor(rest / 2)) count += rest % 2
  return count
}

function xor(a: number, b: number): number {
  const high = (Math.floor(a / twoPow32) ^ Math.floor(b / twoPow32)) >>> 0
  const low = ((a % twoPow32) ^ (b % twoPow32)) >>> 0
  return high * twoPow32 + low
}

function shiftRight(value: number, bits: number): number {
  return Math.floor(value / 2 ** bits)
}

function bitAt(value: number, bit: number): number {
  return shiftRight(value, bit) % 2
}

/**
 * The perfect subtrees that exactly cover leaves [begin, end), left to right: the compact range.
 * Each step takes the largest aligned subtree that starts at `position` and fits before `end`.
 */
function rangeNodes(begin: number, end: number): NodeId[] {
  const ids: NodeId[] = []
  for (let position = begin; position < end; ) {
    const fits = bitLength(end - position) - 1
    const level = position === 0 ? fits : Math.min(trailingZeros(position), fits)
    ids.push({ level, index: position / 2 ** level })
    position += 2 ** level
  }
  return ids
}

/** The perfect subtrees of the tree of `size` leaves, left to right (largest first): what a Frontier holds. */
export function frontierNodeIds(size: number): NodeId[] {
  if (!isCount(size))
    throw new VmError('frontier_invalid', `tree size ${size} is not a non-negative safe integer`)
  return rangeNodes(0, size)
}

/**
 * The perfect subtrees covering leaves [first, first + n), left to right, with their hashes, from the
 * leaves' hashes (32 bytes each, one after another): what these leaves add to the log they extend,
 * whatever came before them (Frontier.appendSubtree).
 */
export function rangeSubtrees(first: number, leafHashes: Uint8Array): NodeWrite[] {
  assert(leafHashes.length % hashSize === 0, 'leaf hashes are 32 bytes each')
  const ids = rangeNodes(first, first + leafHashes.length / hashSize)
  const stack: Uint8Array[] = []
  return ids.map((id) => {
    const offset = id.index * 2 ** id.level - first
    // The subtree's leaves appended to an empty tree: its hash is what remains on the stack.
    for (let i = 0; i < 2 ** id.level; i++) {
      let hash = leafHashes.subarray((offset + i) * hashSize, (offset + i + 1) * hashSize)
      for (let k = i; k % 2 === 1; k = (k - 1) / 2) hash = nodeHash(stack.pop()!, hash)
      stack.push(hash)
    }
    return { ...id, hash: stack.pop()! }
  })
}

/**
 * The compact range [0, size): the hashes of the perfect subtrees of size's binary decomposition.
 * Enough to append leaves and compute the root, in O(log n) memory.
 */
export class Frontier {
  #size: number
  readonly #hashes: Uint8Array[]

  /** `hashes` are the perfect subtrees of `frontierNodeIds(size)`, in that order. */
  constructor(size = 0, hashes: readonly Uint8Array[] = []) {
    if (!isCount(size))
      throw new VmError('frontier_invalid', `tree size ${size} is not a non-negative safe integer`)
    const expected = popCount(size)
    if (hashes.length !== expected) {
      throw new VmError(
        'frontier_invalid',
        `a tree of size ${size} has ${expected} frontier hashes, got ${hashes.length}`,
      )
    }
    for (const hash of hashes) {
      if (hash.length !== hashSize)
        throw new VmError('frontier_invalid', `frontier hashes must be ${hashSize} bytes`)
    }
    this.#size = size
    this.#hashes = [...hashes]
  }

  get size(): number {
    return this.#size
  }

  /**
   * Appends one leaf (its leaf hash) and returns every perfect subtree this completes, the leaf
   * itself first, so the caller can store them. Costs one node hash per returned node above the
   * leaf: amortized one per append.
   */
  append(leafHash: Uint8Array): NodeWrite[] {
    assert(leafHash.length === hashSize, 'a leaf hash is 32 bytes')
    assert(this.#size < Number.MAX_SAFE_INTEGER, 'the log size stays a safe integer')
    let index = this.#size
    let level = 0
    let hash = leafHash
    const writes: NodeWrite[] = [{ level, index, hash }]
    // A right child completes its parent: the rightmost frontier subtree is its left sibling.
    while (index % 2 === 1) {
      const left = this.#hashes.pop()
      assert(left !== undefined, 'the frontier holds a subtree for every set bit of the size')
      hash = nodeHash(left, hash)
      index = (index - 1) / 2
      level += 1
      writes.push({ level, index, hash })
    }
    this.#hashes.push(hash)
    this.#size += 1
    return writes
  }

  /**
   * Appends the 2^level leaves of a perfect subtree by its hash (rangeSubtrees): the size must be a
   * multiple of 2^level, so that the subtree is a node of the log.
   */
  appendSubtree(level: number, hash: Uint8Array): void {
    const width = 2 ** level
    assert(hash.length === hashSize, 'a subtree hash is 32 bytes')
    assert(this.#size % width === 0, 'a subtree is appended where it is a node of the log')
    assert(this.#size + width <= Number.MAX_SAFE_INTEGER, 'the log size stays a safe integer')
    let index = this.#size / width
    let merged = hash
    while (index % 2 === 1) {
      const left = this.#hashes.pop()
      assert(left !== undefined, 'the frontier holds a subtree for every set bit of the size')
      merged = nodeHash(left, merged)
      index = (index - 1) / 2
    }
    this.#hashes.push(merged)
    this.#size += width
  }

  /** The RFC 9162 root of the current size: the frontier folded from the right. */
  root(): Uint8Array {
    const last = this.#hashes.length - 1
    if (last < 0) return emptyRoot()
    let hash = this.#hashes[last]!
    for (let i = last - 1; i >= 0; i--) hash = nodeHash(this.#hashes[i]!, hash)
    return hash
  }

  /** The frontier hashes, in the order of `frontierNodeIds(size)`. */
  hashes(): Uint8Array[] {
    return [...this.#hashes]
  }

  clone(): Frontier {
    return new Frontier(this.#size, this.#hashes)
  }
}

function outOfRange(message: string): VmError {
  return new VmError('proof_out_of_range', message, { status: 400 })
}

function checkSizes(sizes: Readonly<Record<string, number>>): void {
  for (const [name, value] of Object.entries(sizes)) {
    if (!isCount(value)) throw outOfRange(`${name} ${value} is not a non-negative safe integer`)
  }
}

function sibling(id: NodeId): NodeId {
  return { level: id.level, index: id.index % 2 === 0 ? id.index + 1 : id.index - 1 }
}

/**
 * The nodes proving that node (level, index) is in the tree of `size` leaves, that node first
 * (transparency-dev/merkle proof.nodes). The path goes up to the `fork`, where it parts from the
 * path to leaf `size`; the fork's right sibling is ephemeral (partly filled) and is folded from the
 * stored subtrees covering [end of fork, size); the rest are the left subtrees before the fork.
 * Requires index < size >> level.
 */
function nodesFor(index: number, level: number, size: number): ProofPlan {
  const inner = bitLength(xor(index, shiftRight(size, level))) - 1
  const forkLevel = level + inner
  const forkIndex = shiftRight(index, inner)
  const forkBegin = forkIndex * 2 ** forkLevel
  const forkEnd = (forkIndex + 1) * 2 ** forkLevel

  let node: NodeId = { level, index }
  const ids: NodeId[] = [node]
  while (node.level < forkLevel) {
    ids.push(sibling(node))
    node = { level: node.level + 1, index: Math.floor(node.index / 2) }
  }
  const foldStart = ids.length
  ids.push(...rangeNodes(forkEnd, size).reverse())
  const foldEnd = ids.length
  ids.push(...rangeNodes(0, forkBegin).reverse())
  // A single subtree on the right edge is stored as it is: nothing to fold.
  return foldEnd - foldStart > 1 ? { ids, foldStart, foldEnd } : { ids, foldStart: 0, foldEnd: 0 }
}

/** Drops the first node, which the verifier already has (the leaf, or the old root). */
function skipFirst(plan: ProofPlan): ProofPlan {
  const folds = plan.foldEnd > plan.foldStart
  return {
    ids: plan.ids.slice(1),
    foldStart: folds ? plan.foldStart - 1 : 0,
    foldEnd: folds ? plan.foldEnd - 1 : 0,
  }
}

/**
 * The nodes of PATH(index, D[0:size]) (RFC 9162 §2.1.3.1). `logSize` is the size of the log the
 * nodes come from; proofs for a tree larger than the log do not exist.
 */
export function inclusionProofPlan(index: number, size: number, logSize: number = size): ProofPlan {
  checkSizes({ 'leaf index': index, 'tree size': size, 'log size': logSize })
  if (size > logSize) throw outOfRange(`tree size ${size} is beyond the log size ${logSize}`)
  if (index >= size) throw outOfRange(`leaf index ${index} is not below the tree size ${size}`)
  return skipFirst(nodesFor(index, 0, size))
}

/**
 * The nodes of PROOF(size1, D[0:size2]) (RFC 9162 §2.1.4.1). Equal sizes need an empty proof; a
 * proof from the empty tree proves nothing and is refused, as the verifier refuses it.
 */
export function consistencyProofPlan(size1: number, size2: number, logSize: number = size2): ProofPlan {
  checkSizes({ size1, size2, 'log size': logSize })
  if (size2 > logSize) throw outOfRange(`tree size ${size2} is beyond the log size ${logSize}`)
  if (size1 > size2) throw outOfRange(`size1 ${size1} is larger than size2 ${size2}`)
  if (size1 === 0) throw outOfRange('a consistency proof from the empty tree is meaningless')
  if (size1 === size2) return { ids: [], foldStart: 0, foldEnd: 0 }
  // Start from the largest perfect subtree ending at size1: the old tree's rightmost frontier node.
  const level = trailingZeros(size1)
  const plan = nodesFor(shiftRight(size1 - 1, level), level, size2)
  // When size1 is a power of two that node is the old root itself, which the verifier knows.
  return size1 === 2 ** level ? skipFirst(plan) : plan
}

/** Turns the stored hashes of `plan.ids` into the proof, folding the ephemeral node. */
export function assembleProof(plan: ProofPlan, hashes: readonly Uint8Array[]): Uint8Array[] {
  assert(hashes.length === plan.ids.length, `expected ${plan.ids.length} node hashes, got ${hashes.length}`)
  const proof: Uint8Array[] = []
  for (let i = 0; i < hashes.length; i++) {
    let hash = hashes[i]!
    assert(hash.length === hashSize, 'stored node hashes are 32 bytes')
    if (i === plan.foldStart && plan.foldEnd > plan.foldStart) {
      // Lowest subtree first: each next one is the left neighbour of everything folded so far.
      for (i += 1; i < plan.foldEnd; i++) {
        assert(hashes[i]!.length === hashSize, 'stored node hashes are 32 bytes')
        hash = nodeHash(hashes[i]!, hash)
      }
      i -= 1
    }
    proof.push(hash)
  }
  return proof
}

async function readPlan(plan: ProofPlan, read: NodeReader): Promise<Uint8Array[]> {
  const hashes = plan.ids.length === 0 ? [] : await read(plan.ids)
  return assembleProof(plan, hashes)
}

/** The inclusion proof of leaf `index` in the tree of `size` leaves, from stored nodes (one read). */
export async function inclusionProof(
  index: number,
  size: number,
  read: NodeReader,
  logSize?: number,
): Promise<Uint8Array[]> {
  return readPlan(inclusionProofPlan(index, size, logSize), read)
}

/** The consistency proof from tree size `size1` to `size2`, from stored nodes (one read). */
export async function consistencyProof(
  size1: number,
  size2: number,
  read: NodeReader,
  logSize?: number,
): Promise<Uint8Array[]> {
  return readPlan(consistencyProofPlan(size1, size2, logSize), read)
}

function invalid(message: string, detail?: Record<string, unknown>): VmError {
  return new VmError(
    'proof_invalid',
    message,
    detail === undefined ? { status: 400 } : { status: 400, detail },
  )
}

function checkProofHashes(proof: readonly Uint8Array[]): void {
  proof.forEach((hash, position) => {
    if (hash.length !== hashSize)
      throw invalid(`proof hash ${position} has ${hash.length} bytes, not ${hashSize}`)
  })
}

/** Hashes up the path below the fork: the proof bit says on which side the sibling is. */
function chainInner(seed: Uint8Array, proof: readonly Uint8Array[], index: number): Uint8Array {
  let hash = seed
  proof.forEach((sibling, bit) => {
    hash = bitAt(index, bit) === 0 ? nodeHash(hash, sibling) : nodeHash(sibling, hash)
  })
  return hash
}

/** Like chainInner, but only left siblings count: the hash of the older, smaller tree. */
function chainInnerRight(seed: Uint8Array, proof: readonly Uint8Array[], index: number): Uint8Array {
  let hash = seed
  proof.forEach((sibling, bit) => {
    if (bitAt(index, bit) === 1) hash = nodeHash(sibling, hash)
  })
  return hash
}

/** Above the fork, on the right border, every proof hash is a left sibling. */
function chainBorderRight(seed: Uint8Array, proof: readonly Uint8Array[]): Uint8Array {
  let hash = seed
  for (const sibling of proof) hash = nodeHash(sibling, hash)
  return hash
}

/** The root that an inclusion proof leads to (RFC 9162 §2.1.3.2); throws 'proof_invalid' if it is malformed. */
export function rootFromInclusionProof(
  leafHash: Uint8Array,
  index: number,
  size: number,
  proof: readonly Uint8Array[],
): Uint8Array {
  if (!isCount(index) || !isCount(size)) {
    throw invalid(`leaf index ${index} and tree size ${size} must be non-negative safe integers`)
  }
  if (index >= size) throw invalid(`leaf index ${index} is not below the tree size ${size}`)
  if (leafHash.length !== hashSize)
    throw invalid(`the leaf hash has ${leafHash.length} bytes, not ${hashSize}`)
  // Below the fork with leaf size-1 the path has siblings on both sides; above it only left ones.
  const inner = bitLength(xor(index, size - 1))
  const border = popCount(shiftRight(index, inner))
  if (proof.length !== inner + border) {
    throw invalid(
      `the inclusion proof has ${proof.length} hashes; leaf ${index} of ${size} needs ${inner + border}`,
    )
  }
  checkProofHashes(proof)
  return chainBorderRight(chainInner(leafHash, proof.slice(0, inner), index), proof.slice(inner))
}

/** RFC 9162 §2.1.3.2: throws VmError 'proof_invalid' unless the proof puts the leaf at `index` under `root`. */
export function verifyInclusion(
  leafHash: Uint8Array,
  index: number,
  size: number,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): void {
  const computed = rootFromInclusionProof(leafHash, index, size, proof)
  if (!bytesEqual(computed, root)) {
    throw invalid(
      `the inclusion proof of leaf ${index} leads to a different root than the tree of size ${size}`,
      {
        computed: toHex(computed),
        expected: toHex(root),
      },
    )
  }
}

/**
 * RFC 9162 §2.1.4.2: throws VmError 'proof_invalid' unless the tree of size2 with root2 extends the
 * tree of size1 with root1. Equal sizes need an empty proof and equal roots; size1 = 0 is refused
 * because nothing can prove it (transparency-dev/merkle does the same).
 */
export function verifyConsistency(
  size1: number,
  size2: number,
  proof: readonly Uint8Array[],
  root1: Uint8Array,
  root2: Uint8Array,
): void {
  if (!isCount(size1) || !isCount(size2)) {
    throw invalid(`tree sizes ${size1} and ${size2} must be non-negative safe integers`)
  }
  if (size2 < size1) throw invalid(`size2 ${size2} is smaller than size1 ${size1}`)
  if (size1 === 0) throw invalid('a consistency proof from the empty tree is meaningless')
  if (size1 === size2) {
    if (proof.length > 0) throw invalid(`the sizes are equal but the proof has ${proof.length} hashes`)
    if (!bytesEqual(root1, root2)) throw invalid(`the sizes are equal (${size1}) but the roots differ`)
    return
  }
  if (proof.length === 0) throw invalid(`the consistency proof from ${size1} to ${size2} is empty`)
  if (root1.length !== hashSize || root2.length !== hashSize) throw invalid(`roots must be ${hashSize} bytes`)
  checkProofHashes(proof)

  // The proof is the inclusion proof of the old tree's rightmost perfect subtree (size1's lowest
  // set bit), minus the levels below that subtree, and minus the subtree itself when it is root1.
  const shift = trailingZeros(size1)
  const inner = bitLength(xor(size1 - 1, size2 - 1)) - shift
  const border = popCount(shiftRight(size1 - 1, inner + shift))
  const seedIsRoot1 = size1 === 2 ** shift
  const start = seedIsRoot1 ? 0 : 1
  if (proof.length !== start + inner + border) {
    throw invalid(
      `the consistency proof has ${proof.length} hashes; from ${size1} to ${size2} needs ${start + inner + border}`,
    )
  }
  const seed = seedIsRoot1 ? root1 : proof[0]!
  const path = proof.slice(start, start + inner)
  const borderPath = proof.slice(start + inner)
  const mask = shiftRight(size1 - 1, shift)

  const computed1 = chainBorderRight(chainInnerRight(seed, path, mask), borderPath)
  if (!bytesEqual(computed1, root1)) {
    throw invalid(`the consistency proof does not lead to root1 of the tree of size ${size1}`)
  }
  const computed2 = chainBorderRight(chainInner(seed, path, mask), borderPath)
  if (!bytesEqual(computed2, root2)) {
    throw invalid(`the consistency proof does not lead to root2 of the tree of size ${size2}`)
  }
}

/**
 * The root of the older tree that a consistency proof from size1 to size2 attests, after checking that
 * the proof leads to `root2`: how a verifier learns what a log committed to at an earlier size (to find
 * where two views of a log part). Throws VmError 'proof_invalid' for a proof that does not lead to root2
 * or has the wrong length. When size1 is a power of two the proof omits the old root (RFC 9162 §2.1.4.1),
 * so it cannot be computed from the proof: VmError 'proof_out_of_range'.
 */
export function rootFromConsistencyProof(
  size1: number,
  size2: number,
  proof: readonly Uint8Array[],
  root2: Uint8Array,
): Uint8Array {
  if (!isCount(size1) || !isCount(size2)) {
    throw invalid(`tree sizes ${size1} and ${size2} must be non-negative safe integers`)
  }
  if (size2 < size1) throw invalid(`size2 ${size2} is smaller than size1 ${size1}`)
  if (size1 === 0) throw invalid('a consistency proof from the empty tree is meaningless')
  if (size1 === size2) {
    if (proof.length > 0) throw invalid(`the sizes are equal but the proof has ${proof.length} hashes`)
    return root2.slice()
  }
  if (root2.length !== hashSize) throw invalid(`roots must be ${hashSize} bytes`)
  const shift = trailingZeros(size1)
  if (size1 === 2 ** shift) {
    throw outOfRange(`the consistency proof from ${size1}, a power of two, does not hold the old root`)
  }
  checkProofHashes(proof)
  // As in verifyConsistency: the seed is the old tree's rightmost perfect subtree, proof[0].
  const inner = bitLength(xor(size1 - 1, size2 - 1)) - shift
  const border = popCount(shiftRight(size1 - 1, inner + shift))
  if (proof.length !== 1 + inner + border) {
    throw invalid(
      `the consistency proof has ${proof.length} hashes; from ${size1} to ${size2} needs ${1 + inner + border}`,
    )
  }
  const seed = proof[0]!
  const path = proof.slice(1, 1 + inner)
  const borderPath = proof.slice(1 + inner)
  const mask = shiftRight(size1 - 1, shift)
  if (!bytesEqual(chainBorderRight(chainInner(seed, path, mask), borderPath), root2)) {
    throw invalid(`the consistency proof does not lead to root2 of the tree of size ${size2}`)
  }
  return chainBorderRight(chainInnerRight(seed, path, mask), borderPath)
}

/** Node hashes in memory, keyed by (level, index): for tests and small tools. */
export class MemoryNodeStore {
  readonly #nodes = new Map<string, Uint8Array>()

  get count(): number {
    return this.#nodes.size
  }

  write(nodes: readonly NodeWrite[]): void {
    for (const node of nodes) this.#nodes.set(`${node.level}/${node.index}`, node.hash)
  }

  /** A NodeReader; an arrow so it can be passed as `store.read`. */
  readonly read = async (ids: readonly NodeId[]): Promise<Uint8Array[]> =>
    ids.map((id) => {
      const hash = this.#nodes.get(`${id.level}/${id.index}`)
      if (hash === undefined) {
        throw new VmError('node_missing', `tree node ${id.level}/${id.index} is not stored`, { status: 500 })
      }
      return hash
    })
}
