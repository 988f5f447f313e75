/**
 * What a verifier remembers between runs (seed 000: "BCVC potentially stores this information in his
 * local storage, for later comparison"), per node id: the node's key, pinned the first time; the last
 * checkpoint both node and browser were shown to agree on; and, after a full run, every verified block
 * header and the log's frontier, so that the next full run checks the stored chain again and downloads
 * only new blocks. Plain JSON, versioned, and validated strictly when read: the CLI keeps it in a file.
 */
import { type BlockHeader, validateHeader } from '../protocol/block.js'
import { fromBase64, fromBase64Url } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { hashSize } from '../protocol/hash.js'
import { keyId, publicJwk } from '../protocol/keys.js'
import { Frontier } from '../protocol/merkle.js'

export const stateVersion = 1
/** Nodes one state file follows. */
export const stateNodesMax = 1_000
/** Block headers kept per node: about 400 bytes each. */
export const stateHeadersMax = 10_000_000
export const urlLengthMax = 2048

export interface VerifiedCheckpoint {
  readonly size: number
  /** base64 RFC 9162 root. */
  readonly root: string
  /** The signed note it came from. */
  readonly note: string
}

export interface StoredHeader {
  readonly header: BlockHeader
  readonly signature: string
}

export interface FullState {
  /** Every verified header, height 0 first (the leaves are not kept). */
  readonly headers: readonly StoredHeader[]
  /** The frontier of the log after the last header: base64 hashes of frontierNodeIds(size). */
  readonly frontier: { readonly size: number; readonly hashes: readonly string[] }
}

export interface NodeState {
  /** The node's URL when last verified: a node there with another key (so another id) is a changed key. */
  readonly url: string
  /** base64url Ed25519 key of the node, pinned on first use; its thumbprint is the node id. */
  readonly publicKey: string
  readonly checkpoint: VerifiedCheckpoint | null
  readonly full: FullState | null
}

export interface VerifierState {
  readonly v: typeof stateVersion
  readonly nodes: Readonly<Record<string, NodeState>>
}

export function emptyState(): VerifierState {
  return { v: stateVersion, nodes: {} }
}

function invalid(where: string, message: string): VmError {
  return new VmError('state_invalid', `${where}: ${message}`, { status: 400 })
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function exactObject(value: unknown, fields: readonly string[], where: string): Record<string, unknown> {
  if (!isObject(value)) throw invalid(where, 'must be an object')
  const keys = Object.keys(value)
  const unknown = keys.find((key) => !fields.includes(key))
  if (unknown !== undefined) throw invalid(where, `unknown field ${JSON.stringify(unknown)}`)
  const missing = fields.find((field) => !Object.hasOwn(value, field))
  if (missing !== undefined) throw invalid(where, `missing field ${JSON.stringify(missing)}`)
  return value
}

function count(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
    throw invalid(where, 'must be a non-negative integer')
  return value
}

function bytes(value: unknown, where: string, decode: (text: string) => Uint8Array, length: number): string {
  if (typeof value !== 'string') throw invalid(where, 'must be a string')
  let decoded: Uint8Array
  try {
    decoded = decode(value)
  } catch {
    throw invalid(where, 'is not valid base64')
  }
  if (decoded.length !== length) throw invalid(where, `must encode ${length} bytes`)
  return value
}

const hash = (value: unknown, where: string) => bytes(value, where, fromBase64, hashSize)

function checkpoint(value: unknown, where: string): VerifiedCheckpoint | null {
  if (value === null) return null
  const object = exactObject(value, ['size', 'root', 'note'], where)
  count(object.size, `${where}.size`)
  hash(object.root, `${where}.root`)
  if (typeof object.note !== 'string' || object.note.length === 0)
    throw invalid(`${where}.note`, 'must be a note')
  return object as unknown as VerifiedCheckpoint
}

function full(value: unknown, where: string): FullState | null {
  if (value === null) return null
  const object = exactObject(value, ['headers', 'frontier'], where)
  if (
    !Array.isArray(object.headers) ||
    object.headers.length === 0 ||
    object.headers.length > stateHeadersMax
  )
    throw invalid(`${where}.headers`, `must hold 1 to ${stateHeadersMax} headers`)
  object.headers.forEach((stored: unknown, height) => {
    const at = `${where}.headers[${height}]`
    const entry = exactObject(stored, ['header', 'signature'], at)
    try {
      validateHeader(entry.header)
    } catch (error) {
      throw invalid(at, (error as Error).message)
    }
    bytes(entry.signature, `${at}.signature`, fromBase64Url, 64)
  })
  const frontier = exactObject(object.frontier, ['size', 'hashes'], `${where}.frontier`)
  const size = count(frontier.size, `${where}.frontier.size`)
  if (!Array.isArray(frontier.hashes)) throw invalid(`${where}.frontier.hashes`, 'must be an array')
  for (const [i, entry] of (frontier.hashes as unknown[]).entries())
    hash(entry, `${where}.frontier.hashes[${i}]`)
  try {
    new Frontier(size, (frontier.hashes as string[]).map(fromBase64))
  } catch (error) {
    throw invalid(`${where}.frontier`, (error as Error).message)
  }
  return object as unknown as FullState
}

/** Parses a state file's text; anything unexpected is a VmError 'state_invalid' naming where. */
export function parseState(text: string): VerifierState {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw invalid('state', 'is not JSON')
  }
  const object = exactObject(value, ['v', 'nodes'], 'state')
  if (object.v !== stateVersion) throw invalid('state.v', `must be ${stateVersion}`)
  if (!isObject(object.nodes)) throw invalid('state.nodes', 'must be an object')
  const entries = Object.entries(object.nodes)
  if (entries.length > stateNodesMax) throw invalid('state.nodes', `holds at most ${stateNodesMax} nodes`)
  for (const [nodeId, node] of entries) {
    const where = `state.nodes[${JSON.stringify(nodeId)}]`
    if (!/^[A-Za-z0-9_-]{43}$/.test(nodeId)) throw invalid(where, 'is not a node id')
    const entry = exactObject(node, ['url', 'publicKey', 'checkpoint', 'full'], where)
    if (typeof entry.url !== 'string' || entry.url.length > urlLengthMax || !/^https?:\/\//.test(entry.url))
      throw invalid(`${where}.url`, 'must be an http(s) URL')
    const publicKey = bytes(entry.publicKey, `${where}.publicKey`, fromBase64Url, 32)
    if (keyId(publicJwk('Ed25519', fromBase64Url(publicKey))) !== nodeId)
      throw invalid(`${where}.publicKey`, 'is not the key the node id names')
    checkpoint(entry.checkpoint, `${where}.checkpoint`)
    full(entry.full, `${where}.full`)
  }
  return object as unknown as VerifierState
}

export function formatState(state: VerifierState): string {
  return `${JSON.stringify(state, null, 1)}\n`
}
