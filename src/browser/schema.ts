import type { Generated } from 'kysely'

/**
 * Table types of the block browser's own database. Every table is keyed by the id of the followed node
 * first, so one browser keeps the logs of several nodes side by side and never mixes them.
 */
export interface BlockTable {
  node: string
  height: number
  /** The header as JSON, exactly the object the node signed (its RFC 8785 bytes are what was signed). */
  header: string
  /** base64 SHA-256 of the header's RFC 8785 bytes: what the next block's `previous` holds. */
  header_hash: string
  signature: string
  /** The node's C2SP signed note of the log after this block. */
  checkpoint: string
  first_leaf: number
  leaf_count: number
  log_size: number
  log_root: string
  /** The header's time, ms since the epoch. */
  time: number
  /** When this browser accepted the block, ms since the epoch. */
  received_at: number
}

/**
 * The leaves, in pages: a page holds consecutive leaves of one block in the leaf-page encoding (each
 * leaf as its 4-byte length and its exact bytes), so a block is read and served as a few rows, not one
 * row a leaf, and so are pages of leaf hashes. The browser keeps whatever a validly signed block carries, byte for byte, so the hashes it
 * serves always match what it stores.
 */
export interface LeafPageTable {
  node: string
  first_leaf: number
  leaf_count: number
  leaves: Uint8Array
  /** The leaves' RFC 9162 hashes, 32 bytes each: pages of leaf hashes are read from here. */
  leaf_hashes: Uint8Array
}

/** Every perfect-subtree hash of the log, level 0 (leaf hashes) included: tiles are read from here. */
export interface TreeNodeTable {
  node: string
  level: number
  node_index: number
  hash: Uint8Array
}

/** Which leaves a key id can open (sealed leaves name their recipients in the clear). */
export interface RecipientTable {
  node: string
  key_id: string
  leaf_index: number
}

export interface AlarmTable {
  id: Generated<number>
  node: string
  /** The height concerned; null for alarms about the node itself (a key mismatch). */
  height: number | null
  kind: 'rewrite' | 'key_mismatch'
  held_hash: string | null
  offered_hash: string | null
  /** JSON of what proves the alarm: for a rewrite both signed headers. */
  evidence: string
  /** Node, kind, height and offered hash: the same evidence raises one alarm, however often it is seen. */
  fingerprint: string
  time: number
}

export interface BrowserSchema {
  browser_blocks: BlockTable
  browser_leaf_pages: LeafPageTable
  browser_tree_nodes: TreeNodeTable
  browser_recipients: RecipientTable
  browser_alarms: AlarmTable
}
