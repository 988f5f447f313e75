import { parentPort, workerData } from 'node:worker_threads'
import { Sealer } from '../../protocol/envelope.js'
import type { SigningKeyPair } from '../../protocol/keys.js'
import { serveWorkerJobs } from '../../threads/worker-jobs.js'
import { nodePrimitives } from '../crypto/node-primitives.js'
import { type SealJob, type SealOutcome, sealerKeysCachedMax, sealJob } from './leaf-sealing.js'

/** Seals a block's leaves off the funnel's thread, a chunk at a time; the funnel applies and writes meanwhile. */
const sealer = new Sealer(workerData as SigningKeyPair, {
  primitives: nodePrimitives,
  kekCacheMax: sealerKeysCachedMax,
})
serveWorkerJobs<SealJob, SealOutcome>(parentPort!, (job) => {
  const outcome = sealJob(sealer, job)
  // sealJob's hashes are a buffer of their own: it moves to the funnel without a copy.
  return { result: outcome, transfer: [outcome.hashes.buffer as ArrayBuffer] }
})
