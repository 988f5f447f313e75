import { parentPort } from 'node:worker_threads'
import { serveWorkerJobs } from '../threads/worker-jobs.js'
import { type HashedBlock, hashRawBlock } from './block-hashing.js'

/** Hashes downloaded blocks off the verifier's thread (block-hashing.ts); their bytes go back. */
serveWorkerJobs<Uint8Array, HashedBlock>(parentPort!, (bytes) => {
  const hashed = hashRawBlock(bytes)
  return {
    result: hashed,
    transfer: [hashed.bytes.buffer as ArrayBuffer, hashed.leafHashes.buffer as ArrayBuffer],
  }
})
