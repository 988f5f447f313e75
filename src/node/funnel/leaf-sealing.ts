import { Worker } from 'node:worker_threads'
import { fromBase64Url, utf8 } from '../../protocol/encoding.js'
import {
  contentKeySize,
  type EncryptionRecipient,
  type EnvelopePrimitives,
  encryptionRecipient,
  Opener,
  Sealer,
  sealRandomSize,
} from '../../protocol/envelope.js'
import { assert, VmError } from '../../protocol/errors.js'
import { encodeSealedLeafText } from '../../protocol/leaf.js'
import { leafHash } from '../../protocol/merkle.js'
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

/** Leaves sent to the sealing thread at a time: it seals a block's first leaves while the funnel applies the rest. */
export const sealChunkLeaves = 128

/** One leaf to seal: what the leaf shows in the clear, the signed transaction, and its readers. */
export interface SealItem {
  readonly id: string
  readonly type: TransactionType
  readonly signedText: string
  readonly recipients: readonly EncryptionRecipient[]
}

/**
 * Some of a block's leaves, by column: a thread copies a few arrays much faster than an object per leaf
 * (0.3 against 5 µs a leaf).
 */
export interface SealJob {
  readonly time: string
  readonly ids: readonly string[]
  readonly types: readonly TransactionType[]
  readonly signedTexts: readonly string[]
  /** Each leaf's content key then IV (drawn by the funnel, which discloses the keys to views). */
  readonly random: Uint8Array
  /** The job's distinct recipients: their key ids, and their public keys (32 bytes each, in that order). */
  readonly recipientKids: readonly string[]
  readonly recipientKeys: Uint8Array
  /** Leaf i's recipients are readers[readerEnds[i - 1] .. readerEnds[i]], indexes of the above. */
  readonly readers: Uint32Array
  readonly readerEnds: Uint32Array
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
  readonly #primitives: EnvelopePrimitives
  readonly #thread: SealingThread

  constructor(identity: NodeIdentity, auditorKeys: readonly Uint8Array[], primitives: EnvelopePrimitives) {
    this.#primitives = primitives
    this.#sealer = new Sealer(identity.encryption, { primitives, kekCacheMax: sealerKeysCachedMax })
    this.#archive = new Opener(identity.encryption.secretKey, { primitives })
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

  /** A block to seal: its leaves go to the sealing thread as they are added. */
  sealBlock(time: string): BlockSeal {
    return new BlockSeal(time, this.#thread, this.#primitives)
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
 * A block's leaves on their way to the sealing thread, a chunk at a time, so that sealing overlaps the
 * funnel's own work on the block. Each leaf's content key is drawn here: the funnel discloses it to views.
 */
export class BlockSeal {
  readonly #time: string
  readonly #thread: SealingThread
  readonly #primitives: EnvelopePrimitives
  readonly #sent: Promise<SealOutcome>[] = []
  /** The chunk being filled; made by the first leaf that needs it. */
  #chunk: SealChunk | null = null
  #added = 0
  #ended = false

  constructor(time: string, thread: SealingThread, primitives: EnvelopePrimitives) {
    this.#time = time
    this.#thread = thread
    this.#primitives = primitives
  }

  /** Adds a leaf; returns the content key it will be sealed with. */
  add(item: SealItem): Uint8Array {
    assert(!this.#ended, 'no leaf is added to a block after its end')
    this.#chunk ??= new SealChunk(this.#primitives)
    const cek = this.#chunk.add(item)
    this.#added++
    if (this.#chunk.size === sealChunkLeaves) {
      this.#send(this.#chunk)
      this.#chunk = null
    }
    return cek
  }

  /** The block has all its leaves: the last chunk goes to the thread too. */
  end(): void {
    if (this.#chunk !== null) this.#send(this.#chunk)
    this.#chunk = null
    this.#ended = true
  }

  /** Leaves added so far. */
  get size(): number {
    return this.#added
  }

  /**
   * The texts and hashes of the leaves added, a chunk at a time in their order (after end): the funnel
   * writes a chunk while the thread seals the next.
   */
  chunks(): readonly Promise<SealOutcome>[] {
    assert(this.#ended, 'a block is sealed after its end')
    return this.#sent
  }

  #send(chunk: SealChunk): void {
    const sent = this.#thread.seal(chunk.job(this.#time))
    // Awaited through chunks(); a block abandoned before it must not leave an unhandled failure behind.
    sent.catch(() => {})
    this.#sent.push(sent)
  }
}

/** Seals a chunk: AES-GCM, the key wraps (those under one KEK together), each leaf's text and its hash. */
export function sealJob(sealer: Sealer, job: SealJob): SealOutcome {
  const leaves = sealJobLeaves(job)
  const envelopes = sealer.sealMany(
    leaves.map(({ signedText, recipients }, i) => ({
      plaintext: utf8(signedText),
      recipients,
      random: job.random.subarray(sealRandomSize * i, sealRandomSize * (i + 1)),
    })),
  )
  const hashes = new Uint8Array(32 * leaves.length)
  const texts = envelopes.map(({ jwe }, i) => {
    const text = encodeSealedLeafText(job.ids[i]!, job.types[i]!, job.time, jwe)
    hashes.set(leafHash(utf8(text)), 32 * i)
    return text
  })
  return { texts, hashes }
}

/** The columns of one SealJob, filled leaf by leaf. */
class SealChunk {
  readonly #ids: string[] = []
  readonly #types: TransactionType[] = []
  readonly #signedTexts: string[] = []
  readonly #random: Uint8Array
  readonly #recipients = new Map<EncryptionRecipient, number>()
  readonly #readers: number[] = []
  readonly #readerEnds: number[] = []

  constructor(primitives: EnvelopePrimitives) {
    // One draw for the whole chunk: each draw is a copy from the random pool, or a system call.
    this.#random = primitives.randomBytes(sealRandomSize * sealChunkLeaves)
  }

  get size(): number {
    return this.#ids.length
  }

  add(item: SealItem): Uint8Array {
    assert(this.size < sealChunkLeaves, 'a chunk is sent when it is full')
    const offset = sealRandomSize * this.size
    this.#ids.push(item.id)
    this.#types.push(item.type)
    this.#signedTexts.push(item.signedText)
    for (const recipient of item.recipients) {
      let index = this.#recipients.get(recipient)
      if (index === undefined) {
        index = this.#recipients.size
        this.#recipients.set(recipient, index)
      }
      this.#readers.push(index)
    }
    this.#readerEnds.push(this.#readers.length)
    return this.#random.subarray(offset, offset + contentKeySize)
  }

  job(time: string): SealJob {
    const recipientKeys = new Uint8Array(32 * this.#recipients.size)
    let offset = 0
    for (const recipient of this.#recipients.keys()) {
      recipientKeys.set(recipient.publicKey, offset)
      offset += 32
    }
    return {
      time,
      ids: this.#ids,
      types: this.#types,
      signedTexts: this.#signedTexts,
      random: this.#random.subarray(0, sealRandomSize * this.size),
      recipientKids: [...this.#recipients.keys()].map((recipient) => recipient.kid),
      recipientKeys,
      readers: Uint32Array.from(this.#readers),
      readerEnds: Uint32Array.from(this.#readerEnds),
    }
  }
}

/** The leaves of a job, with the recipients each is sealed for: what the sealing thread reads of it. */
function sealJobLeaves(job: SealJob): { signedText: string; recipients: EncryptionRecipient[] }[] {
  const table = job.recipientKids.map((kid, i) => ({
    kid,
    publicKey: job.recipientKeys.subarray(32 * i, 32 * (i + 1)),
  }))
  let start = 0
  return job.signedTexts.map((signedText, i) => {
    const end = job.readerEnds[i]!
    const recipients = Array.from(job.readers.subarray(start, end), (index) => table[index]!)
    start = end
    return { signedText, recipients }
  })
}

/**
 * The thread that seals leaves. A block's chunks queue there in order; the funnel awaits them all before
 * its commit. A thread that fails or dies fails its jobs (the funnel reloads and retries the block) and is
 * replaced.
 */
class SealingThread {
  readonly #jobs: WorkerJobs<SealJob, SealOutcome>

  constructor(identity: NodeIdentity) {
    this.#jobs = new WorkerJobs(
      'sealing thread',
      () => new Worker(new URL('./sealing-worker.js', import.meta.url), { workerData: identity.encryption }),
    )
  }

  async seal(job: SealJob): Promise<SealOutcome> {
    const outcome = await this.#jobs.run(job).catch((error: Error) => {
      // Whatever the thread met, for the funnel a block it could not seal is its own failure.
      throw new VmError('internal', `sealing failed: ${error.message}`, { status: 500, cause: error })
    })
    assert(outcome.texts.length === job.ids.length, 'the sealing thread seals every leaf it is given')
    return outcome
  }

  async close(): Promise<void> {
    await this.#jobs.close()
  }
}
