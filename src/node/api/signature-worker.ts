import { parentPort } from 'node:worker_threads'
import sodium from 'sodium-native'
import { serveWorkerJobs } from '../../threads/worker-jobs.js'

/** Verifies Ed25519 signatures with libsodium, off the event loop. */
export interface VerifyJob {
  readonly messages: readonly Uint8Array[]
  readonly signatures: readonly Uint8Array[]
  readonly publicKeys: readonly Uint8Array[]
}

serveWorkerJobs<VerifyJob, Uint8Array>(parentPort!, (job) => {
  const results = new Uint8Array(job.messages.length)
  for (let i = 0; i < results.length; i++) {
    const signature = job.signatures[i]!
    const publicKey = job.publicKeys[i]!
    results[i] =
      signature.length === 64 &&
      publicKey.length === 32 &&
      sodium.crypto_sign_verify_detached(
        Buffer.from(signature.buffer, signature.byteOffset, 64),
        Buffer.from(job.messages[i]!),
        Buffer.from(publicKey.buffer, publicKey.byteOffset, 32),
      )
        ? 1
        : 0
  }
  return { result: results, transfer: [results.buffer] }
})
