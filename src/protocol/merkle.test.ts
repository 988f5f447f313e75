import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { concatBytes, fromBase64, fromHex, toHex, utf8 } from './encoding.js'
import { VmError } from './errors.js'
import { sha256 } from './hash.js'
import {
  consistencyProof,
  consistencyProofPlan,
  emptyRoot,
  Frontier,
  frontierNodeIds,
  inclusionProof,
  inclusionProofPlan,
  leafHash,
  MemoryNodeStore,
  type NodeId,
  nodeHash,
  rangeSubtrees,
  rootFromConsistencyProof,
  rootFromInclusionProof,
  verifyConsistency,
  verifyInclusion,
} from './merkle.js'

// Tests run from dist/src/protocol/; the repository's parent folder holds shared/.
const vectorFolder = new URL('../../../../shared/testdata/rfc9162/', import.meta.url)

// The leaves behind the vector trees, from the vector folder's README.
const vectorLeaves = [
  '',
  '00',
  '10',
  '2021',
  '3031',
  '40414243',
  '5051525354555657',
  '606162636465666768696a6b6c6d6e6f',
].map(fromHex)
const vectorRootOfEight = '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328'

// ---------------------------------------------------------------------------------------------
// A naive RFC 9162 §2.1 reference, written straight from the RFC's recursive definitions.

function largestPowerOfTwoBelow(n: number): number {
  let k = 1
  while (k * 2 < n) k *= 2
  return k
}

function referenceRoot(leaves: readonly Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return sha256(new Uint8Array(0))
  if (leaves.length === 1) return leafHash(leaves[0]!)
  const k = largestPowerOfTwoBelow(leaves.length)
  return nodeHash(referenceRoot(leaves.slice(0, k)), referenceRoot(leaves.slice(k)))
}

function referencePath(m: number, leaves: readonly Uint8Array[]): Uint8Array[] {
  if (leaves.length === 1) return []
  const k = largestPowerOfTwoBelow(leaves.length)
  if (m < k) return [...referencePath(m, leaves.slice(0, k)), referenceRoot(leaves.slice(k))]
  return [...referencePath(m - k, leaves.slice(k)), referenceRoot(leaves.slice(0, k))]
}

function referenceSubproof(m: number, leaves: readonly Uint8Array[], complete: boolean): Uint8Array[] {
  if (m === leaves.length) return complete ? [] : [referenceRoot(leaves)]
  const k = largestPowerOfTwoBelow(leaves.length)
  if (m <= k) return [...referenceSubproof(m, leaves.slice(0, k), complete), referenceRoot(leaves.slice(k))]
  return [...referenceSubproof(m - k, leaves.slice(k), false), referenceRoot(leaves.slice(0, k))]
}

function referenceProof(m: number, leaves: readonly Uint8Array[]): Uint8Array[] {
  return referenceSubproof(m, leaves, true)
}

// ---------------------------------------------------------------------------------------------

function buildLog(leaves: readonly Uint8Array[]): { frontier: Frontier; store: MemoryNodeStore } {
  const frontier = new Frontier()
  const store = new MemoryNodeStore()
  for (const leaf of leaves) store.write(frontier.append(leafHash(leaf)))
  return { frontier, store }
}

/** Distinct leaves, so that no proof can be valid for another position by coincidence. */
function distinctLeaves(count: number, salt = 0): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => utf8(`leaf ${i} salt ${salt}`))
}

function flipped(bytes: Uint8Array, position: number, bit = 0): Uint8Array {
  const copy = bytes.slice()
  copy[position]! ^= 1 << bit
  return copy
}

function isProofInvalid(error: unknown): boolean {
  return error instanceof VmError && error.code === 'proof_invalid'
}

function isOutOfRange(error: unknown): boolean {
  return error instanceof VmError && error.code === 'proof_out_of_range' && error.status === 400
}

function inclusionHolds(
  leaf: Uint8Array,
  index: number,
  size: number,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  try {
    verifyInclusion(leaf, index, size, proof, root)
    return true
  } catch (error) {
    assert.ok(isProofInvalid(error), `unexpected error ${String(error)}`)
    return false
  }
}

function consistencyHolds(
  size1: number,
  size2: number,
  proof: readonly Uint8Array[],
  root1: Uint8Array,
  root2: Uint8Array,
): boolean {
  try {
    verifyConsistency(size1, size2, proof, root1, root2)
    return true
  } catch (error) {
    assert.ok(isProofInvalid(error), `unexpected error ${String(error)}`)
    return false
  }
}

/** Where each sibling of PATH(index, size) sits, bottom up: 'l' or 'r'. */
function pathSides(index: number, size: number): string {
  let sides = ''
  let width = size
  let offset = 0
  // Walk down from the root as RFC 9162 PATH does, prepending so the result reads bottom up.
  while (width > 1) {
    const k = largestPowerOfTwoBelow(width)
    if (index - offset < k) {
      sides = `r${sides}`
      width = k
    } else {
      sides = `l${sides}`
      offset += k
      width -= k
    }
  }
  return sides
}

function sameHashes(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  return a.length === b.length && a.every((hash, i) => toHex(hash) === toHex(b[i]!))
}

// ---------------------------------------------------------------------------------------------
// (a) The transparency-dev/merkle vectors.

interface InclusionVector {
  readonly leafIdx: number
  readonly treeSize: number
  readonly root: string
  readonly leafHash: string
  readonly proof: readonly string[] | null
  readonly desc: string
  readonly wantErr: boolean
}

interface ConsistencyVector {
  readonly size1: number
  readonly size2: number
  readonly root1: string
  readonly root2: string
  readonly proof: readonly string[] | null
  readonly desc: string
  readonly wantErr: boolean
}

async function jsonFiles(folder: URL): Promise<URL[]> {
  const files: URL[] = []
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    if (entry.isDirectory()) files.push(...(await jsonFiles(new URL(`${entry.name}/`, folder))))
    else if (entry.name.endsWith('.json')) files.push(new URL(entry.name, folder))
  }
  return files.sort((a, b) => a.href.localeCompare(b.href))
}

async function readVectors<T>(kind: string): Promise<{ name: string; vector: T }[]> {
  const folder = new URL(`${kind}/`, vectorFolder)
  const files = await jsonFiles(folder)
  return Promise.all(
    files.map(async (file) => ({
      name: file.href.slice(folder.href.length),
      vector: JSON.parse(await readFile(file, 'utf8')) as T,
    })),
  )
}

const inclusionVectors = await readVectors<InclusionVector>('inclusion')
const consistencyVectors = await readVectors<ConsistencyVector>('consistency')

function decodeProof(proof: readonly string[] | null): Uint8Array[] {
  return (proof ?? []).map(fromBase64)
}

describe('RFC 9162 test vectors', () => {
  test('the vector folder is complete', () => {
    assert.ok(inclusionVectors.length >= 90, `only ${inclusionVectors.length} inclusion vectors`)
    assert.ok(consistencyVectors.length >= 90, `only ${consistencyVectors.length} consistency vectors`)
    assert.ok(inclusionVectors.some(({ vector }) => !vector.wantErr))
    assert.ok(consistencyVectors.some(({ vector }) => !vector.wantErr))
  })

  test('the eight-leaf tree of the README has the documented root', () => {
    assert.equal(toHex(referenceRoot(vectorLeaves)), vectorRootOfEight)
    assert.equal(toHex(buildLog(vectorLeaves).frontier.root()), vectorRootOfEight)
  })

  describe('inclusion', () => {
    for (const { name, vector } of inclusionVectors) {
      test(`${name}: ${vector.desc} ${vector.wantErr ? 'is refused' : 'is accepted'}`, () => {
        const check = () =>
          verifyInclusion(
            fromBase64(vector.leafHash),
            vector.leafIdx,
            vector.treeSize,
            decodeProof(vector.proof),
            fromBase64(vector.root),
          )
        if (vector.wantErr) assert.throws(check, isProofInvalid)
        else assert.doesNotThrow(check)
      })
    }
  })

  describe('consistency', () => {
    for (const { name, vector } of consistencyVectors) {
      test(`${name}: ${vector.desc} ${vector.wantErr ? 'is refused' : 'is accepted'}`, () => {
        const check = () =>
          verifyConsistency(
            vector.size1,
            vector.size2,
            decodeProof(vector.proof),
            fromBase64(vector.root1),
            fromBase64(vector.root2),
          )
        if (vector.wantErr) assert.throws(check, isProofInvalid)
        else assert.doesNotThrow(check)
      })
    }
  })

  describe('rootFromConsistencyProof', () => {
    const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0
    for (const { name, vector } of consistencyVectors) {
      const { size1, size2 } = vector
      // A proof from a power of two omits the old root; those vectors cannot give it back.
      if (size1 < 1 || size1 > size2 || (isPowerOfTwo(size1) && size1 < size2)) continue
      test(`${name}: ${vector.desc} ${vector.wantErr ? 'does not give root1' : 'gives root1'}`, () => {
        const compute = () =>
          rootFromConsistencyProof(size1, size2, decodeProof(vector.proof), fromBase64(vector.root2))
        if (!vector.wantErr) {
          assert.equal(toHex(compute()), toHex(fromBase64(vector.root1)))
          return
        }
        // A mutation is refused, or it leads to another root than root1 (so verifyConsistency refuses it).
        let computed: Uint8Array | null = null
        try {
          computed = compute()
        } catch (error) {
          assert.ok(isProofInvalid(error), String(error))
        }
        if (computed !== null) assert.notEqual(toHex(computed), toHex(fromBase64(vector.root1)))
      })
    }

    test('a proof from a power of two is refused as out of range, not as invalid', () => {
      const fromPowers = consistencyVectors.filter(
        ({ vector }) => !vector.wantErr && isPowerOfTwo(vector.size1) && vector.size1 < vector.size2,
      )
      assert.ok(fromPowers.length > 0)
      for (const { vector } of fromPowers) {
        assert.throws(
          () =>
            rootFromConsistencyProof(
              vector.size1,
              vector.size2,
              decodeProof(vector.proof),
              fromBase64(vector.root2),
            ),
          isOutOfRange,
        )
      }
    })
  })

  test('proofs generated from stored nodes equal the happy-path vectors', async () => {
    const { store } = buildLog(vectorLeaves)
    let compared = 0
    // The numbered folders are proofs in the README's tree; the others are hand-made edge cases.
    const fromTree = (name: string) => /^\d+\//.test(name)
    for (const { name, vector } of inclusionVectors) {
      if (!fromTree(name) || vector.wantErr) continue
      const proof = await inclusionProof(vector.leafIdx, vector.treeSize, store.read)
      assert.deepEqual(proof.map(toHex), decodeProof(vector.proof).map(toHex))
      assert.equal(
        toHex(referenceRoot(vectorLeaves.slice(0, vector.treeSize))),
        toHex(fromBase64(vector.root)),
      )
      compared++
    }
    for (const { name, vector } of consistencyVectors) {
      if (!fromTree(name) || vector.wantErr) continue
      const proof = await consistencyProof(vector.size1, vector.size2, store.read)
      assert.deepEqual(proof.map(toHex), decodeProof(vector.proof).map(toHex))
      compared++
    }
    assert.ok(compared >= 10, `only ${compared} happy paths compared`)
  })
})

// ---------------------------------------------------------------------------------------------

describe('hashes', () => {
  test('leaf, node and empty-tree hashes follow RFC 9162 §2.1', () => {
    const leaf = utf8('leaf')
    assert.equal(toHex(leafHash(leaf)), toHex(sha256(concatBytes(new Uint8Array([0]), leaf))))
    const left = sha256(utf8('l'))
    const right = sha256(utf8('r'))
    assert.equal(toHex(nodeHash(left, right)), toHex(sha256(concatBytes(new Uint8Array([1]), left, right))))
    assert.equal(toHex(emptyRoot()), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
  })

  test('emptyRoot hands out copies', () => {
    const root = emptyRoot()
    root[0] = 0
    assert.equal(toHex(emptyRoot()).slice(0, 2), 'e3')
  })
})

describe('Frontier', () => {
  test('an empty frontier has the empty root', () => {
    const frontier = new Frontier()
    assert.equal(frontier.size, 0)
    assert.equal(toHex(frontier.root()), toHex(emptyRoot()))
    assert.deepEqual(frontier.hashes(), [])
  })

  test('frontierNodeIds lists the binary decomposition, largest first', () => {
    assert.deepEqual(frontierNodeIds(0), [])
    assert.deepEqual(frontierNodeIds(1), [{ level: 0, index: 0 }])
    assert.deepEqual(frontierNodeIds(8), [{ level: 3, index: 0 }])
    assert.deepEqual(frontierNodeIds(13), [
      { level: 3, index: 0 },
      { level: 2, index: 2 },
      { level: 0, index: 12 },
    ])
    const ids = frontierNodeIds(2 ** 53 - 1)
    assert.equal(ids.length, 53)
    assert.deepEqual(ids[0], { level: 52, index: 0 })
    assert.deepEqual(ids[52], { level: 0, index: 2 ** 53 - 2 })
  })

  test('append returns the leaf and every completed subtree', () => {
    const frontier = new Frontier()
    const hashes = distinctLeaves(4).map(leafHash)
    assert.deepEqual(
      frontier.append(hashes[0]!).map(({ level, index }) => [level, index]),
      [[0, 0]],
    )
    assert.deepEqual(
      frontier.append(hashes[1]!).map(({ level, index }) => [level, index]),
      [
        [0, 1],
        [1, 0],
      ],
    )
    assert.deepEqual(
      frontier.append(hashes[2]!).map(({ level, index }) => [level, index]),
      [[0, 2]],
    )
    const writes = frontier.append(hashes[3]!)
    assert.deepEqual(
      writes.map(({ level, index }) => [level, index]),
      [
        [0, 3],
        [1, 1],
        [2, 0],
      ],
    )
    assert.equal(toHex(writes[2]!.hash), toHex(frontier.root()))
  })

  test('a frontier loaded from stored nodes continues the same log', async () => {
    const leaves = distinctLeaves(37)
    const { store } = buildLog(leaves.slice(0, 21))
    const loaded = new Frontier(21, await store.read(frontierNodeIds(21)))
    assert.equal(toHex(loaded.root()), toHex(referenceRoot(leaves.slice(0, 21))))
    for (const leaf of leaves.slice(21)) store.write(loaded.append(leafHash(leaf)))
    assert.equal(toHex(loaded.root()), toHex(referenceRoot(leaves)))
  })

  test('clone is independent of the original', () => {
    const { frontier } = buildLog(distinctLeaves(5))
    const copy = frontier.clone()
    copy.append(leafHash(utf8('more')))
    assert.equal(frontier.size, 5)
    assert.equal(copy.size, 6)
    assert.equal(toHex(frontier.root()), toHex(referenceRoot(distinctLeaves(5))))
  })

  test('the constructor refuses a frontier that does not match its size', () => {
    const hash = sha256(utf8('x'))
    const isFrontierInvalid = (error: unknown) =>
      error instanceof VmError && error.code === 'frontier_invalid'
    assert.throws(() => new Frontier(3, [hash]), isFrontierInvalid)
    assert.throws(() => new Frontier(1, [hash, hash]), isFrontierInvalid)
    assert.throws(() => new Frontier(1, [hash.slice(1)]), isFrontierInvalid)
    assert.throws(() => new Frontier(-1, []), isFrontierInvalid)
    assert.throws(() => new Frontier(1.5, [hash]), isFrontierInvalid)
    assert.throws(() => frontierNodeIds(2 ** 53), isFrontierInvalid)
  })

  test('appending at huge sizes keeps exact indexes', () => {
    const standIn = (size: number) =>
      new Frontier(
        size,
        frontierNodeIds(size).map(() => sha256(utf8('stand-in'))),
      )
    const full = standIn(2 ** 52 - 1)
    const writes = full.append(sha256(utf8('leaf')))
    assert.equal(writes.length, 53)
    assert.deepEqual(
      writes.map(({ level, index }) => [level, index]),
      Array.from({ length: 53 }, (_, level) => [level, (2 ** 52 - 1 - (2 ** level - 1)) / 2 ** level]),
    )
    assert.equal(full.hashes().length, 1)
    const nearTop = standIn(2 ** 53 - 3)
    assert.deepEqual(
      nearTop.append(sha256(utf8('leaf'))).map(({ level, index }) => [level, index]),
      [
        [0, 2 ** 53 - 3],
        [1, 2 ** 52 - 2],
      ],
    )
    assert.equal(nearTop.size, 2 ** 53 - 2)
  })
})

// ---------------------------------------------------------------------------------------------
// (b) Properties against the naive reference.

const leafListArbitrary = fc.array(fc.uint8Array({ maxLength: 48 }), { maxLength: 150 })

describe('properties', () => {
  test('the frontier root equals the naive MTH, also after reloading from stored nodes', async () => {
    await fc.assert(
      fc.asyncProperty(leafListArbitrary, fc.nat(), async (leaves, cut) => {
        const { frontier, store } = buildLog(leaves)
        assert.equal(frontier.size, leaves.length)
        assert.equal(toHex(frontier.root()), toHex(referenceRoot(leaves)))
        const size = leaves.length === 0 ? 0 : cut % (leaves.length + 1)
        const loaded = new Frontier(size, await store.read(frontierNodeIds(size)))
        assert.equal(toHex(loaded.root()), toHex(referenceRoot(leaves.slice(0, size))))
      }),
      { numRuns: 150 },
    )
  })

  test('inclusion proofs from stored nodes equal PATH and verify', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 90 }),
        fc.nat(),
        fc.nat(),
        fc.nat(),
        async (logSize, sizeSeed, indexSeed, salt) => {
          const leaves = distinctLeaves(logSize, salt)
          const { store } = buildLog(leaves)
          const size = 1 + (sizeSeed % logSize)
          const index = indexSeed % size
          const proof = await inclusionProof(index, size, store.read, logSize)
          assert.ok(sameHashes(proof, referencePath(index, leaves.slice(0, size))))
          const root = referenceRoot(leaves.slice(0, size))
          const leaf = leafHash(leaves[index]!)
          verifyInclusion(leaf, index, size, proof, root)
          assert.equal(toHex(rootFromInclusionProof(leaf, index, size, proof)), toHex(root))
        },
      ),
      { numRuns: 200 },
    )
  })

  test('consistency proofs from stored nodes equal PROOF and verify', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 90 }),
        fc.nat(),
        fc.nat(),
        fc.nat(),
        async (logSize, size2Seed, size1Seed, salt) => {
          const leaves = distinctLeaves(logSize, salt)
          const { store } = buildLog(leaves)
          const size2 = 1 + (size2Seed % logSize)
          const size1 = 1 + (size1Seed % size2)
          const proof = await consistencyProof(size1, size2, store.read, logSize)
          assert.ok(sameHashes(proof, referenceProof(size1, leaves.slice(0, size2))))
          verifyConsistency(
            size1,
            size2,
            proof,
            referenceRoot(leaves.slice(0, size1)),
            referenceRoot(leaves.slice(0, size2)),
          )
        },
      ),
      { numRuns: 200 },
    )
  })

  test('rootFromConsistencyProof gives the naive MTH of the older tree, and refuses a flipped root2', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 90 }),
        fc.nat(),
        fc.nat(),
        fc.nat({ max: 31 }),
        async (logSize, size2Seed, size1Seed, position) => {
          const leaves = distinctLeaves(logSize)
          const { store } = buildLog(leaves)
          const size2 = 1 + (size2Seed % logSize)
          const size1 = 1 + (size1Seed % size2)
          const root2 = referenceRoot(leaves.slice(0, size2))
          if ((size1 & (size1 - 1)) === 0 && size1 < size2) return
          const proof = await consistencyProof(size1, size2, store.read, logSize)
          const root1 = rootFromConsistencyProof(size1, size2, proof, root2)
          assert.equal(toHex(root1), toHex(referenceRoot(leaves.slice(0, size1))))
          if (size1 < size2) {
            assert.throws(
              () => rootFromConsistencyProof(size1, size2, proof, flipped(root2, position)),
              isProofInvalid,
            )
          }
        },
      ),
      { numRuns: 200 },
    )
  })

  test('a flipped bit anywhere in an inclusion proof, root or leaf is refused', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 70 }),
        fc.nat(),
        fc.nat(),
        fc.nat({ max: 31 }),
        fc.nat({ max: 7 }),
        async (size, indexSeed, elementSeed, position, bit) => {
          const leaves = distinctLeaves(size)
          const { store } = buildLog(leaves)
          const index = indexSeed % size
          const proof = await inclusionProof(index, size, store.read)
          const root = referenceRoot(leaves)
          const leaf = leafHash(leaves[index]!)
          assert.ok(!inclusionHolds(leaf, index, size, proof, flipped(root, position, bit)))
          assert.ok(!inclusionHolds(flipped(leaf, position, bit), index, size, proof, root))
          if (proof.length > 0) {
            const element = elementSeed % proof.length
            const bad = proof.map((hash, i) => (i === element ? flipped(hash, position, bit) : hash))
            assert.ok(!inclusionHolds(leaf, index, size, bad, root))
          }
        },
      ),
      { numRuns: 200 },
    )
  })

  test('an inclusion proof holds for another index or size only if it is that PATH too', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 70 }),
        fc.nat(),
        fc.nat(),
        fc.nat(),
        fc.nat(),
        async (logSize, sizeSeed, indexSeed, otherSizeSeed, otherIndexSeed) => {
          const leaves = distinctLeaves(logSize)
          const { store } = buildLog(leaves)
          const size = 1 + (sizeSeed % logSize)
          const index = indexSeed % size
          const proof = await inclusionProof(index, size, store.read)
          const leaf = leafHash(leaves[index]!)
          // Another index, same leaf and tree: a leaf is in one place only.
          const otherIndex = otherIndexSeed % size
          if (otherIndex !== index) {
            assert.ok(!inclusionHolds(leaf, otherIndex, size, proof, referenceRoot(leaves.slice(0, size))))
          }
          // Another size with that tree's true root: RFC 9162 roots do not commit to the size, so the
          // same proof is valid exactly when it is also PATH(index) of the other tree.
          const otherSize = 1 + (otherSizeSeed % logSize)
          if (otherSize !== size && index < otherSize) {
            const holds = inclusionHolds(
              leaf,
              index,
              otherSize,
              proof,
              referenceRoot(leaves.slice(0, otherSize)),
            )
            assert.equal(holds, sameHashes(proof, referencePath(index, leaves.slice(0, otherSize))))
          }
          // Another size claimed for the original root is refused unless it hashes the proof in the
          // very same order, which is all the root can tell.
          for (const wrongSize of [size - 1, size + 1, size * 2, Math.floor(size / 2)]) {
            if (wrongSize <= index || wrongSize === size) continue
            const holds = inclusionHolds(leaf, index, wrongSize, proof, referenceRoot(leaves.slice(0, size)))
            assert.equal(holds, pathSides(index, wrongSize) === pathSides(index, size))
          }
        },
      ),
      { numRuns: 200 },
    )
  })

  test('a flipped bit anywhere in a consistency proof or root is refused', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 70 }),
        fc.nat(),
        fc.nat(),
        fc.nat({ max: 31 }),
        fc.nat({ max: 7 }),
        async (size2, size1Seed, elementSeed, position, bit) => {
          const leaves = distinctLeaves(size2)
          const { store } = buildLog(leaves)
          const size1 = 1 + (size1Seed % (size2 - 1))
          const proof = await consistencyProof(size1, size2, store.read)
          const root1 = referenceRoot(leaves.slice(0, size1))
          const root2 = referenceRoot(leaves)
          assert.ok(consistencyHolds(size1, size2, proof, root1, root2))
          assert.ok(!consistencyHolds(size1, size2, proof, flipped(root1, position, bit), root2))
          assert.ok(!consistencyHolds(size1, size2, proof, root1, flipped(root2, position, bit)))
          assert.ok(!consistencyHolds(size1, size2, proof, root2, root1))
          const element = elementSeed % proof.length
          const bad = proof.map((hash, i) => (i === element ? flipped(hash, position, bit) : hash))
          assert.ok(!consistencyHolds(size1, size2, bad, root1, root2))
          assert.ok(!consistencyHolds(size1, size2, proof.slice(0, -1), root1, root2))
          assert.ok(!consistencyHolds(size1, size2, [...proof, root1], root1, root2))
          assert.ok(!consistencyHolds(size1, size2, [root1, ...proof], root1, root2))
        },
      ),
      { numRuns: 200 },
    )
  })

  test('a consistency proof holds for other sizes only if it is that PROOF too', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 70 }),
        fc.nat(),
        fc.nat(),
        fc.nat(),
        fc.nat(),
        async (logSize, size2Seed, size1Seed, other1Seed, other2Seed) => {
          const leaves = distinctLeaves(logSize)
          const { store } = buildLog(leaves)
          const size2 = 2 + (size2Seed % (logSize - 1))
          const size1 = 1 + (size1Seed % (size2 - 1))
          const proof = await consistencyProof(size1, size2, store.read)
          const other1 = 1 + (other1Seed % logSize)
          const other2 = other1 + (other2Seed % (logSize - other1 + 1))
          if (other1 === size1 && other2 === size2) return
          const root = (size: number) => referenceRoot(leaves.slice(0, size))
          // With the true roots of the other sizes, it holds exactly when it is their proof too.
          const holds = consistencyHolds(other1, other2, proof, root(other1), root(other2))
          assert.equal(
            holds,
            other1 !== other2 && sameHashes(proof, referenceProof(other1, leaves.slice(0, other2))),
          )
          // With the original roots claimed for other sizes, it holds only where the proof has the same shape.
          if (other1 !== size1) assert.ok(!consistencyHolds(other1, size2, proof, root(size1), root(size2)))
        },
      ),
      { numRuns: 200 },
    )
  })
})

describe('exhaustive small trees', () => {
  test('every inclusion and consistency proof up to 17 leaves; every single-byte change is refused', async () => {
    const leaves = distinctLeaves(17)
    const { store } = buildLog(leaves)
    for (let size = 1; size <= leaves.length; size++) {
      const root = referenceRoot(leaves.slice(0, size))
      for (let index = 0; index < size; index++) {
        const proof = await inclusionProof(index, size, store.read, leaves.length)
        assert.ok(sameHashes(proof, referencePath(index, leaves.slice(0, size))), `PATH(${index}, ${size})`)
        const leaf = leafHash(leaves[index]!)
        verifyInclusion(leaf, index, size, proof, root)
        proof.forEach((hash, element) => {
          for (let position = 0; position < hash.length; position++) {
            const bad = proof.map((other, i) => (i === element ? flipped(other, position) : other))
            assert.ok(!inclusionHolds(leaf, index, size, bad, root))
          }
        })
      }
      for (let size1 = 1; size1 <= size; size1++) {
        const proof = await consistencyProof(size1, size, store.read, leaves.length)
        assert.ok(sameHashes(proof, referenceProof(size1, leaves.slice(0, size))), `PROOF(${size1}, ${size})`)
        const root1 = referenceRoot(leaves.slice(0, size1))
        verifyConsistency(size1, size, proof, root1, root)
        proof.forEach((hash, element) => {
          for (let position = 0; position < hash.length; position++) {
            const bad = proof.map((other, i) => (i === element ? flipped(other, position) : other))
            assert.ok(!consistencyHolds(size1, size, bad, root1, root))
          }
        })
      }
    }
  })
})

describe('range and input checks', () => {
  test('proof requests outside the log are refused with proof_out_of_range', async () => {
    const { store } = buildLog(distinctLeaves(10))
    await assert.rejects(inclusionProof(10, 10, store.read), isOutOfRange)
    await assert.rejects(inclusionProof(0, 0, store.read), isOutOfRange)
    await assert.rejects(inclusionProof(3, 11, store.read, 10), isOutOfRange)
    await assert.rejects(inclusionProof(-1, 5, store.read), isOutOfRange)
    await assert.rejects(inclusionProof(0.5, 5, store.read), isOutOfRange)
    await assert.rejects(consistencyProof(6, 5, store.read), isOutOfRange)
    await assert.rejects(consistencyProof(3, 11, store.read, 10), isOutOfRange)
    await assert.rejects(consistencyProof(0, 5, store.read), isOutOfRange)
    await assert.rejects(consistencyProof(0, 0, store.read), isOutOfRange)
    assert.throws(() => inclusionProofPlan(2 ** 53, 2 ** 53 + 2), isOutOfRange)
    assert.throws(() => consistencyProofPlan(1, Number.NaN), isOutOfRange)
    assert.deepEqual(await consistencyProof(7, 7, store.read), [])
  })

  test('verification refuses impossible indexes and sizes as proof_invalid', () => {
    const hash = sha256(utf8('x'))
    assert.throws(() => verifyInclusion(hash, 1, 1, [], hash), isProofInvalid)
    assert.throws(() => verifyInclusion(hash, -1, 1, [], hash), isProofInvalid)
    assert.throws(() => verifyInclusion(hash, 0, 2 ** 64, [], hash), isProofInvalid)
    assert.throws(() => verifyInclusion(hash, 0, 1, [], hash.slice(1)), isProofInvalid)
    assert.throws(() => verifyInclusion(hash, 0, 2, [hash.slice(1)], hash), isProofInvalid)
    assert.throws(() => verifyConsistency(1, 2 ** 64, [hash], hash, hash), isProofInvalid)
    assert.throws(() => verifyConsistency(Number.NaN, 2, [hash], hash, hash), isProofInvalid)
    assert.throws(() => verifyConsistency(0, 0, [], emptyRoot(), emptyRoot()), isProofInvalid)
    assert.throws(() => verifyConsistency(1, 2, [hash.slice(2)], hash, hash), isProofInvalid)
    verifyConsistency(1, 1, [], hash, hash)
  })

  test('messages say what failed', () => {
    const hash = sha256(utf8('x'))
    assert.throws(() => verifyInclusion(hash, 0, 2, [], hash), /needs 1/)
    assert.throws(() => verifyInclusion(hash, 0, 2, [hash], hash), /different root/)
    assert.throws(() => verifyConsistency(2, 1, [], hash, hash), /smaller than size1/)
    assert.throws(() => verifyConsistency(1, 2, [hash], hash, hash), /root2/)
  })

  test('a missing stored node is reported, not papered over', async () => {
    const store = new MemoryNodeStore()
    await assert.rejects(
      inclusionProof(0, 4, store.read),
      (error: unknown) => error instanceof VmError && error.code === 'node_missing',
    )
  })
})

// ---------------------------------------------------------------------------------------------
// Large sizes: a virtual tree whose leaves are all equal, so every perfect subtree of a level has
// the same hash and any size's root is the fold of its binary decomposition.

describe('sizes up to 2^53', () => {
  const levelHashes: Uint8Array[] = [leafHash(utf8('same'))]
  for (let level = 1; level <= 53; level++)
    levelHashes.push(nodeHash(levelHashes[level - 1]!, levelHashes[level - 1]!))
  const read = async (ids: readonly NodeId[]) => ids.map((id) => levelHashes[id.level]!)
  const virtualRoot = (size: number) =>
    new Frontier(
      size,
      frontierNodeIds(size).map((id) => levelHashes[id.level]!),
    ).root()

  test('inclusion and consistency proofs verify at huge sizes', async () => {
    const sizes = [
      2 ** 32 - 1,
      2 ** 32,
      2 ** 32 + 1,
      2 ** 40 + 12_345,
      2 ** 52,
      2 ** 53 - 1,
      6_004_799_503_160_661,
    ]
    for (const size of sizes) {
      const root = virtualRoot(size)
      for (const index of [0, 1, size - 1, size - 2, Math.floor(size / 3), 2 ** 31, 2 ** 32 - 1]) {
        if (index < 0 || index >= size) continue
        const proof = await inclusionProof(index, size, read)
        verifyInclusion(levelHashes[0]!, index, size, proof, root)
        assert.ok(proof.length <= 53)
      }
      for (const size1 of [1, 2, 3, 2 ** 31 + 7, Math.floor(size / 2) + 1, size - 1]) {
        if (size1 >= size) continue
        const proof = await consistencyProof(size1, size, read)
        verifyConsistency(size1, size, proof, virtualRoot(size1), root)
      }
    }
  })
})

// ---------------------------------------------------------------------------------------------
// (c) Cost: appends and proofs touch O(log n) nodes.

describe('cost', () => {
  test('each append creates at most log2(n)+1 nodes, and fewer than two per append overall', () => {
    const frontier = new Frontier()
    let total = 0
    const appends = 5_000
    for (let n = 1; n <= appends; n++) {
      const writes = frontier.append(sha256(utf8(`${n}`)))
      assert.ok(writes.length <= Math.floor(Math.log2(n)) + 1, `append #${n} wrote ${writes.length} nodes`)
      // Every write above the leaf is exactly one node hash: the frontier hashes nothing else.
      total += writes.length
    }
    assert.ok(total < 2 * appends)
    assert.ok(frontier.hashes().length <= Math.ceil(Math.log2(appends + 1)))
  })

  test('a proof reads O(log n) nodes in a single batch', async () => {
    const size = 3_000
    const { store } = buildLog(distinctLeaves(size))
    let calls = 0
    let largest = 0
    const counting = async (ids: readonly NodeId[]) => {
      calls++
      largest = Math.max(largest, ids.length)
      return store.read(ids)
    }
    const bound = 2 * Math.ceil(Math.log2(size))
    for (let trial = 0; trial < 200; trial++) {
      const treeSize = 1 + ((trial * 7919) % size)
      calls = 0
      await inclusionProof((trial * 104_729) % treeSize, treeSize, counting)
      assert.ok(calls <= 1)
      calls = 0
      await consistencyProof(1 + ((trial * 31) % treeSize), treeSize, counting)
      assert.ok(calls <= 1)
    }
    assert.ok(largest <= bound, `a proof read ${largest} nodes`)
  })
})

describe('subtrees of a range', () => {
  const hashesOf = (first: number, count: number) =>
    concatBytes(...Array.from({ length: count }, (_, i) => leafHash(utf8(`leaf ${first + i}`))))

  test('a range appended as its subtrees gives the frontier its leaves give one by one', () => {
    fc.assert(
      fc.property(fc.nat(300), fc.integer({ min: 1, max: 300 }), (first, count) => {
        const before = new Frontier()
        const prefix = hashesOf(0, first)
        for (let i = 0; i < first; i++) before.append(prefix.subarray(i * 32, (i + 1) * 32))
        const byLeaf = before.clone()
        const leafHashes = hashesOf(first, count)
        for (let i = 0; i < count; i++) byLeaf.append(leafHashes.subarray(i * 32, (i + 1) * 32))
        const bySubtree = before.clone()
        const subtrees = rangeSubtrees(first, leafHashes)
        for (const { level, hash } of subtrees) bySubtree.appendSubtree(level, hash)
        assert.equal(bySubtree.size, first + count)
        assert.deepEqual(bySubtree.hashes().map(toHex), byLeaf.hashes().map(toHex))
        // The subtrees are those of the range, left to right, each a node of the log.
        let position = first
        for (const { level, index } of subtrees) {
          assert.equal(index * 2 ** level, position)
          position += 2 ** level
        }
        assert.equal(position, first + count)
      }),
      { numRuns: 200 },
    )
  })

  test('a subtree is appended only where it is a node of the log', () => {
    const frontier = new Frontier()
    frontier.append(leafHash(utf8('a')))
    assert.throws(() => frontier.appendSubtree(1, new Uint8Array(32)), /where it is a node of the log/)
    assert.throws(() => frontier.appendSubtree(0, new Uint8Array(31)), /32 bytes/)
  })
})
