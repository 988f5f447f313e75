import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { VmError } from '../../protocol/errors.js'
import type { BatchVerifier, SignatureCheck } from '../../protocol/keys.js'
import { WorkerJobs } from '../../threads/worker-jobs.js'
import type { VerifyJob } from './signature-worker.js'

/** Signatures verified per job; big batches are split so every worker gets a share. */
export const signaturesPerJobMax = 256
/** Jobs waiting for a worker; past it the api pushes back with 503. */
export const verifyJobsQueuedMax = 4_096

/** A pool of worker threads verifying Ed25519 signatures with libsodium. A worker that dies is replaced. */
export class SignatureVerifier implements BatchVerifier {
  readonly #jobs: WorkerJobs<VerifyJob, Uint8Array>

  constructor(workerCount = Math.max(1, availableParallelism())) {
    this.#jobs = new WorkerJobs(
      'signature worker',
      () => new Worker(new URL('./signature-worker.js', import.meta.url)),
      workerCount,
    )
  }

  /** Returns one boolean per check, in order. */
  async verify(checks: readonly SignatureCheck[]): Promise<boolean[]> {
    if (this.#jobs.pending + Math.ceil(checks.length / signaturesPerJobMax) > verifyJobsQueuedMax) {
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
    return this.#jobs.run({
      messages: checks.map((c) => c.message),
      signatures: checks.map((c) => c.signature),
      publicKeys: checks.map((c) => c.publicKey),
    })
  }

  async close(): Promise<void> {
    await this.#jobs.close()
  }

  /** For tests: ends one worker as a crash would. */
  async crashOneWorker(): Promise<void> {
    await this.#jobs.crashOne()
  }
}
