import { fromBase64Url, utf8 } from '../../protocol/encoding.js'
import {
  type Aes,
  type EncryptionRecipient,
  encryptionRecipient,
  Opener,
  Sealer,
} from '../../protocol/envelope.js'
import { assert } from '../../protocol/errors.js'
import type { Transaction } from '../../protocol/transaction.js'
import type { NodeIdentity } from '../identity.js'
import type { ViewRecord } from '../ledger/model.js'
import type { Ledger } from '../ledger/state-machine.js'

/** Whom a leaf concerns: persons directly, and accounts (whose owners and view grantees read it). */
export interface Audience {
  readonly persons: ReadonlySet<string>
  readonly accounts: ReadonlySet<string>
}

/** What a sealed leaf needs: its recipients, and the public views that must disclose its content key. */
export interface SealingPlan {
  readonly accounts: ReadonlySet<string>
  readonly recipients: readonly EncryptionRecipient[]
  readonly publicViews: readonly string[]
}

/**
 * Readers' key-encryption keys the funnel keeps (with their AES schedules, about 400 bytes each): a miss
 * costs an X25519 agreement, so the cache should hold the keys of every customer active in a while.
 */
export const sealerKeysCachedMax = 100_000
/** Persons whose recipient lists are cached; far more than a node's active customers per minute. */
export const recipientCacheMax = 100_000

/**
 * Who can read each leaf (DESIGN §3): the node's archive key, the configured auditors, the persons the
 * transaction concerns (every active device key with an encryption key), and the grantees of views that
 * cover its accounts at the leaf's time. The leaf is applied first, so the ledger already holds what the
 * transaction created (a new person's keys, a new account).
 */
export class LeafSealing {
  readonly #sealer: Sealer
  readonly #archive: Opener
  readonly #always: readonly EncryptionRecipient[]
  readonly #byPerson = new Map<string, readonly EncryptionRecipient[]>()

  constructor(identity: NodeIdentity, auditorKeys: readonly Uint8Array[], aes?: Aes) {
    const options = aes === undefined ? {} : { aes }
    this.#sealer = new Sealer(identity.encryption, { ...options, kekCacheMax: sealerKeysCachedMax })
    this.#archive = new Opener(identity.encryption.secretKey, options)
    this.#always = [
      encryptionRecipient(identity.encryption.publicKey),
      ...auditorKeys.map(encryptionRecipient),
    ]
  }

  get sealer(): Sealer {
    return this.#sealer
  }

  /** The node's own key: it opens every leaf it sealed. */
  get archive(): Opener {
    return this.#archive
  }

  /** Keys were added or revoked: recompute every person's recipients when next needed. */
  forgetKeys(): void {
    this.#byPerson.clear()
  }

  plan(ledger: Ledger, tx: Transaction, time: number): SealingPlan {
    const { persons, accounts } = audience(ledger, tx)
    const readers = new Set(persons)
    const publicViews: string[] = []
    for (const account of accounts) {
      const record = ledger.account(account)
      if (record !== undefined) readers.add(record.owner)
      for (const view of ledger.viewsCovering(account, time)) {
        if (view.grantee === null) publicViews.push(view.id)
        else readers.add(view.grantee)
      }
    }
    const recipients = [...this.#always]
    for (const person of readers) recipients.push(...this.recipientsOf(ledger, person))
    return { accounts, recipients, publicViews: [...new Set(publicViews)] }
  }

  recipientsOf(ledger: Ledger, personId: string): readonly EncryptionRecipient[] {
    let recipients = this.#byPerson.get(personId)
    if (recipients === undefined) {
      recipients = ledger
        .activeKeysOf(personId)
        .flatMap((key) =>
          key.key.encryption === undefined ? [] : [encryptionRecipient(fromBase64Url(key.key.encryption.x))],
        )
      if (this.#byPerson.size >= recipientCacheMax) this.#byPerson.clear()
      this.#byPerson.set(personId, recipients)
    }
    return recipients
  }

  seal(signedText: string, plan: SealingPlan) {
    return this.#sealer.seal(utf8(signedText), plan.recipients)
  }

  /** The grantee's recipients for a view's disclosure; empty for a public view (it discloses the keys). */
  granteeRecipients(ledger: Ledger, view: Readonly<ViewRecord>): readonly EncryptionRecipient[] {
    return view.grantee === null ? [] : this.recipientsOf(ledger, view.grantee)
  }
}

/** The persons and accounts a transaction concerns, besides its signer's own knowledge of it. */
export function audience(ledger: Ledger, tx: Transaction): Audience {
  const persons = new Set<string>()
  const accounts = new Set<string>()
  const signer = ledger.key(tx.signer)
  // The author of a transaction reads it back; the node's own key belongs to no person.
  if (signer !== undefined && tx.signer !== ledger.nodeKeyId) persons.add(signer.personId)
  const transferAccounts = (id: string) => {
    const transfer = ledger.transfer(id)
    if (transfer === undefined) return
    accounts.add(transfer.debit)
    accounts.add(transfer.credit)
  }
  switch (tx.type) {
    case 'genesis':
      persons.add(tx.admin.id)
      break
    case 'register_person':
      persons.add(tx.person.id)
      break
    case 'add_key':
    case 'revoke_key':
    case 'set_kyc':
      persons.add(tx.person)
      break
    case 'create_asset':
      persons.add(tx.issuer)
      break
    case 'open_account':
    case 'close_account':
      accounts.add(tx.account)
      break
    case 'transfer':
      accounts.add(tx.debit)
      accounts.add(tx.credit)
      break
    case 'post_pending':
    case 'void_pending':
      transferAccounts(tx.pending)
      break
    case 'expire_pending':
      for (const id of tx.pending) transferAccounts(id)
      break
    case 'grant_view':
    case 'revoke_view': {
      const view = ledger.view(tx.view)
      assert(view !== undefined, 'an accepted view transaction names a view')
      persons.add(view.grantor)
      if (view.grantee !== null) persons.add(view.grantee)
      break
    }
  }
  return { persons, accounts }
}
