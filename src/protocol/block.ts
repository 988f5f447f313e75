/**
 * Blocks (DESIGN §3): a contiguous run of log leaves and a header signed by the node. The headers
 * form a hash chain, and each header commits to the RFC 9162 log root after its leaves, so a block
 * browser that checks every block both follows the chain and rebuilds the log.
 */
import { canonicalBytes } from './canonical.js'
import { type Checkpoint, noteBytesMax, noteVerifierKey, openCheckpoint } from './checkpoint.js'
import { fromBase64, fromBase64Url, toBase64, toBase64Url } from './encoding.js'
import { VmError } from './errors.js'
import { hashSize, sha256 } from './hash.js'
import { ed25519PublicKeySize, ed25519SignatureSize, sign, verify } from './keys.js'
import { Frontier, leafHash, type NodeWrite } from './merkle.js'

export interface BlockHeader {
  readonly v: 1
  /** The id of the node that signs the chain; the same in every block. */
  readonly node: string
  readonly height: number
  /** base64 SHA-256 of the previous header's RFC 8785 bytes; 32 zero bytes at height 0. */
  readonly previous: string
  /** Log index of the block's first leaf: the log size before the block. */
  readonly firstLeaf: number
  readonly leafCount: number
  /** Log size after the block: firstLeaf + leafCount. */
  readonly logSize: number
  /** base64 RFC 9162 root of the log of logSize leaves. */
  readonly logRoot: string
  /** RFC 3339 UTC with milliseconds, as Date.prototype.toISOString writes it. */
  readonly time: string
}

export interface Block {
  readonly header: BlockHeader
  /** base64url Ed25519 signature over canonicalBytes(header). */
  readonly signature: string
  /**
   * The C2SP checkpoint of the log after this block, signed by the node, so that whoever holds the block
   * (a browser) can serve the node's own signed checkpoint to witnesses and verifiers.
   */
  readonly checkpoint: string
  /** base64 of each leaf's exact bytes, in log order. */
  readonly leaves: readonly string[]
}

/** The `previous` of the genesis header: 32 zero bytes. */
export const genesisPrevious = toBase64(new Uint8Array(hashSize))

/** Node ids are short names; a bound keeps a hostile header from being arbitrarily large. */
export const nodeIdLengthMax = 256

const headerFields = [
  'v',
  'node',
  'height',
  'previous',
  'firstLeaf',
  'leafCount',
  'logSize',
  'logRoot',
  'time',
]
const blockFields = ['header', 'signature', 'checkpoint', 'leaves']
const timePattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

function blockError(code: string, message: string): VmError {
  return new VmError(code, message, { status: 400 })
}

function malformed(message: string): VmError {
  return blockError('block_malformed', message)
}

function hasExactFields(value: unknown, fields: readonly string[]): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  const keys = Object.keys(value)
  return keys.length === fields.length && fields.every((field) => Object.hasOwn(value, field))
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

function isHash(value: unknown): value is string {
  if (typeof value !== 'string') return false
  try {
    return fromBase64(value).length === hashSize
  } catch {
    return false
  }
}

/** Checks a header's shape and field formats (not its place in the chain). */
export function validateHeader(value: unknown): BlockHeader {
  if (!hasExactFields(value, headerFields))
    throw malformed(`a block header has exactly the fields ${headerFields.join(', ')}`)
  const { v, node, height, previous, firstLeaf, leafCount, logSize, logRoot, time } = value
  if (v !== 1) throw malformed('unknown block header version')
  if (typeof node !== 'string' || node.length === 0 || node.length > nodeIdLengthMax) {
    throw malformed(`the node id must be 1 to ${nodeIdLengthMax} characters`)
  }
  if (!isCount(height) || !isCount(firstLeaf) || !isCount(leafCount) || !isCount(logSize)) {
    throw malformed('height, firstLeaf, leafCount and logSize must be non-negative safe integers')
  }
  if (!isHash(previous)) throw malformed('previous must be the base64 of a 32-byte hash')
  if (!isHash(logRoot)) throw malformed('logRoot must be the base64 of a 32-byte hash')
  if (typeof time !== 'string' || !timePattern.test(time) || new Date(time).toISOString() !== time) {
    throw malformed('time must be RFC 3339 UTC with milliseconds, like 2024-01-31T12:00:00.000Z')
  }
  return value as unknown as BlockHeader
}

/** Checks a block's shape and encodings (not its place in the chain). */
export function validateBlock(value: unknown): Block {
  if (!hasExactFields(value, blockFields))
    throw malformed(`a block has exactly the fields ${blockFields.join(', ')}`)
  validateSignedHeader(value)
  const { leaves } = value
  if (!Array.isArray(leaves)) throw malformed('leaves must be an array')
  leaves.forEach((leaf: unknown, position) => {
    // Strings here; checkBlock decodes each leaf once, strictly (block_malformed), as it hashes it.
    if (typeof leaf !== 'string') throw malformed(`leaf ${position} is not base64`)
  })
  return value as unknown as Block
}

/** The header, signature and checkpoint of a block: their shapes and encodings. */
function validateSignedHeader(value: Record<string, unknown>): void {
  validateHeader(value.header)
  const { signature, checkpoint } = value
  if (typeof signature !== 'string' || !isSignature(signature)) {
    throw malformed('the signature must be the base64url of 64 bytes')
  }
  if (typeof checkpoint !== 'string' || checkpoint.length > noteBytesMax) {
    throw malformed('the checkpoint must be a signed note')
  }
}

/** A block with its leaves as bytes: what the binary form of a block carries (see leaf-page.ts). */
export interface RawBlock extends Omit<Block, 'leaves'> {
  readonly leaves: readonly Uint8Array[]
}

/** What a check hands on, when asked: the decoded leaves, their hashes, the perfect subtrees they complete. */
export interface CheckedBlockOut {
  readonly leaves?: Uint8Array[]
  readonly leafHashes?: Uint8Array[]
  readonly nodes?: NodeWrite[]
}

/** The JSON form of a raw block: its leaves in base64. */
export function blockFromRaw(block: RawBlock): Block {
  const { header, signature, checkpoint } = block
  return { header, signature, checkpoint, leaves: block.leaves.map((leaf) => toBase64(leaf)) }
}

/** Checks a raw block's shape and encodings; its leaves are bytes already. */
export function validateRawBlock(value: unknown): RawBlock {
  if (!hasExactFields(value, blockFields))
    throw malformed(`a block has exactly the fields ${blockFields.join(', ')}`)
  validateSignedHeader(value)
  if (!Array.isArray(value.leaves) || !value.leaves.every((leaf) => leaf instanceof Uint8Array))
    throw malformed('leaves must be byte arrays')
  return value as unknown as RawBlock
}

function isSignature(text: string): boolean {
  try {
    return fromBase64Url(text).length === ed25519SignatureSize
  } catch {
    return false
  }
}

/** The log's origin (its checkpoints' first line and note key name): one per node. */
export function logOrigin(nodeId: string): string {
  return `vmoney/${nodeId}`
}

/** SHA-256 of the header's RFC 8785 bytes: what the next header's `previous` holds. */
export function headerHash(header: BlockHeader): Uint8Array {
  return sha256(canonicalBytes(header))
}

/** The node's base64url Ed25519 signature over canonicalBytes(header). */
export function signHeader(header: BlockHeader, secretKey: Uint8Array): string {
  validateHeader(header)
  return toBase64Url(sign(canonicalBytes(header), secretKey))
}

/** Throws VmError 'block_signature_invalid' unless `signature` is the node's signature of `header`. */
export function verifyHeaderSignature(header: BlockHeader, signature: string, publicKey: Uint8Array): void {
  if (publicKey.length !== ed25519PublicKeySize)
    throw new VmError('invalid_key', 'an Ed25519 public key is 32 bytes')
  let bytes: Uint8Array
  try {
    bytes = fromBase64Url(signature)
  } catch {
    throw blockError('block_signature_invalid', 'the block signature is not base64url')
  }
  if (!verify(bytes, canonicalBytes(header), publicKey)) {
    throw blockError('block_signature_invalid', `the signature of block ${header.height} does not verify`)
  }
}

/**
 * Everything a block browser checks before accepting a block: its shape, the node's signature, its
 * place in the chain (height, previous header hash, node, time, first leaf), that its counts agree
 * with its leaves, and that its leaves, appended to the log so far, give exactly its log root.
 * A signature alone proves nothing about the leaves, and leaves alone nothing about the chain: both
 * bindings are checked. `previous` is null for the genesis block. Returns the log's new frontier;
 * `previous.frontier` is not changed.
 */
export function checkBlock(
  block: Block,
  previous: { readonly header: BlockHeader; readonly frontier: Frontier } | null,
  nodePublicKey: Uint8Array,
  out?: CheckedBlockOut,
): Frontier {
  validateBlock(block)
  const leaves = block.leaves.map((text, position) => {
    try {
      return fromBase64(text)
    } catch {
      throw malformed(`leaf ${position} is not base64`)
    }
  })
  return checkRawBlock({ ...block, leaves }, previous, nodePublicKey, out)
}

/** checkBlock for a block whose leaves are bytes (validated with validateRawBlock). */
export function checkRawBlock(
  block: RawBlock,
  previous: { readonly header: BlockHeader; readonly frontier: Frontier } | null,
  nodePublicKey: Uint8Array,
  out?: CheckedBlockOut,
): Frontier {
  checkBlockPlace(block, previous, nodePublicKey)
  const next = previous === null ? new Frontier() : previous.frontier.clone()
  for (const leaf of block.leaves) {
    const hash = leafHash(leaf)
    const nodes = next.append(hash)
    if (out !== undefined) {
      out.leaves?.push(leaf)
      out.nodes?.push(...nodes)
      out.leafHashes?.push(hash)
    }
  }
  checkBlockRoot(block, next, nodePublicKey)
  return next
}

/**
 * checkRawBlock for a block whose leaves were hashed elsewhere, such as on another thread: `subtrees` are
 * rangeSubtrees of its leaves' hashes, so the log grows by a few subtrees rather than leaf by leaf.
 */
export function checkHashedBlock(
  block: RawBlock,
  previous: { readonly header: BlockHeader; readonly frontier: Frontier } | null,
  nodePublicKey: Uint8Array,
  subtrees: readonly NodeWrite[],
): Frontier {
  checkBlockPlace(block, previous, nodePublicKey)
  const next = previous === null ? new Frontier() : previous.frontier.clone()
  let position = block.header.firstLeaf
  for (const { level, index, hash } of subtrees) {
    if (index * 2 ** level !== position)
      throw new VmError('internal', 'the subtrees given do not cover the block in order', { status: 500 })
    next.appendSubtree(level, hash)
    position += 2 ** level
  }
  if (position !== block.header.logSize)
    throw new VmError('internal', 'the subtrees given do not cover the block', { status: 500 })
  checkBlockRoot(block, next, nodePublicKey)
  return next
}

/**
 * The block's signature and its place in the chain: height, previous header hash, node, time, first
 * leaf, and counts that agree with its leaves; and the caller's log state must be the previous header's.
 */
function checkBlockPlace(
  block: RawBlock,
  previous: { readonly header: BlockHeader; readonly frontier: Frontier } | null,
  nodePublicKey: Uint8Array,
): void {
  const { header } = block
  verifyHeaderSignature(header, block.signature, nodePublicKey)

  const expectedHeight = previous === null ? 0 : previous.header.height + 1
  if (header.height !== expectedHeight) {
    throw blockError(
      'block_height_mismatch',
      `block height ${header.height} where ${expectedHeight} was expected`,
    )
  }
  const expectedPrevious = previous === null ? genesisPrevious : toBase64(headerHash(previous.header))
  if (header.previous !== expectedPrevious) {
    throw blockError('block_previous_mismatch', `block ${header.height} does not link to the previous header`)
  }
  if (previous !== null && header.node !== previous.header.node) {
    throw blockError(
      'block_previous_mismatch',
      `block ${header.height} is by node ${header.node}, not ${previous.header.node}`,
    )
  }
  if (previous !== null && header.time < previous.header.time) {
    // Same fixed-width format, so string order is time order.
    throw blockError('block_time_invalid', `block ${header.height} is dated before the previous block`)
  }

  const expectedFirstLeaf = previous === null ? 0 : previous.header.logSize
  if (header.firstLeaf !== expectedFirstLeaf) {
    throw blockError(
      'block_leaves_mismatch',
      `block ${header.height} starts at leaf ${header.firstLeaf}, not ${expectedFirstLeaf}`,
    )
  }
  if (header.leafCount < 1) throw blockError('block_leaves_mismatch', 'a block holds at least one leaf')
  if (header.leafCount !== block.leaves.length) {
    throw blockError(
      'block_leaves_mismatch',
      `the header counts ${header.leafCount} leaves, the block has ${block.leaves.length}`,
    )
  }
  if (header.logSize !== header.firstLeaf + header.leafCount) {
    throw blockError('block_leaves_mismatch', `logSize ${header.logSize} is not firstLeaf + leafCount`)
  }

  // The caller's log state may come from elsewhere (storage, a server): it must be the previous header's.
  if (
    previous !== null &&
    (previous.frontier.size !== previous.header.logSize ||
      toBase64(previous.frontier.root()) !== previous.header.logRoot)
  ) {
    throw blockError('block_root_mismatch', 'the log so far does not match the previous header')
  }
}

/** The log with the block's leaves must have the header's root, and the checkpoint must say so. */
function checkBlockRoot(block: RawBlock, next: Frontier, nodePublicKey: Uint8Array): void {
  if (toBase64(next.root()) !== block.header.logRoot) {
    throw blockError(
      'block_root_mismatch',
      `the leaves of block ${block.header.height} do not give its log root`,
    )
  }
  checkBlockCheckpoint(block, nodePublicKey)
}

/** The block's checkpoint must be the node's signed note of exactly the header's log size and root. */
export function checkBlockCheckpoint(
  block: Pick<Block, 'header' | 'checkpoint'>,
  nodePublicKey: Uint8Array,
): void {
  const origin = logOrigin(block.header.node)
  let checkpoint: Checkpoint
  try {
    checkpoint = openCheckpoint(block.checkpoint, noteVerifierKey(origin, nodePublicKey), origin)
  } catch (error) {
    throw new VmError(
      'block_checkpoint_invalid',
      `the checkpoint of block ${block.header.height} is not the node's: ${(error as Error).message}`,
      { status: 400, cause: error },
    )
  }
  if (checkpoint.size !== block.header.logSize || toBase64(checkpoint.root) !== block.header.logRoot) {
    throw blockError(
      'block_checkpoint_invalid',
      `the checkpoint of block ${block.header.height} is not for the header's log size and root`,
    )
  }
}
