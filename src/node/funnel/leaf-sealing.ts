import { Worker } from 'node:worker_threads'
import { fromBase64Url } from '../../protocol/encoding.js'
import {
  type Aes,
  contentKeySize,
  type EncryptionRecipient,
  encryptionRecipient,
  Opener,
  Sealer,
  sealRandomSize,
} from '../../protocol/envelope.js'
import { assert, VmError } from '../../protocol/errors.js'
import type { Transaction, TransactionType } from '../../protocol/transaction.js'
import { WorkerJobs } from '../../threads/worker-jobs.js'
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

/** One leaf to seal: what the leaf shows in the clear, the signed transaction, and its readers. */
export interface SealItem {
  readonly id: string
  readonly type: TransactionType
  readonly signedText: string
  /** The leaf's content key, then its IV (drawn by the funnel, which discloses the key to views). */
  readonly random: Uint8Array
  readonly recipients: readonly EncryptionRecipient[]
}

/** A block's leaves, sealed by the sealing thread in one message. */
export interface SealJob {
  readonly time: string
  readonly leaves: readonly SealItem[]
}

/** The leaves' texts and their hashes (32 bytes each, in order). */
export interface SealOutcome {
  readonly texts: string[]
  readonly hashes: Uint8Array
}

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
  readonly #aes: Aes
  readonly #thread: SealingThread

  constructor(identity: NodeIdentity, auditorKeys: readonly Uint8Array[], aes: Aes) {
    this.#aes = aes
    this.#sealer = new Sealer(identity.encryption, { aes, kekCacheMax: sealerKeysCachedMax })
    this.#archive = new Opener(identity.encryption.secretKey, { aes })
    this.#thread = new SealingThread(identity)
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

  /** A fresh content key and IV for a leaf: `random` of its SealItem; the key is the first contentKeySize bytes. */
  contentRandom(): { random: Uint8Array; cek: Uint8Array } {
    const random = this.#aes.randomBytes(sealRandomSize)
    return { random, cek: random.subarray(0, contentKeySize) }
  }

  /** Seals a block's leaves on the sealing thread: the caller goes on with other work meanwhile. */
  sealLeaves(time: string, leaves: readonly SealItem[]): Promise<SealOutcome> {
    return this.#thread.seal(time, leaves)
  }

  async close(): Promise<void> {
    await this.#thread.close()
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

/**
 * The thread that seals leaves. One block is sealed at a time (the funnel awaits each before its
 * commit), so at most one job is in flight. A thread that fails or dies fails its job (the funnel
 * reloads and retries the block) and is replaced.
 */
class SealingThread {
  readonly #jobs: WorkerJobs<SealJob, SealOutcome>

  constructor(identity: NodeIdentity) {
    this.#jobs = new WorkerJobs(
      'sealing thread',
      () => new Worker(new URL('./sealing-worker.js', import.meta.url), { workerData: identity.encryption }),
    )
  }

  async seal(time: string, leaves: readonly SealItem[]): Promise<SealOutcome> {
    const outcome = await this.#jobs.run({ time, leaves }).catch((error: Error) => {
      // Whatever the thread met, for the funnel a block it could not seal is its own failure.
      throw new VmError('internal', `sealing failed: ${error.message}`, { status: 500, cause: error })
    })
    assert(outcome.texts.length === leaves.length, 'the sealing thread seals every leaf it is given')
    return outcome
  }

  async close(): Promise<void> {
    await this.#jobs.close()
  }
}
