import type { ColumnType, Generated } from 'kysely'

/**
 * Table types of the node's database. Balances and amounts are decimal strings in code at this layer
 * (exact NUMERIC/DECIMAL columns on servers, TEXT on SQLite, which has no 128-bit integers).
 */
export interface PoolTable {
  seq: Generated<number>
  id: string
  content_hash: string
  signed: string
  type: string
  signer: string
  linked: number
  status: 'pending' | 'accepted' | 'rejected'
  code: number | null
  code_name: string | null
  block_height: number | null
  received_at: number
  decided_at: number | null
}

export interface BlockTable {
  height: number
  header: string
  header_hash: string
  signature: string
  checkpoint: string
  first_leaf: number
  leaf_count: number
  log_size: number
  log_root: string
  time: number
}

export interface LeafTable {
  leaf_index: number
  block_height: number
  transaction_id: string
  leaf: string
}

export interface TreeNodeTable {
  level: number
  node_index: number
  hash: Uint8Array
}

export interface PersonTable {
  id: string
  kind: string
  person: string
  roles: string
  kyc: string
  created_leaf: number
}

export interface KeyTable {
  key_id: string
  person_id: string
  device_key: string
  revoked: number
  added_leaf: number
  revoked_leaf: number | null
}

export interface AssetTable {
  id: string
  issuer: string
  scale: number
  name: string
  created_leaf: number
}

export interface AccountTable {
  id: string
  owner: string
  asset: string
  flags: string
  issuance_limit: string | null
  debits_pending: string
  debits_posted: string
  credits_pending: string
  credits_posted: string
  closed: number
  created_leaf: number
}

export interface TransferTable {
  id: string
  debit: string
  credit: string
  asset: string
  amount: string
  state: string
  expires_at: number | null
  posted_amount: string | null
  memo: string | null
  leaf: number
  time: number
}

export interface EntryTable {
  seq: Generated<number>
  account: string
  leaf: number
  transaction_id: string
  transfer_id: string
  kind: string
  phase: string
  amount: string
  time: number
}

/** A view; its accounts are rows of `ledger_view_accounts`, so that reads find the views of an account. */
export interface ViewTable {
  id: string
  grantor: string
  /** null: everyone. */
  grantee: string | null
  /** JSON array, in the order the grant gave them; `ledger_view_accounts` indexes them. */
  accounts: string
  /** Epoch ms: the view covers activity with time in [from_time, until_time). */
  from_time: number
  until_time: number
  revoked: number
  created_leaf: number
  revoked_leaf: number | null
}

export interface ViewAccountTable {
  account: string
  view_id: string
}

export interface NodeSettingTable {
  name: string
  value: string
  updated_at: ColumnType<number, number, number>
}

/** A lease: the process holding it, until when (epoch ms), and its epoch (one more per taking over). */
export interface LeaseTable {
  name: string
  holder: string
  epoch: number
  expires_at: number
}

/** An operator's webhook: where it delivers, what, and how far it got (the cursor of its last delivery). */
export interface WebhookTable {
  id: string
  url: string
  /** The HMAC key, sealed under the master key. */
  secret: string
  /** JSON array of event types: `entry`, `block`. */
  events: string
  cursor_height: number
  cursor_seq: number
  removed: number
  created_at: number
  last_error: string | null
}

/** A batch that failed every attempt: `dead` until an operator asks `replay`, then `replayed` once delivered. */
export interface WebhookDeadLetterTable {
  id: Generated<number>
  webhook_id: string
  /** The JSON body's events, as they were sent (same ids on replay). */
  events: string
  event_count: number
  attempts: number
  last_error: string
  failed_at: number
  state: 'dead' | 'replay' | 'replayed'
  replayed_at: number | null
}

export interface Database {
  pool: PoolTable
  chain_blocks: BlockTable
  chain_leaves: LeafTable
  chain_nodes: TreeNodeTable
  ledger_persons: PersonTable
  ledger_keys: KeyTable
  ledger_assets: AssetTable
  ledger_accounts: AccountTable
  ledger_transfers: TransferTable
  ledger_entries: EntryTable
  ledger_views: ViewTable
  ledger_view_accounts: ViewAccountTable
  node_settings: NodeSettingTable
  node_leases: LeaseTable
  node_webhooks: WebhookTable
  node_webhook_dead_letters: WebhookDeadLetterTable
}
