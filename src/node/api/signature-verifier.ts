import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { VmError } from '../../protocol/errors.js'
import type { BatchVerifier, SignatureCheck } from '../../protocol/keys.js'
import type { VerifyJob } from './signature-worker.js'

/** Signatures verified per job; big batches are split so every worker gets a share. */
export const signaturesPerJobMax = 256
/** Jobs waiting for a worker; past it the api pushes back with 503. */
export const verifyJobsQueuedMax = 4_096

/** A pool of worker threads verifying Ed25519 signatures with libsodium. */
export class SignatureVerifier implements BatchVerifier {
  readonly #workers: { worker: Worker; busy: number }[] = []
  readonly #pending = new Map<number, { resolve(results: Uint8Array): void; reject(error: unknown): void }>()
  #nextId = 1

  constructor(workerCount = Math.max(1, availableParallelism())) {
    for (let i = 0; i < workerCount; i++) {
      const worker = new Worker(new URL('./signature-worker.js', import.meta.url))
      const slot = { worker, busy: 0 }
      worker.on('message', (message: { id: number; results: Uint8Array }) => {
        slot.busy--
        // An idle pool must not keep the process alive; a busy one must.
        if (slot.busy === 0) worker.unref()
        const waiter = this.#pending.get(message.id)
        this.#pending.delete(message.id)
        waiter?.resolve(message.results)
      })
      worker.on('error', (error) => {
        for (const waiter of this.#pending.values()) waiter.reject(error)
        this.#pending.clear()
      })
      worker.unref()
      this.#workers.push(slot)
    }
  }

  /** Returns one boolean per check, in order. */
  async verify(checks: readonly SignatureCheck[]): Promise<boolean[]> {
    if (this.#pending.size + Math.ceil(checks.length / signaturesPerJobMax) > verifyJobsQueuedMax) {
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
    const slot = this.#workers.reduce((least, slot) => (slot.busy < least.busy ? slot : least))
    const id = this.#nextId++
    const job: VerifyJob = {
      id,
      messages: checks.map((c) => c.message),
      signatures: checks.map((c) => c.signature),
      publicKeys: checks.map((c) => c.publicKey),
    }
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject })
      slot.busy++
      slot.worker.ref()
      slot.worker.postMessage(job)
    })
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((slot) => slot.worker.terminate()))
  }
}
