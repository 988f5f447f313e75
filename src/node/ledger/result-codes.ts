import { assert } from '../../protocol/errors.js'

/**
 * The ledger's result codes, in the manner of TigerBeetle's `CreateTransferResult`: one name per failure,
 * each with a number that is fixed forever. Clients, pool rows, the api's problem documents and the
 * verifier all store or compare these numbers, so a code is never renumbered, reused or removed; a new rule
 * gets a new number in the gap of its group. The numbers say nothing about the order of the checks: that
 * order is documented in `state-machine.ts`.
 *
 * Groups: 0-9 outcome of the chain, 10-19 every transaction, 20-29 genesis, 30-49 authorization,
 * 50-69 persons and keys, 70-79 assets, 80-109 accounts, 110-149 transfers, 150-169 two-phase transfers,
 * 170-189 views.
 */
export const resultCodes = {
  /** Accepted: the transaction becomes a leaf and its effects are applied. */
  ok: 0,
  /** Refused only because another transaction of its linked chain was refused; nothing of the chain applies. */
  linked_event_failed: 1,
  /** The last transaction of the chain has `linked: true`: the chain was never closed, so all of it is refused. */
  linked_event_chain_open: 2,
  /**
   * Pending in a backup, and in no block the browsers returned on restore: it may have been refused, or
   * accepted in a block no browser received, so it is refused rather than decided a second time.
   */
  undecided_at_restore: 3,

  /** `tx.node` names another node, so the transaction was meant for another ledger (and must not be replayed here). */
  node_mismatch: 10,
  /** No key with the id `tx.signer` is registered on this ledger. */
  signer_key_not_found: 11,
  /** The signing key was revoked, so it may no longer sign anything. */
  signer_key_revoked: 12,
  /** `genesis` and `expire_pending` are signed by the node key only; no client may submit them. */
  system_transaction_not_allowed: 13,
  /** The node key signs only system transactions, so that it can never act for a person. */
  signer_is_node_key: 14,
  /** The signing key has `use: 'read'`: it signs reads only, so a guessed password can never move money. */
  signer_key_read_only: 15,

  /** The ledger already holds its genesis: there is exactly one, forever. */
  genesis_exists: 20,
  /** Genesis must be the first leaf of the log (leaf 0). */
  genesis_leaf_not_zero: 21,
  /** The thumbprint of the genesis `nodeKey` is not this node's key id. */
  genesis_node_key_mismatch: 22,

  /** Only a person with role `operator` or `admin` may do this. */
  signer_not_operator: 30,
  /** Only a person with role `admin` may do this (give roles, revoke the keys of persons who hold roles). */
  signer_not_admin: 31,
  /** A person adds keys only for themselves: an operator who could add a key could sign for the customer. */
  signer_not_person: 32,
  /** A key is revoked by its own person or by an operator (a lost device). */
  signer_not_person_or_operator: 33,
  /** An account is closed by its owner or by an operator. */
  signer_not_account_owner_or_operator: 34,
  /** Only the owner of the debit account may move money out of it. */
  signer_not_debit_account_owner: 35,
  /** A pending transfer is posted by the owner of its debit account or by an operator. */
  signer_not_debit_account_owner_or_operator: 36,
  /** A pending transfer is voided by the owner of its debit or credit account or by an operator. */
  signer_not_transfer_party_or_operator: 37,

  /** A person with this id is already registered. */
  person_exists: 50,
  /** The person named by the transaction is not registered. */
  person_not_found: 51,
  /** A key with this id is already registered (revoked keys included: a key id is never reused) or is given twice. */
  key_exists: 52,
  /** The key named by `revoke_key` is not registered. */
  key_not_found: 53,
  /** The key named by `revoke_key` belongs to another person. */
  key_not_owned_by_person: 54,
  /** The key named by `revoke_key` is already revoked. */
  key_already_revoked: 55,
  /** The person already has `keysPerPersonMax` active keys: revoke one first. */
  person_keys_limit_reached: 56,

  /** An asset with this id already exists. */
  asset_exists: 70,
  /** The issuer named by `create_asset` is not a registered person. */
  issuer_not_found: 71,
  /** An asset is issued by a legal person (an institution), never by a natural person. */
  issuer_not_legal_person: 72,

  /** An account with this id already exists. */
  account_exists: 80,
  /** The owner named by `open_account` is not a registered person. */
  account_owner_not_found: 81,
  /** The asset named by `open_account` does not exist. */
  account_asset_not_found: 82,
  /** `debits_must_not_exceed_credits` and `credits_must_not_exceed_debits` together would freeze the account. */
  flags_are_mutually_exclusive: 83,
  /** `issuanceLimit` is larger than 2^128-1. */
  issuance_limit_invalid: 84,
  /** `issuanceLimit` lets debits exceed credits, which `debits_must_not_exceed_credits` forbids. */
  issuance_limit_with_debits_must_not_exceed_credits: 85,
  /** Only an account owned by the asset's issuer may go negative, so only it may have an `issuanceLimit`. */
  issuance_limit_owner_not_issuer: 86,
  /**
   * An account needs `debits_must_not_exceed_credits` or an `issuanceLimit`: without either its owner, who
   * signs their own transfers, could create money without limit (DESIGN §6: no overdraft by default).
   */
  debit_limit_required: 87,
  /** The account named by `close_account` does not exist. */
  account_not_found: 88,
  /** The account is already closed. */
  account_already_closed: 89,
  /** Pending transfers still reserve amounts on the account; post, void or let them expire first. */
  account_has_pending_transfers: 90,
  /** The account's posted debits and credits differ; only an empty account may be closed. */
  account_balance_not_zero: 91,

  /** The amount is larger than 2^128-1 (the schema refuses every other malformed amount). */
  amount_invalid: 110,
  /** Debit and credit account are the same account. */
  accounts_must_be_different: 111,
  /** A transfer or post of zero moves nothing and is refused. */
  amount_must_not_be_zero: 112,
  /** The debit account does not exist. */
  debit_account_not_found: 113,
  /** The credit account does not exist. */
  credit_account_not_found: 114,
  /** Debit and credit account hold different assets (TigerBeetle: accounts_must_have_the_same_ledger). */
  accounts_must_have_the_same_asset: 115,
  /** `tx.asset` is not the asset of the accounts, so the signer did not sign for what would move. */
  transfer_must_have_the_same_asset_as_accounts: 116,
  /** The debit account is closed. */
  debit_account_closed: 117,
  /** The credit account is closed. */
  credit_account_closed: 118,
  /** The owner of the debit account has no verified KYC. */
  debit_owner_kyc_not_verified: 119,
  /** The owner of the credit account has no verified KYC. */
  credit_owner_kyc_not_verified: 120,
  /** The debit account's pending debits would pass 2^128-1. */
  overflows_debits_pending: 121,
  /** The credit account's pending credits would pass 2^128-1. */
  overflows_credits_pending: 122,
  /** The debit account's posted debits would pass 2^128-1. */
  overflows_debits_posted: 123,
  /** The credit account's posted credits would pass 2^128-1. */
  overflows_credits_posted: 124,
  /** The debit account's pending plus posted debits would pass 2^128-1. */
  overflows_debits: 125,
  /** The credit account's pending plus posted credits would pass 2^128-1. */
  overflows_credits: 126,
  /** `debits_must_not_exceed_credits`: pending and posted debits plus the amount would exceed posted credits. */
  exceeds_credits: 127,
  /** Issuer account: pending and posted debits plus the amount would exceed posted credits plus the issuance limit. */
  exceeds_issuance_limit: 128,
  /** `credits_must_not_exceed_debits`: pending and posted credits plus the amount would exceed posted debits. */
  exceeds_debits: 129,

  /** No two-phase transfer has this id (a single-phase transfer cannot be posted or voided). */
  pending_transfer_not_found: 150,
  /** The amount to post is larger than the pending amount. */
  exceeds_pending_transfer_amount: 151,
  /** The pending transfer was already posted. */
  pending_transfer_already_posted: 152,
  /** The pending transfer was already voided. */
  pending_transfer_already_voided: 153,
  /** The pending transfer was already expired by an `expire_pending`. */
  pending_transfer_already_expired: 154,
  /** The pending transfer's time has passed, even if no `expire_pending` released it yet. */
  pending_transfer_expired: 155,
  /**
   * `expire_pending` named a transfer that does not exist, is not pending, is named twice or whose time has
   * not come: the funnel built a wrong expiry, and nothing of it applies.
   */
  pending_transfer_not_expirable: 156,

  /** A view with this id already exists (revoked ones included: a view id is never reused). */
  view_exists: 170,
  /** An account named by `grant_view` does not exist. */
  view_account_not_found: 171,
  /** A person grants views only of accounts they own; staff read everything without a view. */
  signer_not_view_account_owner: 172,
  /** The grantee named by `grant_view` is not a registered person. */
  view_grantee_not_found: 173,
  /** A view to oneself grants nothing: the owner reads their accounts anyway. */
  view_grantee_is_grantor: 174,
  /** `from` is not before `until`, a time is not a real date, or the range is longer than 100 years. */
  view_range_invalid: 175,
  /** No view has the id named by `revoke_view`. */
  view_not_found: 176,
  /** The view is already revoked. */
  view_already_revoked: 177,
  /** A view is revoked by its grantor, or by an operator. */
  signer_not_view_grantor: 178,
  /**
   * Decided by the funnel, not the state machine: the earlier leaves a `grant_view` would disclose to its
   * grantee need more content keys than one block may carry. Grant a shorter range, or fewer accounts.
   */
  view_history_too_large: 179,
  /** The account already has `viewsPerAccountMax` active views: revoke one first. */
  view_limit_reached: 180,
} as const

export type ResultCodeName = keyof typeof resultCodes
export type ResultCode = (typeof resultCodes)[ResultCodeName]

const namesByCode: ReadonlyMap<number, ResultCodeName> = new Map(
  (Object.keys(resultCodes) as ResultCodeName[]).map((name) => [resultCodes[name], name]),
)

/** The stable name of a code, for pool rows, problem documents and logs. */
export function resultName(code: ResultCode): ResultCodeName {
  const name = namesByCode.get(code)
  assert(name !== undefined, `unknown result code ${code}`)
  return name
}
