import type { Kysely } from 'kysely'
import type { BatchVerifier } from '../../protocol/keys.js'
import type { ChangeTail } from '../changes/change-feed.js'
import type { NodeIdentity } from '../identity.js'
import type { Metrics } from '../metrics.js'
import type { Pool } from '../pool/pool.js'
import type { Database } from '../storage/schema.js'
import type { KeyDirectory } from './key-directory.js'

/** What the stateless api needs from the node. */
export interface ApiContext {
  readonly db: Kysely<Database>
  readonly pool: Pool
  readonly identity: Pick<NodeIdentity, 'nodeId' | 'origin' | 'signingJwk' | 'encryptionJwk'>
  readonly keys: KeyDirectory
  readonly verifier: BatchVerifier
  readonly metrics: Metrics
  readonly noteVerifierKey: string
  /** The changefeed of this process. */
  readonly changes: ChangeTail
}
