import { fromUtf8 } from './encoding.js'
import { VmError } from './errors.js'
import { type SignedTransaction, validateSignedTransaction } from './transaction.js'

/**
 * A leaf of the log: an accepted transaction as the client signed it, and the block time at which the
 * funnel applied it. Its RFC 8785 bytes are what the leaf hash covers, so anyone can re-apply the
 * log and get the same ledger.
 */
export interface Leaf {
  readonly v: 1
  readonly time: string
  readonly signed: SignedTransaction
}

/**
 * The leaf's RFC 8785 text (its UTF-8 bytes are what the leaf hash covers), built from the signed
 * transaction's canonical text without encoding it again.
 */
export function encodeLeafText(time: string, signedText: string): string {
  // Keys in RFC 8785 order: "signed" < "time" < "v". The time is RFC 3339, which needs no escaping.
  return `{"signed":${signedText},"time":"${time}","v":1}`
}

export function decodeLeaf(bytes: Uint8Array): Leaf {
  let value: unknown
  try {
    value = JSON.parse(fromUtf8(bytes))
  } catch (error) {
    throw new VmError('leaf_malformed', 'leaf is not UTF-8 JSON', { cause: error })
  }
  if (typeof value !== 'object' || value === null)
    throw new VmError('leaf_malformed', 'leaf is not an object')
  const { v, time, signed, ...rest } = value as Record<string, unknown>
  if (v !== 1 || typeof time !== 'string' || Number.isNaN(Date.parse(time)) || Object.keys(rest).length > 0) {
    throw new VmError('leaf_malformed', 'leaf must be {v: 1, time, signed}')
  }
  return { v: 1, time, signed: validateSignedTransaction(signed) }
}
