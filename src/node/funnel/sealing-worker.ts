import { parentPort, workerData } from 'node:worker_threads'
import { utf8 } from '../../protocol/encoding.js'
import { Sealer } from '../../protocol/envelope.js'
import type { SigningKeyPair } from '../../protocol/keys.js'
import { encodeSealedLeafText } from '../../protocol/leaf.js'
import { leafHash } from '../../protocol/merkle.js'
import { serveWorkerJobs } from '../../threads/worker-jobs.js'
import { nodeAes } from '../crypto/node-aes.js'
import { type SealJob, type SealOutcome, sealerKeysCachedMax } from './leaf-sealing.js'

/**
 * Seals a block's leaves off the funnel's thread: AES-GCM, the key wraps, the leaf's text and its hash.
 * The funnel writes the block's ledger effects meanwhile.
 */
const sealer = new Sealer(workerData as SigningKeyPair, { aes: nodeAes, kekCacheMax: sealerKeysCachedMax })
serveWorkerJobs<SealJob, SealOutcome>(parentPort!, (job) => {
  const hashes = new Uint8Array(32 * job.leaves.length)
  const texts = job.leaves.map((leaf, i) => {
    const { jwe } = sealer.seal(utf8(leaf.signedText), leaf.recipients, leaf.random)
    const text = encodeSealedLeafText(leaf.id, leaf.type, job.time, jwe)
    hashes.set(leafHash(utf8(text)), 32 * i)
    return text
  })
  return { result: { texts, hashes }, transfer: [hashes.buffer] }
})
