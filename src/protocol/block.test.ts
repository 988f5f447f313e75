import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  type Block,
  type BlockHeader,
  checkBlock,
  checkHashedBlock,
  genesisPrevious,
  headerHash,
  logOrigin,
  signHeader,
  validateBlock,
  verifyHeaderSignature,
} from './block.js'
import { canonicalBytes } from './canonical.js'
import { signCheckpoint } from './checkpoint.js'
import { concatBytes, fromBase64, fromBase64Url, toBase64, toBase64Url, toHex, utf8 } from './encoding.js'
import { VmError } from './errors.js'
import { sha256 } from './hash.js'
import { generateSigningKey } from './keys.js'
import { Frontier, leafHash, nodeHash, rangeSubtrees } from './merkle.js'

interface ChainState {
  readonly header: BlockHeader
  readonly frontier: Frontier
}

type HeaderChanges = { -readonly [K in keyof BlockHeader]?: unknown }

const node = generateSigningKey()
const stranger = generateSigningKey()
const nodeId = 'node-1.example'
const startMs = Date.parse('2025-03-01T09:00:00.000Z')

function leavesOf(height: number, count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => utf8(`{"leaf":"${height}.${i}"}`))
}

/** A correct block after `previous`, then `changes` applied to the header, signed by `secretKey`. */
function makeBlock(
  previous: ChainState | null,
  leaves: readonly Uint8Array[],
  changes: HeaderChanges = {},
  secretKey = node.secretKey,
): Block {
  const frontier = previous === null ? new Frontier() : previous.frontier.clone()
  for (const leaf of leaves) frontier.append(leafHash(leaf))
  const height = previous === null ? 0 : previous.header.height + 1
  const correct: BlockHeader = {
    v: 1,
    node: nodeId,
    height,
    previous: previous === null ? genesisPrevious : toBase64(headerHash(previous.header)),
    firstLeaf: previous === null ? 0 : previous.header.logSize,
    leafCount: leaves.length,
    logSize: frontier.size,
    logRoot: toBase64(frontier.root()),
    time: new Date(startMs + height * 1_000).toISOString(),
  }
  const header = { ...correct, ...changes } as BlockHeader
  const origin = logOrigin(nodeId)
  const checkpoint = signCheckpoint(
    { origin, size: frontier.size, root: frontier.root(), extensions: [] },
    origin,
    secretKey,
  )
  return { header, signature: signHeader(header, secretKey), checkpoint, leaves: leaves.map(toBase64) }
}

/** A chain of blocks with these leaf counts, each checked and accepted. */
function makeChain(counts: readonly number[]): { blocks: Block[]; states: ChainState[] } {
  const blocks: Block[] = []
  const states: ChainState[] = []
  counts.forEach((count, height) => {
    const previous = states.at(-1) ?? null
    const block = makeBlock(previous, leavesOf(height, count))
    blocks.push(block)
    states.push({ header: block.header, frontier: checkBlock(block, previous, node.publicKey) })
  })
  return { blocks, states }
}

function refusedWith(code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof VmError, `expected a VmError, got ${String(error)}`)
    assert.equal(error.code, code, error.message)
    return true
  }
}

describe('headers', () => {
  test('the genesis previous is 32 zero bytes, and headerHash is SHA-256 of the RFC 8785 bytes', () => {
    assert.equal(genesisPrevious, 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=')
    const { blocks } = makeChain([1])
    const header = blocks[0]!.header
    assert.equal(toHex(headerHash(header)), toHex(sha256(canonicalBytes(header))))
    // Key order does not change the hash: it is over canonical bytes.
    const reordered = Object.fromEntries(Object.entries(header).reverse()) as unknown as BlockHeader
    assert.equal(toHex(headerHash(reordered)), toHex(headerHash(header)))
  })

  test('the signature is base64url Ed25519 over the canonical header and verifies with the node key', () => {
    const { blocks } = makeChain([2])
    const { header, signature } = blocks[0]!
    assert.equal(fromBase64Url(signature).length, 64)
    verifyHeaderSignature(header, signature, node.publicKey)
    assert.throws(
      () => verifyHeaderSignature(header, signature, stranger.publicKey),
      refusedWith('block_signature_invalid'),
    )
    assert.throws(
      () => verifyHeaderSignature({ ...header, time: '2025-03-01T09:00:00.001Z' }, signature, node.publicKey),
      refusedWith('block_signature_invalid'),
    )
    assert.throws(
      () => verifyHeaderSignature(header, '!!', node.publicKey),
      refusedWith('block_signature_invalid'),
    )
  })

  test('signHeader refuses a malformed header', () => {
    const { blocks } = makeChain([1])
    const header = blocks[0]!.header
    assert.throws(() => signHeader({ ...header, height: -1 }, node.secretKey), refusedWith('block_malformed'))
  })
})

describe('a happy chain', () => {
  test('several blocks are accepted, and the final frontier is the log of all their leaves', () => {
    const counts = [1, 3, 1, 8, 5, 2, 16, 7]
    const { blocks, states } = makeChain(counts)
    const all = counts.flatMap((count, height) => leavesOf(height, count))
    const log = new Frontier()
    for (const leaf of all) log.append(leafHash(leaf))
    const last = states.at(-1)!
    assert.equal(last.frontier.size, all.length)
    assert.equal(toBase64(last.frontier.root()), toBase64(log.root()))
    assert.equal(last.header.logRoot, toBase64(log.root()))
    blocks.forEach((block, height) => {
      assert.equal(block.header.height, height)
      if (height > 0) assert.equal(block.header.previous, toBase64(headerHash(blocks[height - 1]!.header)))
    })
  })

  test('a block survives a JSON round trip', () => {
    const { blocks, states } = makeChain([2, 3])
    const copy = JSON.parse(JSON.stringify(blocks[1])) as Block
    checkBlock(copy, { header: states[0]!.header, frontier: states[0]!.frontier }, node.publicKey)
  })

  test('checking a block leaves the previous frontier unchanged', () => {
    const { states } = makeChain([3])
    const before = toBase64(states[0]!.frontier.root())
    const block = makeBlock(states[0]!, leavesOf(1, 4))
    checkBlock(block, states[0]!, node.publicKey)
    assert.equal(states[0]!.frontier.size, 3)
    assert.equal(toBase64(states[0]!.frontier.root()), before)
  })

  test('the same block is accepted twice from the same state, deterministically', () => {
    const { states } = makeChain([2])
    const block = makeBlock(states[0]!, leavesOf(1, 3))
    const a = checkBlock(block, states[0]!, node.publicKey)
    const b = checkBlock(block, states[0]!, node.publicKey)
    assert.equal(toBase64(a.root()), toBase64(b.root()))
  })
})

describe('blocks hashed elsewhere', () => {
  const raw = (block: Block) => ({ ...block, leaves: block.leaves.map((leaf) => fromBase64(leaf)) })
  const hashed = (block: Block) => {
    const leafHashes = concatBytes(...raw(block).leaves.map(leafHash))
    return rangeSubtrees(block.header.firstLeaf, leafHashes)
  }

  test('checkHashedBlock takes a chain as checkRawBlock does, with the same frontiers', () => {
    const { blocks, states } = makeChain([1, 3, 1, 8, 5, 2, 16, 7])
    let previous: ChainState | null = null
    blocks.forEach((block, height) => {
      const frontier = checkHashedBlock(raw(block), previous, node.publicKey, hashed(block))
      assert.deepEqual(frontier.hashes().map(toHex), states[height]!.frontier.hashes().map(toHex))
      previous = { header: block.header, frontier }
    })
  })

  test('subtrees of other leaves are refused as a root mismatch; subtrees of another range, as a fault', () => {
    const { states } = makeChain([3])
    const block = makeBlock(states[0]!, leavesOf(1, 4))
    const other = makeBlock(states[0]!, leavesOf(9, 4))
    assert.throws(
      () => checkHashedBlock(raw(block), states[0]!, node.publicKey, hashed(other)),
      refusedWith('block_root_mismatch'),
    )
    const shifted = rangeSubtrees(4, concatBytes(...raw(block).leaves.map(leafHash)))
    assert.throws(
      () => checkHashedBlock(raw(block), states[0]!, node.publicKey, shifted),
      refusedWith('internal'),
    )
    assert.throws(
      () => checkHashedBlock(raw(block), states[0]!, node.publicKey, hashed(block).slice(1)),
      refusedWith('internal'),
    )
  })
})

describe('forgeries', () => {
  const { blocks, states } = makeChain([2, 3, 1])
  const genesis = blocks[0]!
  const tip = states[2]!
  const beforeTip = states[1]!
  const nextLeaves = leavesOf(3, 4)
  const next = makeBlock(tip, nextLeaves)

  test('the honest next block is accepted', () => {
    checkBlock(next, tip, node.publicKey)
  })

  test('any header field changed without re-signing is refused by the signature', () => {
    const changes: HeaderChanges[] = [
      { height: 4 },
      { previous: toBase64(sha256(utf8('other'))) },
      { firstLeaf: 7 },
      { leafCount: 5 },
      { logSize: 11 },
      { logRoot: toBase64(sha256(utf8('other'))) },
      { time: '2030-01-01T00:00:00.000Z' },
      { node: 'node-2.example' },
    ]
    for (const change of changes) {
      const forged = { ...next, header: { ...next.header, ...change } as BlockHeader }
      assert.throws(() => checkBlock(forged, tip, node.publicKey), refusedWith('block_signature_invalid'))
    }
  })

  test('a block signed by another key is refused', () => {
    const forged = makeBlock(tip, nextLeaves, {}, stranger.secretKey)
    assert.throws(() => checkBlock(forged, tip, node.publicKey), refusedWith('block_signature_invalid'))
    const swapped = { ...next, signature: blocks[2]!.signature }
    assert.throws(() => checkBlock(swapped, tip, node.publicKey), refusedWith('block_signature_invalid'))
  })

  // The node's own key signing an inconsistent header: each check must still catch it.
  const signedByNode: {
    name: string
    block: () => Block
    previous: () => ChainState | null
    code: string
  }[] = [
    {
      name: 'skipped height',
      block: () => makeBlock(tip, nextLeaves, { height: 4 }),
      previous: () => tip,
      code: 'block_height_mismatch',
    },
    {
      name: 'repeated height',
      block: () => makeBlock(tip, nextLeaves, { height: 2 }),
      previous: () => tip,
      code: 'block_height_mismatch',
    },
    { name: 'replayed block', block: () => blocks[2]!, previous: () => tip, code: 'block_height_mismatch' },
    {
      name: 'genesis not at height 0',
      block: () => makeBlock(null, leavesOf(0, 2), { height: 1 }),
      previous: () => null,
      code: 'block_height_mismatch',
    },
    {
      name: 'genesis with a previous',
      block: () => makeBlock(null, leavesOf(0, 2), { previous: toBase64(sha256(utf8('x'))) }),
      previous: () => null,
      code: 'block_previous_mismatch',
    },
    {
      name: 'wrong previous hash',
      block: () => makeBlock(tip, nextLeaves, { previous: toBase64(headerHash(beforeTip.header)) }),
      previous: () => tip,
      code: 'block_previous_mismatch',
    },
    {
      name: 'another node id',
      block: () => makeBlock(tip, nextLeaves, { node: 'node-2.example' }),
      previous: () => tip,
      code: 'block_previous_mismatch',
    },
    {
      name: 'time going backwards',
      block: () => makeBlock(tip, nextLeaves, { time: '2025-03-01T08:59:59.999Z' }),
      previous: () => tip,
      code: 'block_time_invalid',
    },
    {
      name: 'gap in the leaves',
      block: () => makeBlock(tip, nextLeaves, { firstLeaf: 7, logSize: 11 }),
      previous: () => tip,
      code: 'block_leaves_mismatch',
    },
    {
      name: 'overlapping leaves',
      block: () => makeBlock(tip, nextLeaves, { firstLeaf: 5, logSize: 9 }),
      previous: () => tip,
      code: 'block_leaves_mismatch',
    },
    {
      name: 'genesis not at leaf 0',
      block: () => makeBlock(null, leavesOf(0, 2), { firstLeaf: 1, logSize: 3 }),
      previous: () => null,
      code: 'block_leaves_mismatch',
    },
    {
      name: 'count above the leaves',
      block: () => makeBlock(tip, nextLeaves, { leafCount: 5, logSize: 11 }),
      previous: () => tip,
      code: 'block_leaves_mismatch',
    },
    {
      name: 'count below the leaves',
      block: () => makeBlock(tip, nextLeaves, { leafCount: 3, logSize: 9 }),
      previous: () => tip,
      code: 'block_leaves_mismatch',
    },
    {
      name: 'log size not first + count',
      block: () => makeBlock(tip, nextLeaves, { logSize: 11 }),
      previous: () => tip,
      code: 'block_leaves_mismatch',
    },
    {
      name: 'empty block',
      block: () => makeBlock(tip, []),
      previous: () => tip,
      code: 'block_leaves_mismatch',
    },
    {
      name: 'root of other leaves',
      block: () => makeBlock(tip, nextLeaves, { logRoot: makeBlock(tip, leavesOf(9, 4)).header.logRoot }),
      previous: () => tip,
      code: 'block_root_mismatch',
    },
    {
      name: 'root of the previous log',
      block: () => makeBlock(tip, nextLeaves, { logRoot: tip.header.logRoot }),
      previous: () => tip,
      code: 'block_root_mismatch',
    },
    {
      name: 'root of the new leaves alone',
      block: () => makeBlock(tip, nextLeaves, { logRoot: makeBlock(null, nextLeaves).header.logRoot }),
      previous: () => tip,
      code: 'block_root_mismatch',
    },
  ]
  for (const row of signedByNode) {
    test(`signed by the node but inconsistent: ${row.name} → ${row.code}`, () => {
      assert.throws(() => checkBlock(row.block(), row.previous(), node.publicKey), refusedWith(row.code))
    })
  }

  test('immudb lesson: a correctly linked and signed header whose leaves do not give its root', () => {
    const substitutions: { name: string; leaves: string[] }[] = [
      {
        name: 'one leaf changed',
        leaves: next.leaves.map((leaf, i) => (i === 1 ? toBase64(utf8('{"leaf":"evil"}')) : leaf)),
      },
      { name: 'leaves reordered', leaves: [next.leaves[1]!, next.leaves[0]!, ...next.leaves.slice(2)] },
      { name: 'a leaf of an earlier block', leaves: [genesis.leaves[0]!, ...next.leaves.slice(1)] },
      { name: 'a leaf duplicated', leaves: [next.leaves[0]!, next.leaves[0]!, ...next.leaves.slice(2)] },
    ]
    for (const { name, leaves } of substitutions) {
      const forged = { ...next, leaves }
      assert.throws(() => checkBlock(forged, tip, node.publicKey), refusedWith('block_root_mismatch'), name)
    }
  })

  test('immudb lesson: leaves that give the root, under a header that does not link to the chain', () => {
    // A fork: the same leaves and the same (correct) log root, signed, but built on another header.
    const forkedPrevious = { ...tip.header, time: '2025-03-01T09:00:02.500Z' }
    const forked = makeBlock(tip, nextLeaves, { previous: toBase64(headerHash(forkedPrevious)) })
    assert.equal(forked.header.logRoot, next.header.logRoot)
    assert.throws(() => checkBlock(forked, tip, node.publicKey), refusedWith('block_previous_mismatch'))
    // The genuine next block, offered after another block: its leaves fit no longer.
    assert.throws(() => checkBlock(next, beforeTip, node.publicKey), refusedWith('block_height_mismatch'))
  })

  test('a log state that does not match the previous header is refused', () => {
    const wrongLog = beforeTip.frontier
    assert.throws(
      () => checkBlock(next, { header: tip.header, frontier: wrongLog }, node.publicKey),
      refusedWith('block_root_mismatch'),
    )
    const sameSizeOtherLeaves = new Frontier()
    for (let i = 0; i < tip.frontier.size; i++) sameSizeOtherLeaves.append(leafHash(utf8(`other ${i}`)))
    assert.throws(
      () => checkBlock(next, { header: tip.header, frontier: sameSizeOtherLeaves }, node.publicKey),
      refusedWith('block_root_mismatch'),
    )
  })
})

describe('malformed blocks', () => {
  const { blocks, states } = makeChain([2])
  const previous = states[0]!
  const block = makeBlock(previous, leavesOf(1, 2))
  const header = block.header

  const badHeaders: [string, unknown][] = [
    ['extra field', { ...header, extra: 1 }],
    ['missing field', Object.fromEntries(Object.entries(header).filter(([key]) => key !== 'time'))],
    ['version 2', { ...header, v: 2 }],
    ['empty node id', { ...header, node: '' }],
    ['huge node id', { ...header, node: 'n'.repeat(257) }],
    ['negative height', { ...header, height: -1 }],
    ['fractional height', { ...header, height: 1.5 }],
    ['height as a string', { ...header, height: '1' }],
    ['unsafe log size', { ...header, logSize: 2 ** 53 }],
    ['short previous', { ...header, previous: toBase64(new Uint8Array(31)) }],
    ['previous in base64url', { ...header, previous: toBase64Url(sha256(utf8('p'))) }],
    ['log root not base64', { ...header, logRoot: 'not base64!' }],
    ['time without milliseconds', { ...header, time: '2025-03-01T09:00:01Z' }],
    ['time with an offset', { ...header, time: '2025-03-01T09:00:01.000+01:00' }],
    ['impossible date', { ...header, time: '2025-02-30T09:00:01.000Z' }],
    ['time as a number', { ...header, time: startMs }],
    ['header is null', null],
    ['header is an array', []],
  ]
  for (const [name, badHeader] of badHeaders) {
    test(`header: ${name}`, () => {
      const forged = { ...block, header: badHeader } as unknown as Block
      assert.throws(() => checkBlock(forged, previous, node.publicKey), refusedWith('block_malformed'))
    })
  }

  const badBlocks: [string, unknown][] = [
    ['extra field', { ...block, extra: true }],
    ['no leaves field', { header, signature: block.signature }],
    ['signature too short', { ...block, signature: toBase64Url(new Uint8Array(63)) }],
    [
      'signature in base64 with padding',
      { ...block, signature: `${toBase64(fromBase64Url(block.signature))}` },
    ],
    ['leaves not an array', { ...block, leaves: 'AAAA' }],
    ['leaf not a string', { ...block, leaves: [1, 2] }],
    ['not an object', 'block'],
  ]
  for (const [name, badBlock] of badBlocks) {
    test(`block: ${name}`, () => {
      assert.throws(
        () => checkBlock(badBlock as Block, previous, node.publicKey),
        refusedWith('block_malformed'),
      )
      assert.throws(() => validateBlock(badBlock), refusedWith('block_malformed'))
    })
  }

  test('block: leaf not base64 (validateBlock checks shapes; checkBlock decodes each leaf strictly)', () => {
    for (const leaf of ['***', 'AAA', 'AA==AA==', `${block.leaves[0]}\n`]) {
      const forged = { ...block, leaves: [leaf, block.leaves[1]] } as Block
      assert.throws(() => checkBlock(forged, previous, node.publicKey), refusedWith('block_malformed'))
    }
  })

  test('validateBlock accepts the honest blocks', () => {
    assert.equal(validateBlock(blocks[0]), blocks[0])
    assert.equal(validateBlock(block), block)
  })

  test('a leaf hash of the block is what the log commits to, byte for byte', () => {
    // The root of a two-leaf genesis is H(0x01 ‖ leafHash(a) ‖ leafHash(b)).
    const [a, b] = leavesOf(0, 2)
    assert.equal(blocks[0]!.header.logRoot, toBase64(nodeHash(leafHash(a!), leafHash(b!))))
  })
})
