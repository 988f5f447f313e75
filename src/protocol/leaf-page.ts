/**
 * The binary form of a block, for verifiers that download a whole log: the 4-byte big-endian length of
 * its signed header's JSON ({checkpoint, header, signature}), that JSON, and its leaves as a page (each
 * leaf as a 4-byte big-endian length and its exact bytes). Served for `Accept: application/octet-stream`
 * on `/v1/blocks/{height}`, beside the JSON; `/v1/log/leaf-hashes` answers 32 bytes a hash in that case.
 */

import type { RawBlock } from './block.js'
import { validateRawBlock } from './block.js'
import { concatBytes, fromUtf8, utf8 } from './encoding.js'
import { VmError } from './errors.js'

export const binaryMediaType = 'application/octet-stream'
/** The JSON of a block's signed header is far below this. */
const signedHeaderBytesMax = 64 * 1024

function malformed(message: string): VmError {
  return new VmError('binary_malformed', message, { status: 502 })
}

export function encodeLeafPage(leaves: readonly Uint8Array[]): Uint8Array {
  return withLeafPage(new Uint8Array(0), leaves)
}

/** `head` followed by the page of `leaves`, written once into one buffer. */
function withLeafPage(head: Uint8Array, leaves: readonly Uint8Array[]): Uint8Array {
  let length = head.length
  for (const leaf of leaves) length += 4 + leaf.length
  const out = new Uint8Array(length)
  out.set(head)
  const view = new DataView(out.buffer)
  let offset = head.length
  for (const leaf of leaves) {
    view.setUint32(offset, leaf.length)
    out.set(leaf, offset + 4)
    offset += 4 + leaf.length
  }
  return out
}

/** The leaves of a page, as views into `bytes`; at most `leavesMax`, and nothing left over. */
export function decodeLeafPage(bytes: Uint8Array, leavesMax: number): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const leaves: Uint8Array[] = []
  let offset = 0
  while (offset < bytes.length) {
    if (leaves.length === leavesMax) throw malformed(`a page of more than ${leavesMax} leaves`)
    if (offset + 4 > bytes.length) throw malformed('a page that ends inside a leaf length')
    const length = view.getUint32(offset)
    const end = offset + 4 + length
    if (end > bytes.length) throw malformed('a page that ends inside a leaf')
    leaves.push(bytes.subarray(offset + 4, end))
    offset = end
  }
  return leaves
}

export function encodeRawBlock(block: RawBlock): Uint8Array {
  return withLeafPage(blockHead(block), block.leaves)
}

/**
 * The binary form of a block whose leaves are already leaf pages: pages placed end to end are one page,
 * so the leaves are copied once, not decoded and encoded again.
 */
export function encodePagedBlock(
  block: Pick<RawBlock, 'checkpoint' | 'header' | 'signature'>,
  pages: readonly Uint8Array[],
): Uint8Array {
  return concatBytes(blockHead(block), ...pages)
}

/** What precedes a block's leaves: its signed header's JSON and that JSON's length. */
function blockHead({ checkpoint, header, signature }: Pick<RawBlock, 'checkpoint' | 'header' | 'signature'>) {
  const signedHeader = utf8(JSON.stringify({ checkpoint, header, signature }))
  const head = new Uint8Array(4 + signedHeader.length)
  new DataView(head.buffer).setUint32(0, signedHeader.length)
  head.set(signedHeader, 4)
  return head
}

/** A block in its binary form, its shape and encodings checked (validateRawBlock). */
export function decodeRawBlock(bytes: Uint8Array): RawBlock {
  if (bytes.length < 4) throw malformed('a block shorter than its header length')
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0)
  if (length > signedHeaderBytesMax || 4 + length > bytes.length)
    throw malformed('a block whose signed header does not fit')
  let signedHeader: unknown
  try {
    signedHeader = JSON.parse(fromUtf8(bytes.subarray(4, 4 + length)))
  } catch (cause) {
    throw new VmError('binary_malformed', 'a block whose signed header is not JSON', { status: 502, cause })
  }
  if (typeof signedHeader !== 'object' || signedHeader === null || Array.isArray(signedHeader))
    throw malformed('a block whose signed header is not an object')
  // The answer's size bounds the count: every leaf takes at least its 4-byte length.
  const leaves = decodeLeafPage(bytes.subarray(4 + length), Number.MAX_SAFE_INTEGER)
  return validateRawBlock({ ...signedHeader, leaves })
}
