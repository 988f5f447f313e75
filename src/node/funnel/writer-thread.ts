import { parentPort, workerData } from 'node:worker_threads'
import { nodePrimitives } from '../crypto/node-primitives.js'
import type { NodeIdentity } from '../identity.js'
import { createLogger } from '../logger.js'
import { type PoolRow, writeSubmissions } from '../pool/pool.js'
import { openDatabase } from '../storage/database.js'
import { Funnel } from './funnel.js'
import { LeafSealing } from './leaf-sealing.js'
import { FunnelLease } from './lease.js'

/**
 * The writer thread owns the node's one write connection: it writes pool submissions and runs the funnel
 * (unless the process is an api replica).
 * SQLite's synchronous commits (and their syncs to disk) then never stall the api's event loop, and the
 * two halves of the node use both cores.
 */
export interface WriterInit {
  readonly databaseUrl: string
  readonly databaseWaitMs: number
  readonly identity: NodeIdentity
  readonly logLevel: string
  readonly leafEncryption: boolean
  readonly auditorKeys: readonly Uint8Array[]
  /** Whether this process runs a funnel (roles all and funnel) or only writes the pool (role api). */
  readonly sequencer: boolean
}

export type WriterRequest =
  | { readonly type: 'write'; readonly id: number; readonly submissions: readonly (readonly PoolRow[])[] }
  | { readonly type: 'stop' }

const port = parentPort!
const { databaseUrl, databaseWaitMs, identity, logLevel, leafEncryption, auditorKeys, sequencer } =
  workerData as WriterInit
const log = createLogger(logLevel).child({ component: 'funnel' })
const database = await openDatabase(databaseUrl, { waitMs: databaseWaitMs })
const funnel = sequencer
  ? new Funnel({
      db: database.db,
      identity,
      log,
      report: (event) => port.postMessage({ type: 'funnel', event }),
      sealing: leafEncryption ? new LeafSealing(identity, auditorKeys, nodePrimitives) : null,
      lease: new FunnelLease(database.db),
    })
  : null
await funnel?.load()
funnel?.start()

/** Writes under way: a stop waits for them, so that none is cut off by the closing connection. */
const writing = new Set<Promise<void>>()

async function write(request: Extract<WriterRequest, { type: 'write' }>): Promise<void> {
  try {
    const results = await writeSubmissions(database.db, request.submissions)
    port.postMessage({ type: 'written', id: request.id, results })
    if (results.some((result) => 'inserted' in result && result.inserted > 0)) funnel?.wake()
  } catch (error) {
    log.error({ err: error }, 'pool write failed')
    port.postMessage({ type: 'written', id: request.id, error: (error as Error).message })
  }
}

async function stop(): Promise<void> {
  try {
    await Promise.all(writing)
    await funnel?.stop()
    await database.close()
  } catch (error) {
    log.error({ err: error }, 'the writer thread did not stop cleanly')
  } finally {
    port.postMessage({ type: 'stopped' })
  }
}

port.on('message', (request: WriterRequest) => {
  if (request.type === 'stop') {
    void stop()
    return
  }
  const done = write(request)
  writing.add(done)
  void done.finally(() => writing.delete(done))
})
port.postMessage({ type: 'ready' })
