import { amountMax, parseAmount } from '../../protocol/amount.js'
import { assert, VmError } from '../../protocol/errors.js'
import { keyId, type OkpJwk } from '../../protocol/keys.js'
import {
  deviceKeyId,
  type SignedTransaction,
  type Transaction,
  type TransactionOf,
} from '../../protocol/transaction.js'
import type {
  AccountRecord,
  AssetRecord,
  EntryRecord,
  KeyRecord,
  PersonRecord,
  TransferRecord,
  TransferState,
  ViewRecord,
} from './model.js'
import { type ResultCode, resultCodes } from './result-codes.js'

/**
 * The ledger state machine: the funnel's whole hot state in memory, and the rules that decide every
 * transaction, in the manner of TigerBeetle's `state_machine.zig`.
 *
 * A transaction is checked completely before anything changes: a refused transaction leaves no trace. A
 * client's mistake is a result code (`result-codes.ts`); a broken invariant is an `assert` and stops the
 * process, because it means a bug in the funnel, the storage or here. Signatures are verified by the api
 * before a transaction is pooled; key existence, revocation and authorization are decided here, in log
 * order, so that a key revoked at leaf n can sign nothing after leaf n.
 *
 * Checks, in this order (the first that fails is the result):
 *
 * Every transaction
 *   1. node_mismatch                      `tx.node` is not this node's key id
 *   2. system_transaction_not_allowed     genesis or expire_pending not signed by the node key
 *   3. (genesis: its own checks below, then done)
 *   4. signer_key_not_found, signer_key_revoked, signer_key_read_only (use 'read': it signs reads only)
 *   5. (expire_pending: its own checks below, then done)
 *   6. signer_is_node_key                 the node key signs nothing but system transactions
 *
 * genesis: genesis_exists, genesis_leaf_not_zero, genesis_node_key_mismatch, key_exists (admin key =
 *   node key). Registers the node key (owned by `systemPersonId`), the admin person (roles ['admin'], KYC
 *   verified) and the admin key.
 * register_person: signer_not_operator, signer_not_admin (roles given), person_exists, key_exists (a key
 *   already registered, or given twice). New persons start with KYC `pending`.
 * add_key: signer_not_person, key_exists, person_keys_limit_reached.
 * revoke_key: signer_not_person_or_operator, person_not_found, signer_not_admin (an operator revoking
 *   the key of a person who holds roles), key_not_found, key_not_owned_by_person, key_already_revoked.
 * set_kyc: signer_not_operator, person_not_found.
 * create_asset: signer_not_operator, asset_exists, issuer_not_found, issuer_not_legal_person.
 * open_account: signer_not_operator, flags_are_mutually_exclusive, issuance_limit_invalid,
 *   issuance_limit_with_debits_must_not_exceed_credits, debit_limit_required, account_exists,
 *   account_owner_not_found, account_asset_not_found, issuance_limit_owner_not_issuer.
 * close_account: account_not_found, signer_not_account_owner_or_operator, account_already_closed,
 *   account_has_pending_transfers, account_balance_not_zero.
 * transfer (TigerBeetle's create_transfer order): amount_invalid, accounts_must_be_different,
 *   amount_must_not_be_zero, debit_account_not_found, signer_not_debit_account_owner,
 *   credit_account_not_found, accounts_must_have_the_same_asset,
 *   transfer_must_have_the_same_asset_as_accounts, debit_account_closed, credit_account_closed,
 *   debit_owner_kyc_not_verified, credit_owner_kyc_not_verified, overflows_debits_pending and
 *   overflows_credits_pending (pending transfers only), overflows_debits_posted, overflows_credits_posted,
 *   overflows_debits, overflows_credits, exceeds_credits, exceeds_issuance_limit, exceeds_debits.
 *   The signer is authorized right after the debit account is found, so that a stranger learns nothing
 *   about the credit account.
 * post_pending: amount_invalid, pending_transfer_not_found, signer_not_debit_account_owner_or_operator,
 *   amount_must_not_be_zero, exceeds_pending_transfer_amount, pending_transfer_already_posted,
 *   pending_transfer_already_voided, pending_transfer_already_expired, pending_transfer_expired.
 * void_pending: pending_transfer_not_found, signer_not_transfer_party_or_operator,
 *   pending_transfer_already_posted, pending_transfer_already_voided, pending_transfer_already_expired,
 *   pending_transfer_expired.
 * expire_pending: pending_transfer_not_expirable for any listed id that is unknown, not pending, listed
 *   twice or whose time has not come; then nothing of it applies.
 * grant_view: view_range_invalid, view_exists, then for each account in the order given
 *   view_account_not_found and signer_not_view_account_owner, then for each account view_limit_reached,
 *   then view_grantee_is_grantor,
 *   view_grantee_not_found. Closed accounts may be viewed: their history stays worth checking.
 * revoke_view: view_not_found, signer_not_view_grantor (grantor or operator), view_already_revoked.
 *
 * Balances follow TigerBeetle: a transfer with `pending` moves the amount into the pending balances of
 * both accounts, and limits count pending debits (or credits), so a reservation can always be posted. A
 * pending transfer expires at `time + timeoutSeconds * 1000`; from that instant it can no longer be posted
 * or voided, and `expirable()` lists it until an `expire_pending` releases it. A post may be partial: it
 * posts `amount` and releases the rest.
 *
 * Statement entries: every accepted transfer, post, void and expiry adds one entry on each of its two
 * accounts. `pending` and `posted` entries carry the transfer's amount. A `post` entry carries the amount
 * posted and releases the whole pending amount of its transfer; `void` and `expire` entries carry the
 * pending amount they release.
 *
 * Linked chains succeed or fail together. Their effects are undone from an undo log of old field values,
 * never from copies of the state, and a transaction outside a chain logs nothing at all: the hot path of
 * one transfer allocates its transfer record, two entries and nothing else.
 */

/**
 * The owner of the node key. The id pattern refuses the all-zero id, so no person can ever have it (as
 * TigerBeetle reserves id 0), and no transaction can name the node key's owner.
 */
export const systemPersonId = '0'.repeat(32)
/** The most ids `expirable()` returns: what one `expire_pending` may carry (its schema's `maxItems`). */
export const expirableIdsMax = 8190
/** The longest linked chain: one TigerBeetle batch. A longer chain is a bug in the funnel. */
export const chainLengthMax = 8190
/** The longest range a view may cover: 100 years of 365.25 days. */
export const viewRangeMsMax = 36_525 * 24 * 3600 * 1000
/**
 * Active views per account. Every grantee of an active view is a recipient of each new leaf of the
 * account, so this bounds a leaf's recipients (and its size) as well as the work per leaf.
 */
export const viewsPerAccountMax = 16
/**
 * Active device keys per person (as many as `register_person` may bring). Each is a recipient of every
 * leaf that concerns the person, so this bounds the recipients of a leaf, with `viewsPerAccountMax`.
 */
export const keysPerPersonMax = 8

export interface ApplyContext {
  /** Epoch milliseconds: the time of the block the transaction goes into. */
  readonly time: number
  /** The leaf index the transaction gets if it is accepted. */
  readonly leaf: number
}

export interface ChainItem {
  readonly signed: SignedTransaction
  readonly context: ApplyContext
}

/** What the storage loads: the records as they were last written. Transfers: two-phase ones only. */
export interface LedgerState {
  readonly persons: readonly PersonRecord[]
  readonly keys: readonly KeyRecord[]
  readonly assets: readonly AssetRecord[]
  readonly accounts: readonly AccountRecord[]
  readonly transfers: readonly TransferRecord[]
  readonly views: readonly ViewRecord[]
}

/**
 * Everything created or changed since the last `takeChanges()`, for one database transaction. Records are
 * copies taken at that moment, so the funnel may apply the next batch while the write is in flight.
 * `transfers` holds every new transfer (single-phase ones too) and every two-phase transfer that changed.
 */
export interface LedgerChanges {
  readonly persons: readonly PersonRecord[]
  readonly keys: readonly KeyRecord[]
  readonly assets: readonly AssetRecord[]
  readonly accounts: readonly AccountRecord[]
  readonly transfers: readonly TransferRecord[]
  readonly views: readonly ViewRecord[]
  readonly entries: readonly EntryRecord[]
}

/** The old values of what one step changed; undone in reverse order when a chain fails. */
type Undo =
  | { readonly kind: 'insert'; readonly map: Map<string, unknown>; readonly id: string }
  /** A record appended to a secondary index; undone in reverse order, so it is the list's last. */
  | { readonly kind: 'index'; readonly list: unknown[] }
  | {
      readonly kind: 'unindex'
      readonly list: unknown[]
      readonly position: number
      readonly record: unknown
    }
  | {
      readonly kind: 'account'
      readonly record: AccountRecord
      readonly debitsPending: bigint
      readonly debitsPosted: bigint
      readonly creditsPending: bigint
      readonly creditsPosted: bigint
      readonly closed: boolean
    }
  | {
      readonly kind: 'transfer'
      readonly record: TransferRecord
      readonly state: TransferState
      readonly postedAmount: bigint | null
    }
  | {
      readonly kind: 'person'
      readonly record: PersonRecord
      readonly roles: PersonRecord['roles']
      readonly kyc: PersonRecord['kyc']
    }
  | {
      readonly kind: 'key'
      readonly record: KeyRecord
      readonly revoked: boolean
      readonly revokedLeaf: number | null
    }
  | {
      readonly kind: 'view'
      readonly record: ViewRecord
      readonly revoked: boolean
      readonly revokedLeaf: number | null
    }

interface Mark {
  readonly undo: number
  readonly persons: number
  readonly keys: number
  readonly assets: number
  readonly accounts: number
  readonly transfers: number
  readonly views: number
  readonly entries: number
}

/** Records changed since the last take, in first-change order, each once; truncatable for undo. */
class ChangeList<T extends object> {
  #items: T[] = []
  readonly #members = new Set<T>()

  get length(): number {
    return this.#items.length
  }

  add(record: T): void {
    if (this.#members.has(record)) return
    this.#members.add(record)
    this.#items.push(record)
  }

  /** Forgets the records first changed after `length`: their change was undone. */
  truncate(length: number): void {
    const items = this.#items
    while (items.length > length) this.#members.delete(items.pop()!)
  }

  take(copy: boolean): T[] {
    const items = this.#items
    this.#items = []
    this.#members.clear()
    return copy ? items.map((record) => ({ ...record })) : items
  }
}

/**
 * Pending transfers ordered by expiry (a binary min-heap). Posted, voided, expired or undone transfers stay
 * in it until they reach the top; whoever reads it checks that a transfer is still live and pending.
 */
class ExpiryHeap {
  readonly items: TransferRecord[] = []

  push(transfer: TransferRecord): void {
    const items = this.items
    items.push(transfer)
    let index = items.length - 1
    while (index > 0) {
      const parent = (index - 1) >> 1
      if (expiresAt(items[parent]!) <= expiresAt(transfer)) break
      items[index] = items[parent]!
      index = parent
    }
    items[index] = transfer
  }

  pop(): void {
    const items = this.items
    const last = items.pop()
    if (last === undefined || items.length === 0) return
    let index = 0
    for (;;) {
      const left = 2 * index + 1
      if (left >= items.length) break
      const right = left + 1
      const child = right < items.length && expiresAt(items[right]!) < expiresAt(items[left]!) ? right : left
      if (expiresAt(items[child]!) >= expiresAt(last)) break
      items[index] = items[child]!
      index = child
    }
    items[index] = last
  }
}

function expiresAt(transfer: TransferRecord): number {
  return transfer.expiresAt!
}

function isOperator(person: PersonRecord): boolean {
  return person.roles.includes('operator') || person.roles.includes('admin')
}

function isAdmin(person: PersonRecord): boolean {
  return person.roles.includes('admin')
}

/**
 * Epoch ms of a time the schema let through, or NaN when it names no real instant: the pattern allows
 * 30 February, which `Date.parse` would quietly roll over into March.
 */
function instant(text: string): number {
  const time = Date.parse(text)
  if (Number.isNaN(time) || new Date(time).toISOString().slice(0, 19) !== text.slice(0, 19)) return Number.NaN
  return time
}

/** Appends to a list in a map of lists (a secondary index). */
function appendTo<T>(index: Map<string, T[]>, key: string, record: T): T[] {
  const list = index.get(key) ?? []
  if (list.length === 0) index.set(key, list)
  list.push(record)
  return list
}

/** The schema lets 39-digit amounts through, so an amount above 2^128-1 is a client's mistake: null. */
function amountOrNull(text: string): bigint | null {
  try {
    return parseAmount(text)
  } catch (error) {
    if (error instanceof VmError) return null
    throw error
  }
}

const codes = resultCodes

export class Ledger {
  readonly nodeKeyId: string
  readonly #persons = new Map<string, PersonRecord>()
  readonly #keys = new Map<string, KeyRecord>()
  readonly #assets = new Map<string, AssetRecord>()
  readonly #accounts = new Map<string, AccountRecord>()
  /** Two-phase transfers, pending and resolved: post and void must tell "already posted" from "unknown". */
  readonly #transfers = new Map<string, TransferRecord>()
  readonly #expiries = new ExpiryHeap()
  readonly #views = new Map<string, ViewRecord>()
  /**
   * Secondary indexes, so that the funnel's per-leaf questions (whose keys, which views) cost the size of
   * the answer rather than a scan. Entries are appended only; an undone insert pops its entry again.
   */
  readonly #keysByPerson = new Map<string, KeyRecord[]>()
  readonly #viewsByAccount = new Map<string, ViewRecord[]>()

  readonly #changedPersons = new ChangeList<PersonRecord>()
  readonly #changedKeys = new ChangeList<KeyRecord>()
  readonly #changedAssets = new ChangeList<AssetRecord>()
  readonly #changedAccounts = new ChangeList<AccountRecord>()
  readonly #changedTransfers = new ChangeList<TransferRecord>()
  readonly #changedViews = new ChangeList<ViewRecord>()
  #entries: EntryRecord[] = []

  /** Filled only while a linked chain (or an expire_pending) runs; empty otherwise. */
  readonly #undoLog: Undo[] = []
  #logging = false

  constructor(nodeKeyId: string) {
    assert(/^[A-Za-z0-9_-]{43}$/.test(nodeKeyId), 'the node key id is a JWK thumbprint')
    this.nodeKeyId = nodeKeyId
  }

  /**
   * Builds the ledger from what the storage holds. The records become the ledger's own and are changed in
   * place from then on. The state is checked for consistency first, because a ledger built on a broken
   * state would decide wrongly forever after.
   */
  static load(nodeKeyId: string, state: LedgerState): Ledger {
    const ledger = new Ledger(nodeKeyId)
    for (const person of state.persons) {
      assert(!ledger.#persons.has(person.id), `person ${person.id} loaded twice`)
      ledger.#persons.set(person.id, person)
    }
    for (const key of state.keys) {
      assert(!ledger.#keys.has(key.keyId), `key ${key.keyId} loaded twice`)
      const systemKey = key.personId === systemPersonId
      assert(systemKey === (key.keyId === nodeKeyId), `only the node key belongs to the system: ${key.keyId}`)
      assert(systemKey || ledger.#persons.has(key.personId), `key ${key.keyId} has no person`)
      ledger.#keys.set(key.keyId, key)
      appendTo(ledger.#keysByPerson, key.personId, key)
    }
    assert(
      ledger.#keys.has(nodeKeyId) === ledger.#persons.size > 0,
      'persons exist exactly when genesis was applied',
    )
    for (const asset of state.assets) {
      assert(!ledger.#assets.has(asset.id), `asset ${asset.id} loaded twice`)
      assert(ledger.#persons.has(asset.issuer), `asset ${asset.id} has no issuer`)
      ledger.#assets.set(asset.id, asset)
    }
    const pendingDebits = new Map<string, bigint>()
    const pendingCredits = new Map<string, bigint>()
    for (const account of state.accounts) {
      assert(!ledger.#accounts.has(account.id), `account ${account.id} loaded twice`)
      assert(ledger.#persons.has(account.owner), `account ${account.id} has no owner`)
      assert(ledger.#assets.has(account.asset), `account ${account.id} has no asset`)
      assertAccount(account)
      ledger.#accounts.set(account.id, account)
    }
    for (const transfer of state.transfers) {
      assert(!ledger.#transfers.has(transfer.id), `transfer ${transfer.id} loaded twice`)
      assert(transfer.expiresAt !== null, `transfer ${transfer.id} is not two-phase`)
      const debit = ledger.#accounts.get(transfer.debit)
      const credit = ledger.#accounts.get(transfer.credit)
      assert(debit !== undefined && credit !== undefined, 'a transfer has both accounts')
      ledger.#transfers.set(transfer.id, transfer)
      if (transfer.state !== 'pending') continue
      pendingDebits.set(debit.id, (pendingDebits.get(debit.id) ?? 0n) + transfer.amount)
      pendingCredits.set(credit.id, (pendingCredits.get(credit.id) ?? 0n) + transfer.amount)
      ledger.#expiries.push(transfer)
    }
    // Pending balances are exactly the sums of the pending transfers, or a post or void would corrupt them.
    for (const account of ledger.#accounts.values()) {
      assert(
        account.debitsPending === (pendingDebits.get(account.id) ?? 0n),
        `account ${account.id}: debits pending`,
      )
      assert(
        account.creditsPending === (pendingCredits.get(account.id) ?? 0n),
        `account ${account.id}: credits pending`,
      )
    }
    for (const view of state.views) {
      assert(!ledger.#views.has(view.id), `view ${view.id} loaded twice`)
      ledger.#assertView(view)
      ledger.#views.set(view.id, view)
      if (!view.revoked) for (const account of view.accounts) appendTo(ledger.#viewsByAccount, account, view)
    }
    return ledger
  }

  get genesisApplied(): boolean {
    return this.#keys.has(this.nodeKeyId)
  }

  key(keyId: string): Readonly<KeyRecord> | undefined {
    return this.#keys.get(keyId)
  }

  person(id: string): Readonly<PersonRecord> | undefined {
    return this.#persons.get(id)
  }

  asset(id: string): Readonly<AssetRecord> | undefined {
    return this.#assets.get(id)
  }

  account(id: string): Readonly<AccountRecord> | undefined {
    return this.#accounts.get(id)
  }

  /** Two-phase transfers only: single-phase transfers never change, so the ledger does not keep them. */
  transfer(id: string): Readonly<TransferRecord> | undefined {
    return this.#transfers.get(id)
  }

  accounts(): IterableIterator<Readonly<AccountRecord>> {
    return this.#accounts.values()
  }

  view(id: string): Readonly<ViewRecord> | undefined {
    return this.#views.get(id)
  }

  /** The person's keys that are not revoked (records as held). */
  activeKeysOf(personId: string): readonly Readonly<KeyRecord>[] {
    const keys = this.#keysByPerson.get(personId) ?? []
    // The identity check keeps out an entry whose insert was undone, should an index ever outlive it.
    return keys.filter((key) => !key.revoked && this.#keys.get(key.keyId) === key)
  }

  /** Views not revoked whose accounts include `accountId` and whose range holds `time`. O(active views). */
  viewsCovering(accountId: string, time: number): readonly Readonly<ViewRecord>[] {
    const views = this.#viewsByAccount.get(accountId) ?? []
    return views.filter(
      (view) => !view.revoked && view.from <= time && time < view.until && this.#views.get(view.id) === view,
    )
  }

  /**
   * Ids of pending transfers whose time has passed at `time`, at most `limit`. A transfer stays listed
   * until an `expire_pending` releases it, so the funnel must not list it again before that is applied.
   */
  expirable(time: number, limit: number = expirableIdsMax): string[] {
    assert(Number.isSafeInteger(limit) && limit >= 1 && limit <= expirableIdsMax, 'expirable limit')
    assert(!this.#logging, 'expirable() is not called within a chain')
    const heap = this.#expiries
    // Drop what was resolved or undone from the top, so the heap does not grow with dead transfers.
    while (heap.items.length > 0 && !this.#isLivePending(heap.items[0]!)) heap.pop()
    const ids: string[] = []
    // A heap's children expire no earlier than their parent: walk it depth first and prune late subtrees.
    const stack: number[] = heap.items.length > 0 ? [0] : []
    while (stack.length > 0 && ids.length < limit) {
      const index = stack.pop()!
      const transfer = heap.items[index]!
      if (expiresAt(transfer) > time) continue
      if (this.#isLivePending(transfer)) ids.push(transfer.id)
      const left = 2 * index + 1
      if (left + 1 < heap.items.length) stack.push(left + 1)
      if (left < heap.items.length) stack.push(left)
    }
    return ids
  }

  #isLivePending(transfer: TransferRecord): boolean {
    return transfer.state === 'pending' && this.#transfers.get(transfer.id) === transfer
  }

  /**
   * Applies one transaction: a chain of one. A transaction with `linked: true` but nothing after it is an
   * open chain and is refused.
   */
  apply(signed: SignedTransaction, context: ApplyContext): ResultCode {
    if (signed.tx.linked === true) return codes.linked_event_chain_open
    return this.#applyOne(signed.tx, context)
  }

  /**
   * Applies a linked chain: every transaction but the last has `linked: true`. All succeed or none does:
   * the first refusal keeps its code, undoes what the chain did before it, and every other transaction
   * of the chain gets `linked_event_failed`.
   */
  applyChain(chain: readonly ChainItem[]): ResultCode[] {
    assert(
      chain.length >= 1 && chain.length <= chainLengthMax,
      'a chain holds 1 to chainLengthMax transactions',
    )
    for (let index = 0; index < chain.length - 1; index++) {
      assert(chain[index]!.signed.tx.linked === true, 'a chain ends only at its last transaction')
    }
    const results = new Array<ResultCode>(chain.length)
    const last = chain.length - 1
    if (chain[last]!.signed.tx.linked === true) {
      results.fill(codes.linked_event_failed)
      results[last] = codes.linked_event_chain_open
      return results
    }
    if (chain.length === 1) {
      results[0] = this.#applyOne(chain[0]!.signed.tx, chain[0]!.context)
      return results
    }
    assert(!this.#logging && this.#undoLog.length === 0, 'chains do not nest')
    this.#logging = true
    const mark = this.#mark()
    try {
      for (let index = 0; index < chain.length; index++) {
        const item = chain[index]!
        const code = this.#applyOne(item.signed.tx, item.context)
        if (code !== codes.ok) {
          this.#rollback(mark)
          results.fill(codes.linked_event_failed)
          results[index] = code
          return results
        }
        results[index] = code
      }
      return results
    } finally {
      this.#logging = false
      this.#undoLog.length = 0
    }
  }

  /** Hands over, and forgets, everything created or changed since the last call. */
  takeChanges(): LedgerChanges {
    assert(!this.#logging, 'changes are taken between chains')
    const entries = this.#entries
    this.#entries = []
    return {
      persons: this.#changedPersons.take(true),
      keys: this.#changedKeys.take(true),
      // Assets never change after creation, so they need no copy.
      assets: this.#changedAssets.take(false),
      accounts: this.#changedAccounts.take(true),
      transfers: this.#changedTransfers.take(true),
      views: this.#changedViews.take(true),
      entries,
    }
  }

  /** Forgets the changes without handing them over: for a replay (audit) that writes nothing. */
  discardChanges(): void {
    assert(!this.#logging, 'changes are discarded between chains')
    this.#entries = []
    this.#changedPersons.take(false)
    this.#changedKeys.take(false)
    this.#changedAssets.take(false)
    this.#changedAccounts.take(false)
    this.#changedTransfers.take(false)
    this.#changedViews.take(false)
  }

  /**
   * Checks the invariants of the whole state: for every asset, posted credits minus posted debits over all
   * accounts is zero, and so are pending; each account keeps its limits; pending balances are the sums of
   * the pending transfers; every view is sound, and the indexes hold exactly the records of the maps.
   * O(all records): for tests and audits, not for the hot path.
   */
  assertInvariants(): void {
    const posted = new Map<string, bigint>()
    const pending = new Map<string, bigint>()
    const pendingDebits = new Map<string, bigint>()
    const pendingCredits = new Map<string, bigint>()
    for (const account of this.#accounts.values()) {
      assertAccount(account)
      posted.set(
        account.asset,
        (posted.get(account.asset) ?? 0n) + account.creditsPosted - account.debitsPosted,
      )
      pending.set(
        account.asset,
        (pending.get(account.asset) ?? 0n) + account.creditsPending - account.debitsPending,
      )
    }
    for (const [asset, sum] of posted) assert(sum === 0n, `asset ${asset}: posted balances sum to ${sum}`)
    for (const [asset, sum] of pending) assert(sum === 0n, `asset ${asset}: pending balances sum to ${sum}`)
    for (const transfer of this.#transfers.values()) {
      if (transfer.state !== 'pending') continue
      pendingDebits.set(transfer.debit, (pendingDebits.get(transfer.debit) ?? 0n) + transfer.amount)
      pendingCredits.set(transfer.credit, (pendingCredits.get(transfer.credit) ?? 0n) + transfer.amount)
    }
    for (const account of this.#accounts.values()) {
      assert(
        account.debitsPending === (pendingDebits.get(account.id) ?? 0n),
        `account ${account.id}: debits pending`,
      )
      assert(
        account.creditsPending === (pendingCredits.get(account.id) ?? 0n),
        `account ${account.id}: credits pending`,
      )
    }
    let indexedKeys = 0
    for (const [personId, keys] of this.#keysByPerson) {
      for (const key of keys)
        assert(this.#keys.get(key.keyId) === key && key.personId === personId, 'key index')
      indexedKeys += keys.length
    }
    assert(indexedKeys === this.#keys.size, 'every key is indexed once')
    let indexedViews = 0
    for (const [accountId, views] of this.#viewsByAccount) {
      for (const view of views)
        assert(this.#views.get(view.id) === view && view.accounts.includes(accountId), 'view index')
      indexedViews += views.length
    }
    let viewAccounts = 0
    for (const view of this.#views.values()) {
      this.#assertView(view)
      if (!view.revoked) viewAccounts += view.accounts.length
    }
    assert(indexedViews === viewAccounts, 'every account of every active view is indexed once')
  }

  /** A view's grantor owns its accounts (owners never change), its grantee exists, its range is sound. */
  #assertView(view: ViewRecord): void {
    assert(this.#persons.has(view.grantor), `view ${view.id} has no grantor`)
    assert(view.grantee === null || this.#persons.has(view.grantee), `view ${view.id} has no grantee`)
    assert(view.grantee !== view.grantor, `view ${view.id} is granted to its grantor`)
    assert(view.from < view.until && view.until - view.from <= viewRangeMsMax, `view ${view.id}: range`)
    assert(view.revoked === (view.revokedLeaf !== null), `view ${view.id}: revocation`)
    for (const id of view.accounts)
      assert(
        this.#accounts.get(id)?.owner === view.grantor,
        `view ${view.id}: account ${id} is not the grantor's`,
      )
  }

  #applyOne(tx: Transaction, context: ApplyContext): ResultCode {
    assert(Number.isSafeInteger(context.leaf) && context.leaf >= 0, 'leaf index')
    assert(Number.isSafeInteger(context.time) && context.time >= 0, 'block time')
    if (tx.node !== this.nodeKeyId) return codes.node_mismatch
    if (tx.type === 'genesis' || tx.type === 'expire_pending') {
      if (tx.signer !== this.nodeKeyId) return codes.system_transaction_not_allowed
      if (tx.type === 'genesis') return this.#genesis(tx, context)
    }
    const signerKey = this.#keys.get(tx.signer)
    if (signerKey === undefined) return codes.signer_key_not_found
    if (signerKey.revoked) return codes.signer_key_revoked
    if (signerKey.key.use === 'read') return codes.signer_key_read_only
    if (tx.type === 'expire_pending') return this.#expirePending(tx, context)
    if (signerKey.personId === systemPersonId) return codes.signer_is_node_key
    const signer = this.#persons.get(signerKey.personId)
    assert(signer !== undefined, 'every key but the node key has a person')
    switch (tx.type) {
      case 'register_person':
        return this.#registerPerson(tx, context, signer)
      case 'add_key':
        return this.#addKey(tx, context, signer)
      case 'revoke_key':
        return this.#revokeKey(tx, context, signer)
      case 'set_kyc':
        return this.#setKyc(tx, signer)
      case 'create_asset':
        return this.#createAsset(tx, context, signer)
      case 'open_account':
        return this.#openAccount(tx, context, signer)
      case 'close_account':
        return this.#closeAccount(tx, signer)
      case 'transfer':
        return this.#transfer(tx, context, signer)
      case 'post_pending':
        return this.#postPending(tx, context, signer)
      case 'void_pending':
        return this.#voidPending(tx, context, signer)
      case 'grant_view':
        return this.#grantView(tx, context, signer)
      case 'revoke_view':
        return this.#revokeView(tx, context, signer)
      default: {
        const unexpected: never = tx
        assert(false, `unknown transaction type ${(unexpected as Transaction).type}`)
      }
    }
  }

  #genesis(tx: TransactionOf<'genesis'>, context: ApplyContext): ResultCode {
    if (this.genesisApplied) return codes.genesis_exists
    if (context.leaf !== 0) return codes.genesis_leaf_not_zero
    if (keyId(tx.nodeKey as OkpJwk) !== this.nodeKeyId) return codes.genesis_node_key_mismatch
    const adminKeyId = deviceKeyId(tx.adminKey)
    if (adminKeyId === this.nodeKeyId) return codes.key_exists
    assert(this.#persons.size === 0 && this.#keys.size === 0, 'nothing exists before genesis')

    this.#insertKey({
      keyId: this.nodeKeyId,
      personId: systemPersonId,
      key: { signing: tx.nodeKey },
      revoked: false,
      addedLeaf: context.leaf,
      revokedLeaf: null,
    })
    this.#insertPerson({
      id: tx.admin.id,
      person: tx.admin,
      roles: ['admin'],
      kyc: 'verified',
      createdLeaf: context.leaf,
    })
    this.#insertKey({
      keyId: adminKeyId,
      personId: tx.admin.id,
      key: tx.adminKey,
      revoked: false,
      addedLeaf: context.leaf,
      revokedLeaf: null,
    })
    return codes.ok
  }

  #registerPerson(
    tx: TransactionOf<'register_person'>,
    context: ApplyContext,
    signer: PersonRecord,
  ): ResultCode {
    if (!isOperator(signer)) return codes.signer_not_operator
    if (tx.roles !== undefined && !isAdmin(signer)) return codes.signer_not_admin
    if (this.#persons.has(tx.person.id)) return codes.person_exists
    const keyIds = tx.keys.map(deviceKeyId)
    for (let index = 0; index < keyIds.length; index++) {
      const id = keyIds[index]!
      if (this.#keys.has(id) || keyIds.indexOf(id) !== index) return codes.key_exists
    }

    this.#insertPerson({
      id: tx.person.id,
      person: tx.person,
      roles: tx.roles ?? [],
      kyc: 'pending',
      createdLeaf: context.leaf,
    })
    for (let index = 0; index < keyIds.length; index++) {
      this.#insertKey({
        keyId: keyIds[index]!,
        personId: tx.person.id,
        key: tx.keys[index]!,
        revoked: false,
        addedLeaf: context.leaf,
        revokedLeaf: null,
      })
    }
    return codes.ok
  }

  #addKey(tx: TransactionOf<'add_key'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    if (signer.id !== tx.person) return codes.signer_not_person
    const id = deviceKeyId(tx.key)
    if (this.#keys.has(id)) return codes.key_exists
    if (this.activeKeysOf(tx.person).length >= keysPerPersonMax) return codes.person_keys_limit_reached

    this.#insertKey({
      keyId: id,
      personId: tx.person,
      key: tx.key,
      revoked: false,
      addedLeaf: context.leaf,
      revokedLeaf: null,
    })
    return codes.ok
  }

  #revokeKey(tx: TransactionOf<'revoke_key'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    const self = signer.id === tx.person
    if (!self && !isOperator(signer)) return codes.signer_not_person_or_operator
    const person = this.#persons.get(tx.person)
    if (person === undefined) return codes.person_not_found
    // An operator may lock out a customer's lost device, but not an admin or another operator.
    if (!self && person.roles.length > 0 && !isAdmin(signer)) return codes.signer_not_admin
    const key = this.#keys.get(tx.keyId)
    if (key === undefined) return codes.key_not_found
    if (key.personId !== tx.person) return codes.key_not_owned_by_person
    if (key.revoked) return codes.key_already_revoked

    this.#saveKey(key)
    key.revoked = true
    key.revokedLeaf = context.leaf
    return codes.ok
  }

  #setKyc(tx: TransactionOf<'set_kyc'>, signer: PersonRecord): ResultCode {
    if (!isOperator(signer)) return codes.signer_not_operator
    const person = this.#persons.get(tx.person)
    if (person === undefined) return codes.person_not_found

    this.#savePerson(person)
    person.kyc = tx.status
    return codes.ok
  }

  #createAsset(tx: TransactionOf<'create_asset'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    if (!isOperator(signer)) return codes.signer_not_operator
    if (this.#assets.has(tx.asset)) return codes.asset_exists
    const issuer = this.#persons.get(tx.issuer)
    if (issuer === undefined) return codes.issuer_not_found
    if (issuer.person.kind !== 'legal') return codes.issuer_not_legal_person

    const asset: AssetRecord = {
      id: tx.asset,
      issuer: tx.issuer,
      scale: tx.scale,
      name: tx.name,
      createdLeaf: context.leaf,
    }
    this.#insert(this.#assets, asset.id, asset)
    this.#changedAssets.add(asset)
    return codes.ok
  }

  #openAccount(tx: TransactionOf<'open_account'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    if (!isOperator(signer)) return codes.signer_not_operator
    const debitsMustNotExceedCredits = tx.flags.includes('debits_must_not_exceed_credits')
    if (debitsMustNotExceedCredits && tx.flags.includes('credits_must_not_exceed_debits')) {
      return codes.flags_are_mutually_exclusive
    }
    let issuanceLimit: bigint | null = null
    if (tx.issuanceLimit !== undefined) {
      issuanceLimit = amountOrNull(tx.issuanceLimit)
      if (issuanceLimit === null) return codes.issuance_limit_invalid
      if (debitsMustNotExceedCredits) return codes.issuance_limit_with_debits_must_not_exceed_credits
    } else if (!debitsMustNotExceedCredits) {
      return codes.debit_limit_required
    }
    if (this.#accounts.has(tx.account)) return codes.account_exists
    if (!this.#persons.has(tx.owner)) return codes.account_owner_not_found
    const asset = this.#assets.get(tx.asset)
    if (asset === undefined) return codes.account_asset_not_found
    if (issuanceLimit !== null && asset.issuer !== tx.owner) return codes.issuance_limit_owner_not_issuer

    const account: AccountRecord = {
      id: tx.account,
      owner: tx.owner,
      asset: tx.asset,
      flags: tx.flags,
      issuanceLimit,
      debitsPending: 0n,
      debitsPosted: 0n,
      creditsPending: 0n,
      creditsPosted: 0n,
      closed: false,
      createdLeaf: context.leaf,
    }
    this.#insert(this.#accounts, account.id, account)
    this.#changedAccounts.add(account)
    return codes.ok
  }

  #closeAccount(tx: TransactionOf<'close_account'>, signer: PersonRecord): ResultCode {
    const account = this.#accounts.get(tx.account)
    if (account === undefined) return codes.account_not_found
    if (account.owner !== signer.id && !isOperator(signer)) return codes.signer_not_account_owner_or_operator
    if (account.closed) return codes.account_already_closed
    // Pending amounts are never zero, so a pending balance is not zero exactly when a pending transfer exists.
    if (account.debitsPending !== 0n || account.creditsPending !== 0n)
      return codes.account_has_pending_transfers
    if (account.debitsPosted !== account.creditsPosted) return codes.account_balance_not_zero

    this.#saveAccount(account)
    account.closed = true
    return codes.ok
  }

  #transfer(tx: TransactionOf<'transfer'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    const amount = amountOrNull(tx.amount)
    if (amount === null) return codes.amount_invalid
    if (tx.debit === tx.credit) return codes.accounts_must_be_different
    if (amount === 0n) return codes.amount_must_not_be_zero
    const debit = this.#accounts.get(tx.debit)
    if (debit === undefined) return codes.debit_account_not_found
    if (debit.owner !== signer.id) return codes.signer_not_debit_account_owner
    const credit = this.#accounts.get(tx.credit)
    if (credit === undefined) return codes.credit_account_not_found
    if (debit.asset !== credit.asset) return codes.accounts_must_have_the_same_asset
    if (tx.asset !== debit.asset) return codes.transfer_must_have_the_same_asset_as_accounts
    if (debit.closed) return codes.debit_account_closed
    if (credit.closed) return codes.credit_account_closed
    // The signer owns the debit account, so the signer's KYC is the debit owner's.
    if (signer.kyc !== 'verified') return codes.debit_owner_kyc_not_verified
    const creditOwner = this.#persons.get(credit.owner)
    assert(creditOwner !== undefined, 'every account has an owner')
    if (creditOwner.kyc !== 'verified') return codes.credit_owner_kyc_not_verified
    const pending = tx.pending !== undefined
    if (pending) {
      if (amount + debit.debitsPending > amountMax) return codes.overflows_debits_pending
      if (amount + credit.creditsPending > amountMax) return codes.overflows_credits_pending
    }
    if (amount + debit.debitsPosted > amountMax) return codes.overflows_debits_posted
    if (amount + credit.creditsPosted > amountMax) return codes.overflows_credits_posted
    const debits = debit.debitsPending + debit.debitsPosted + amount
    if (debits > amountMax) return codes.overflows_debits
    const credits = credit.creditsPending + credit.creditsPosted + amount
    if (credits > amountMax) return codes.overflows_credits
    if (debits > debit.creditsPosted && debit.flags.includes('debits_must_not_exceed_credits')) {
      return codes.exceeds_credits
    }
    if (debit.issuanceLimit !== null && debits > debit.creditsPosted + debit.issuanceLimit) {
      return codes.exceeds_issuance_limit
    }
    if (credits > credit.debitsPosted && credit.flags.includes('credits_must_not_exceed_debits')) {
      return codes.exceeds_debits
    }

    this.#saveAccount(debit)
    this.#saveAccount(credit)
    const transfer: TransferRecord = {
      id: tx.id,
      debit: debit.id,
      credit: credit.id,
      asset: debit.asset,
      amount,
      state: pending ? 'pending' : 'posted',
      expiresAt: pending ? context.time + tx.pending!.timeoutSeconds * 1000 : null,
      postedAmount: null,
      memo: tx.memo ?? null,
      leaf: context.leaf,
      time: context.time,
    }
    if (pending) {
      debit.debitsPending += amount
      credit.creditsPending += amount
      this.#insert(this.#transfers, transfer.id, transfer)
      this.#expiries.push(transfer)
    } else {
      debit.debitsPosted += amount
      credit.creditsPosted += amount
    }
    this.#changedTransfers.add(transfer)
    const phase = pending ? 'pending' : 'posted'
    this.#entry(debit, 'debit', phase, tx.id, transfer.id, amount, context)
    this.#entry(credit, 'credit', phase, tx.id, transfer.id, amount, context)
    assertAccount(debit)
    assertAccount(credit)
    return codes.ok
  }

  #postPending(tx: TransactionOf<'post_pending'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    let amount: bigint | null = null
    if (tx.amount !== undefined) {
      amount = amountOrNull(tx.amount)
      if (amount === null) return codes.amount_invalid
    }
    const transfer = this.#transfers.get(tx.pending)
    if (transfer === undefined) return codes.pending_transfer_not_found
    const debit = this.#accounts.get(transfer.debit)
    const credit = this.#accounts.get(transfer.credit)
    assert(debit !== undefined && credit !== undefined, 'a transfer has both accounts')
    if (debit.owner !== signer.id && !isOperator(signer))
      return codes.signer_not_debit_account_owner_or_operator
    const posted = amount ?? transfer.amount
    if (posted === 0n) return codes.amount_must_not_be_zero
    if (posted > transfer.amount) return codes.exceeds_pending_transfer_amount
    const refused = resolvable(transfer, context.time)
    if (refused !== codes.ok) return refused

    this.#saveTransfer(transfer)
    this.#saveAccount(debit)
    this.#saveAccount(credit)
    transfer.state = 'posted'
    transfer.postedAmount = posted
    debit.debitsPending -= transfer.amount
    debit.debitsPosted += posted
    credit.creditsPending -= transfer.amount
    credit.creditsPosted += posted
    this.#entry(debit, 'debit', 'post', tx.id, transfer.id, posted, context)
    this.#entry(credit, 'credit', 'post', tx.id, transfer.id, posted, context)
    assertAccount(debit)
    assertAccount(credit)
    return codes.ok
  }

  #voidPending(tx: TransactionOf<'void_pending'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    const transfer = this.#transfers.get(tx.pending)
    if (transfer === undefined) return codes.pending_transfer_not_found
    const debit = this.#accounts.get(transfer.debit)
    const credit = this.#accounts.get(transfer.credit)
    assert(debit !== undefined && credit !== undefined, 'a transfer has both accounts')
    if (debit.owner !== signer.id && credit.owner !== signer.id && !isOperator(signer)) {
      return codes.signer_not_transfer_party_or_operator
    }
    const refused = resolvable(transfer, context.time)
    if (refused !== codes.ok) return refused

    this.#release(transfer, debit, credit, 'voided', tx.id, context)
    return codes.ok
  }

  #expirePending(tx: TransactionOf<'expire_pending'>, context: ApplyContext): ResultCode {
    // Released one by one, so a bad id half way (or an id listed twice) must undo the ones before it.
    const logging = this.#logging
    this.#logging = true
    const mark = this.#mark()
    try {
      for (const id of tx.pending) {
        const transfer = this.#transfers.get(id)
        if (transfer === undefined || transfer.state !== 'pending' || expiresAt(transfer) > context.time) {
          this.#rollback(mark)
          return codes.pending_transfer_not_expirable
        }
        const debit = this.#accounts.get(transfer.debit)
        const credit = this.#accounts.get(transfer.credit)
        assert(debit !== undefined && credit !== undefined, 'a transfer has both accounts')
        this.#release(transfer, debit, credit, 'expired', tx.id, context)
      }
      return codes.ok
    } finally {
      this.#logging = logging
      if (!logging) this.#undoLog.length = 0
    }
  }

  #grantView(tx: TransactionOf<'grant_view'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    const from = instant(tx.from)
    const until = instant(tx.until)
    // Written so that NaN (no real instant) fails too.
    if (!(from < until && until - from <= viewRangeMsMax)) return codes.view_range_invalid
    if (this.#views.has(tx.view)) return codes.view_exists
    for (const id of tx.accounts) {
      const account = this.#accounts.get(id)
      if (account === undefined) return codes.view_account_not_found
      if (account.owner !== signer.id) return codes.signer_not_view_account_owner
    }
    for (const id of tx.accounts) {
      if ((this.#viewsByAccount.get(id)?.length ?? 0) >= viewsPerAccountMax) return codes.view_limit_reached
    }
    const grantee = tx.grantee === 'everyone' ? null : tx.grantee
    if (grantee === signer.id) return codes.view_grantee_is_grantor
    if (grantee !== null && !this.#persons.has(grantee)) return codes.view_grantee_not_found

    const view: ViewRecord = {
      id: tx.view,
      grantor: signer.id,
      grantee,
      accounts: tx.accounts,
      from,
      until,
      revoked: false,
      createdLeaf: context.leaf,
      revokedLeaf: null,
    }
    this.#insert(this.#views, view.id, view)
    for (const account of view.accounts) this.#index(this.#viewsByAccount, account, view)
    this.#changedViews.add(view)
    return codes.ok
  }

  #revokeView(tx: TransactionOf<'revoke_view'>, context: ApplyContext, signer: PersonRecord): ResultCode {
    const view = this.#views.get(tx.view)
    if (view === undefined) return codes.view_not_found
    if (view.grantor !== signer.id && !isOperator(signer)) return codes.signer_not_view_grantor
    if (view.revoked) return codes.view_already_revoked

    if (this.#logging)
      this.#undoLog.push({ kind: 'view', record: view, revoked: view.revoked, revokedLeaf: view.revokedLeaf })
    this.#changedViews.add(view)
    view.revoked = true
    view.revokedLeaf = context.leaf
    // Only active views are indexed, so that granting and revoking again and again costs nothing later.
    for (const account of view.accounts) {
      const list = this.#viewsByAccount.get(account)!
      const position = list.indexOf(view)
      assert(position >= 0, 'an active view is indexed under each of its accounts')
      list.splice(position, 1)
      if (this.#logging) this.#undoLog.push({ kind: 'unindex', list, position, record: view })
    }
    return codes.ok
  }

  /** Voids or expires: the whole pending amount goes back. */
  #release(
    transfer: TransferRecord,
    debit: AccountRecord,
    credit: AccountRecord,
    state: 'voided' | 'expired',
    transactionId: string,
    context: ApplyContext,
  ): void {
    this.#saveTransfer(transfer)
    this.#saveAccount(debit)
    this.#saveAccount(credit)
    transfer.state = state
    debit.debitsPending -= transfer.amount
    credit.creditsPending -= transfer.amount
    const phase = state === 'voided' ? 'void' : 'expire'
    this.#entry(debit, 'debit', phase, transactionId, transfer.id, transfer.amount, context)
    this.#entry(credit, 'credit', phase, transactionId, transfer.id, transfer.amount, context)
    assertAccount(debit)
    assertAccount(credit)
  }

  #entry(
    account: AccountRecord,
    kind: EntryRecord['kind'],
    phase: EntryRecord['phase'],
    transactionId: string,
    transferId: string,
    amount: bigint,
    context: ApplyContext,
  ): void {
    this.#entries.push({
      account: account.id,
      leaf: context.leaf,
      transactionId,
      transferId,
      kind,
      phase,
      amount,
      time: context.time,
    })
  }

  #insertPerson(person: PersonRecord): void {
    this.#insert(this.#persons, person.id, person)
    this.#changedPersons.add(person)
  }

  #insertKey(key: KeyRecord): void {
    this.#insert(this.#keys, key.keyId, key)
    this.#index(this.#keysByPerson, key.personId, key)
    this.#changedKeys.add(key)
  }

  #index<T>(index: Map<string, T[]>, key: string, record: T): void {
    const list = appendTo(index, key, record)
    if (this.#logging) this.#undoLog.push({ kind: 'index', list: list as unknown[] })
  }

  #insert<T>(map: Map<string, T>, id: string, record: T): void {
    // Transaction ids are unique (the pool refuses a second one), so no id is ever inserted twice.
    assert(!map.has(id), 'a record is inserted once')
    map.set(id, record)
    if (this.#logging) this.#undoLog.push({ kind: 'insert', map: map as Map<string, unknown>, id })
  }

  #savePerson(person: PersonRecord): void {
    if (this.#logging)
      this.#undoLog.push({ kind: 'person', record: person, roles: person.roles, kyc: person.kyc })
    this.#changedPersons.add(person)
  }

  #saveKey(key: KeyRecord): void {
    if (this.#logging)
      this.#undoLog.push({ kind: 'key', record: key, revoked: key.revoked, revokedLeaf: key.revokedLeaf })
    this.#changedKeys.add(key)
  }

  #saveAccount(account: AccountRecord): void {
    if (this.#logging) {
      this.#undoLog.push({
        kind: 'account',
        record: account,
        debitsPending: account.debitsPending,
        debitsPosted: account.debitsPosted,
        creditsPending: account.creditsPending,
        creditsPosted: account.creditsPosted,
        closed: account.closed,
      })
    }
    this.#changedAccounts.add(account)
  }

  #saveTransfer(transfer: TransferRecord): void {
    if (this.#logging) {
      this.#undoLog.push({
        kind: 'transfer',
        record: transfer,
        state: transfer.state,
        postedAmount: transfer.postedAmount,
      })
    }
    this.#changedTransfers.add(transfer)
  }

  #mark(): Mark {
    return {
      undo: this.#undoLog.length,
      persons: this.#changedPersons.length,
      keys: this.#changedKeys.length,
      assets: this.#changedAssets.length,
      accounts: this.#changedAccounts.length,
      transfers: this.#changedTransfers.length,
      views: this.#changedViews.length,
      entries: this.#entries.length,
    }
  }

  /** Restores the state and the change lists as they were at `mark`. */
  #rollback(mark: Mark): void {
    const log = this.#undoLog
    while (log.length > mark.undo) {
      const undo = log.pop()!
      switch (undo.kind) {
        case 'insert':
          undo.map.delete(undo.id)
          break
        case 'index':
          undo.list.pop()
          break
        case 'unindex':
          undo.list.splice(undo.position, 0, undo.record)
          break
        case 'account':
          undo.record.debitsPending = undo.debitsPending
          undo.record.debitsPosted = undo.debitsPosted
          undo.record.creditsPending = undo.creditsPending
          undo.record.creditsPosted = undo.creditsPosted
          undo.record.closed = undo.closed
          break
        case 'transfer':
          undo.record.state = undo.state
          undo.record.postedAmount = undo.postedAmount
          break
        case 'person':
          undo.record.roles = undo.roles
          undo.record.kyc = undo.kyc
          break
        case 'key':
        case 'view':
          undo.record.revoked = undo.revoked
          undo.record.revokedLeaf = undo.revokedLeaf
          break
      }
    }
    this.#changedPersons.truncate(mark.persons)
    this.#changedKeys.truncate(mark.keys)
    this.#changedAssets.truncate(mark.assets)
    this.#changedAccounts.truncate(mark.accounts)
    this.#changedTransfers.truncate(mark.transfers)
    this.#changedViews.truncate(mark.views)
    this.#entries.length = mark.entries
  }
}

/** Whether a two-phase transfer may still be posted or voided at `time`. */
function resolvable(transfer: TransferRecord, time: number): ResultCode {
  switch (transfer.state) {
    case 'posted':
      return codes.pending_transfer_already_posted
    case 'voided':
      return codes.pending_transfer_already_voided
    case 'expired':
      return codes.pending_transfer_already_expired
    case 'pending':
      return expiresAt(transfer) <= time ? codes.pending_transfer_expired : codes.ok
  }
}

/** The invariants of one account, cheap enough to check after every change of it. */
function assertAccount(account: AccountRecord): void {
  const debits = account.debitsPending + account.debitsPosted
  const credits = account.creditsPending + account.creditsPosted
  if (account.debitsPending < 0n || account.creditsPending < 0n)
    brokenAccount(account, 'a pending balance is below zero')
  if (account.debitsPosted < 0n || account.creditsPosted < 0n)
    brokenAccount(account, 'a posted balance is below zero')
  if (debits > amountMax || credits > amountMax) brokenAccount(account, 'a balance passed 128 bits')
  if (debits > account.creditsPosted && account.flags.includes('debits_must_not_exceed_credits')) {
    brokenAccount(account, 'debits exceed credits')
  }
  if (credits > account.debitsPosted && account.flags.includes('credits_must_not_exceed_debits')) {
    brokenAccount(account, 'credits exceed debits')
  }
  if (account.issuanceLimit !== null && debits > account.creditsPosted + account.issuanceLimit) {
    brokenAccount(account, 'debits exceed credits by more than the issuance limit')
  }
}

/** Builds the message only on failure, so that the hot path allocates no strings. */
function brokenAccount(account: AccountRecord, what: string): never {
  assert(false, `account ${account.id}: ${what}`)
}
