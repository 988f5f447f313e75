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
  readonly id: number
  readonly time: string
  readonly leaves: readonly SealItem[]
}

/** The leaves' texts and their hashes (32 bytes each, in order), or why sealing failed. */
export type SealOutcome =
  | { readonly id: number; readonly texts: string[]; readonly hashes: Uint8Array }
  | { readonly id: number; readonly error: string }

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
  sealLeaves(time: string, leaves: readonly SealItem[]): Promise<{ texts: string[]; hashes: Uint8Array }> {
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
 * The thread that seals leaves. One block is sealed at a time (the funnel awaits
 * each before its commit), so at most one job is in flight. A thread that fails or dies fails its job
 * (the funnel reloads and retries the block) and is replaced on the next one.
 */
class SealingThread {
  readonly #encryption: NodeIdentity['encryption']
  #worker: Worker | null = null
  readonly #waiting = new Map<number, { resolve(outcome: SealOutcome): void; reject(error: unknown): void }>()
  #nextId = 1

  constructor(identity: NodeIdentity) {
    this.#encryption = identity.encryption
    // Started now, so that its start overlaps the funnel's: the first block waits for it otherwise.
    this.#spawn()
  }

  async seal(time: string, leaves: readonly SealItem[]): Promise<{ texts: string[]; hashes: Uint8Array }> {
    const worker = this.#worker ?? this.#spawn()
    const id = this.#nextId++
    const outcome = await new Promise<SealOutcome>((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject })
      worker.postMessage({ id, time, leaves } satisfies SealJob)
    })
    if ('error' in outcome) throw new VmError('internal', `sealing failed: ${outcome.error}`, { status: 500 })
    assert(outcome.texts.length === leaves.length, 'the sealing thread seals every leaf it is given')
    return outcome
  }

  #spawn(): Worker {
    const worker = new Worker(new URL('./sealing-worker.js', import.meta.url), {
      workerData: this.#encryption,
    })
    // The funnel's stop ends it; an idle one must not keep the writer thread alive on its own.
    worker.unref()
    worker.on('message', (outcome: SealOutcome) => {
      const waiter = this.#waiting.get(outcome.id)
      this.#waiting.delete(outcome.id)
      waiter?.resolve(outcome)
    })
    const fail = (error: unknown) => {
      if (this.#worker !== worker) return
      this.#worker = null
      for (const waiter of this.#waiting.values()) waiter.reject(error)
      this.#waiting.clear()
    }
    worker.on('error', fail)
    worker.on('exit', (code) =>
      fail(new VmError('internal', `the sealing thread exited with ${code}`, { status: 500 })),
    )
    this.#worker = worker
    return worker
  }

  async close(): Promise<void> {
    const worker = this.#worker
    this.#worker = null
    await worker?.terminate()
    for (const waiter of this.#waiting.values()) waiter.reject(new VmError('internal', 'sealing stopped'))
    this.#waiting.clear()
  }
}
