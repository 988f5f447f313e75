import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { VmError } from '../../protocol/errors.js'
import type { BatchVerifier, SignatureCheck } from '../../protocol/keys.js'
import type { VerifyJob } from './signature-worker.js'

/** Signatures verified per job; big batches are split so every worker gets a share. */
export const signaturesPerJobMax = 256
/** Jobs waiting for a worker; past it the api pushes back with 503. */
export const verifyJobsQueuedMax = 4_096

interface Waiter {
  resolve(results: Uint8Array): void
  reject(error: unknown): void
}

interface Slot {
  worker: Worker
  readonly jobs: Map<number, Waiter>
}

/** A pool of worker threads verifying Ed25519 signatures with libsodium. A worker that dies is replaced. */
export class SignatureVerifier implements BatchVerifier {
  readonly #slots: Slot[] = []
  #queued = 0
  #nextId = 1
  #closed = false

  constructor(workerCount = Math.max(1, availableParallelism())) {
    for (let i = 0; i < workerCount; i++) {
      const slot: Slot = { worker: undefined as unknown as Worker, jobs: new Map() }
      this.#spawn(slot)
      this.#slots.push(slot)
    }
  }

  #spawn(slot: Slot): void {
    const worker = new Worker(new URL('./signature-worker.js', import.meta.url))
    slot.worker = worker
    worker.unref()
    worker.on('message', (message: { id: number; results: Uint8Array }) => {
      const waiter = slot.jobs.get(message.id)
      slot.jobs.delete(message.id)
      this.#queued--
      // An idle pool must not keep the process alive; a busy one must.
      if (slot.jobs.size === 0) worker.unref()
      waiter?.resolve(message.results)
    })
    const fail = (error: unknown) => {
      if (slot.worker !== worker) return
      for (const waiter of slot.jobs.values()) waiter.reject(error)
      this.#queued -= slot.jobs.size
      slot.jobs.clear()
      if (!this.#closed) this.#spawn(slot)
    }
    worker.on('error', fail)
    worker.on('exit', (code) =>
      fail(new VmError('internal', `signature worker exited with ${code}`, { status: 500 })),
    )
  }

  /** Returns one boolean per check, in order. */
  async verify(checks: readonly SignatureCheck[]): Promise<boolean[]> {
    if (this.#queued + Math.ceil(checks.length / signaturesPerJobMax) > verifyJobsQueuedMax) {
      throw new VmError('overloaded', 'signature verification is saturated; retry later', {
        status: 503,
        detail: { retryAfterSeconds: 1 },
      })
    }
    const jobs: Promise<Uint8Array>[] = []
    for (let start = 0; start < checks.length; start += signaturesPerJobMax) {
      jobs.push(this.#run(checks.slice(start, start + signaturesPerJobMax)))
    }
    const out: boolean[] = []
    for (const results of await Promise.all(jobs)) for (const result of results) out.push(result === 1)
    return out
  }

  #run(checks: readonly SignatureCheck[]): Promise<Uint8Array> {
    const slot = this.#slots.reduce((least, slot) => (slot.jobs.size < least.jobs.size ? slot : least))
    const id = this.#nextId++
    const job: VerifyJob = {
      id,
      messages: checks.map((c) => c.message),
      signatures: checks.map((c) => c.signature),
      publicKeys: checks.map((c) => c.publicKey),
    }
    return new Promise((resolve, reject) => {
      slot.jobs.set(id, { resolve, reject })
      this.#queued++
      slot.worker.ref()
      slot.worker.postMessage(job)
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    await Promise.all(this.#slots.map((slot) => slot.worker.terminate()))
  }

  /** For tests: ends one worker as a crash would. */
  async crashOneWorker(): Promise<void> {
    await this.#slots[0]!.worker.terminate()
  }
}
