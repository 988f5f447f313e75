import type { AccountFlag, DeviceKey, KycStatus, Person, Role } from '../../protocol/transaction.js'

/**
 * The ledger's records as the funnel holds them in memory and the storage writes them.
 * Amounts and balances are bigint; times are epoch milliseconds.
 */
export interface PersonRecord {
  readonly id: string
  readonly person: Person
  roles: readonly Role[]
  kyc: KycStatus
  /** Leaf index of the transaction that registered the person. */
  readonly createdLeaf: number
}

export interface KeyRecord {
  readonly keyId: string
  readonly personId: string
  readonly key: DeviceKey
  revoked: boolean
  readonly addedLeaf: number
  revokedLeaf: number | null
}

export interface AssetRecord {
  readonly id: string
  readonly issuer: string
  readonly scale: number
  readonly name: string
  readonly createdLeaf: number
}

export interface AccountRecord {
  readonly id: string
  readonly owner: string
  readonly asset: string
  readonly flags: readonly AccountFlag[]
  /** Set only on issuer accounts: how far debits may exceed credits. */
  readonly issuanceLimit: bigint | null
  debitsPending: bigint
  debitsPosted: bigint
  creditsPending: bigint
  creditsPosted: bigint
  closed: boolean
  readonly createdLeaf: number
}

export type TransferState = 'posted' | 'pending' | 'voided' | 'expired'

export interface TransferRecord {
  /** The id of the transaction that created it. */
  readonly id: string
  readonly debit: string
  readonly credit: string
  readonly asset: string
  readonly amount: bigint
  state: TransferState
  /** Two-phase only: epoch ms after which the pending transfer expires. */
  readonly expiresAt: number | null
  /** Two-phase only: amount posted when it was posted (may be less than `amount`). */
  postedAmount: bigint | null
  /** The note the payer attached, if any. */
  readonly memo: string | null
  readonly leaf: number
  readonly time: number
}

/** One movement of a transaction on an account, the row of a statement. */
export interface EntryRecord {
  readonly account: string
  readonly leaf: number
  readonly transactionId: string
  readonly transferId: string
  readonly kind: 'debit' | 'credit'
  readonly phase: 'posted' | 'pending' | 'post' | 'void' | 'expire'
  readonly amount: bigint
  readonly time: number
}

/** A view a person granted of some of their accounts (seed 000: "views on other people data"). */
export interface ViewRecord {
  /** The id the grantor chose (`grant_view.view`). */
  readonly id: string
  /** The person who owns every account of the view. */
  readonly grantor: string
  /** The person who may see; null: everyone who can sign a read. */
  readonly grantee: string | null
  readonly accounts: readonly string[]
  /** Epoch ms: the view covers account activity with block time in [from, until). */
  readonly from: number
  readonly until: number
  revoked: boolean
  readonly createdLeaf: number
  revokedLeaf: number | null
}
