import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { newKeyFile, openKeyFile, writeKeyFile } from '../client/key-file.js'
import { listen } from '../http/server.js'
import { noteVerifierKey } from '../protocol/checkpoint.js'
import { VmError } from '../protocol/errors.js'
import { newId, nowTimestamp, type Person, signTransaction } from '../protocol/transaction.js'
import { buildApp } from './api/app.js'
import type { ApiContext } from './api/context.js'
import { KeyDirectory } from './api/key-directory.js'
import { SignatureVerifier } from './api/signature-verifier.js'
import { ChangeTail } from './changes/change-feed.js'
import type { NodeConfig } from './config.js'
import { Writer } from './funnel/writer.js'
import { hasIdentity, loadMasterKey, loadOrCreateIdentity, type NodeIdentity } from './identity.js'
import { createMetrics } from './metrics.js'
import { Pool, poolRow } from './pool/pool.js'
import { Publisher } from './publisher.js'
import { type NodeDatabase, openDatabase } from './storage/database.js'
import { WebhookDispatcher } from './webhooks/dispatcher.js'

/** How long a fresh node waits for its genesis block before it gives up starting. */
export const genesisWaitMs = 30_000

export interface RunningNode {
  readonly url: string
  readonly identity: NodeIdentity
  readonly adminKeyFile: string
  /** True when the log holds nothing but the genesis: a new data dir or database. */
  readonly fresh: boolean
  readonly database: NodeDatabase
  /** Publishes every block, from the browser's head on, to one more block browser. */
  publishTo(browserUrl: string): void
  close(): Promise<void>
}

/** Starts a node: database, identity, pool, funnel and api, listening on host:port. */
export async function startNode(config: NodeConfig, log: Logger): Promise<RunningNode> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
  const database = await openDatabase(config.databaseUrl, {
    waitMs: config.databaseWaitMs,
    onRetry: (message, waitMs) => log.warn({ retryInMs: waitMs }, message),
  })
  const { db } = database
  log.info({ database: database.url, migrated: database.migrated }, 'database ready')
  const masterKey = loadMasterKey(config.masterKey, config.dataDir, !(await hasIdentity(db)))
  log.info(
    masterKey.source === 'environment'
      ? { masterKeySource: 'VMONEY_MASTER_KEY' }
      : {
          masterKeyFile: masterKey.file,
          note: 'private keys are encrypted under this key file; keep it apart from backups of the database',
        },
    'master key loaded',
  )
  const { identity, created } = await loadOrCreateIdentity(db, masterKey)
  if (created) log.info({ nodeId: identity.nodeId }, 'created the node signing key')

  const metrics = createMetrics()
  const publishers: Publisher[] = []
  const publishTo = (browser: string) => {
    const publisher = new Publisher({
      db,
      browser,
      nodeId: identity.nodeId,
      log: log.child({ component: 'publisher' }),
      metrics: metrics.publisher,
    })
    publishers.push(publisher)
    publisher.start()
  }
  const keys = new KeyDirectory(db)
  // Every process that serves reads tails the committed log: its streams, and its key cache when another
  // process committed a change of keys.
  const changes = new ChangeTail(db, log.child({ component: 'changes' }), () => keys.invalidate())
  // Webhooks go with the lease: the process that sequences delivers.
  const webhooks = new WebhookDispatcher({
    db,
    masterKey: masterKey.key,
    nodeId: identity.nodeId,
    log: log.child({ component: 'webhooks' }),
    attemptsMax: config.webhookAttempts,
    deliveries: metrics.webhookDeliveries,
  })
  const pool = new Pool(db, (submissions) => writer.write(submissions))
  let writer: Writer
  try {
    await pool.start()
    // Until this process's funnel takes the lease, another process may be deciding.
    pool.decidedHere(false)
    writer = await Writer.start(
      {
        // The URL as configured: the database's own is shown without its password.
        databaseUrl: config.databaseUrl,
        databaseWaitMs: config.databaseWaitMs,
        identity,
        logLevel: config.logLevel,
        leafEncryption: config.leafEncryption,
        auditorKeys: config.auditorKeys,
        sequencer: config.role !== 'api',
      },
      (event) => {
        if (event.kind === 'failure') {
          metrics.funnel.failures.inc()
          return
        }
        if (event.kind === 'lease') {
          metrics.funnel.leading.set(event.leading ? 1 : 0)
          pool.decidedHere(event.leading)
          webhooks.lead(event.leading)
          return
        }
        pool.announce(event.decisions)
        if (event.header !== null) {
          for (const publisher of publishers) publisher.wake()
          changes.wake()
          webhooks.wake()
        }
        metrics.funnel.observeBlock(event.decisions, event.leafCount, event.durationMs)
        if (event.keysChanged) keys.invalidate()
      },
      (error) => {
        // Without its writer the node can acknowledge nothing: stop, and let the supervisor restart it.
        log.fatal({ err: error }, 'the writer thread died')
        process.exit(70)
      },
    )
  } catch (error) {
    pool.stop()
    await webhooks.stop()
    await database.close()
    throw error
  }
  const verifier = new SignatureVerifier()
  const adminKeyFile = join(config.dataDir, 'admin.key.json')
  let fresh: boolean
  let app: Awaited<ReturnType<typeof buildApp>>
  let url: string
  try {
    // Fresh: nothing but (at most) the genesis was ever pooled, even if an earlier start stopped right after it.
    const pooled = await db.selectFrom('pool').select(['seq', 'id']).orderBy('seq').limit(2).execute()
    fresh = pooled.length <= 1
    if (pooled.length === 0) {
      const genesis = genesisRow(identity, adminKeyFile)
      await pool.submit([genesis])
      pooled.push({ seq: 0, id: genesis.id })
      log.info({ adminKeyFile }, 'genesis pooled; the admin key file is the first operator key')
    }
    // A node serves once its genesis is in the log: before, not even the admin key is registered.
    const [genesis] = await pool.waitForAll([pooled[0]!.id], genesisWaitMs)
    if (genesis?.status !== 'accepted')
      throw new VmError(
        'genesis_not_committed',
        `the genesis transaction was not committed within ${genesisWaitMs} ms (${genesis?.status ?? 'not pooled'})`,
      )
    const context: ApiContext = {
      db,
      pool,
      identity,
      keys,
      verifier,
      metrics,
      noteVerifierKey: noteVerifierKey(identity.origin, identity.signing.publicKey),
      changes,
    }
    if (config.role !== 'funnel') await changes.start()
    app = await buildApp(context, log.child({ component: 'api' }), config.rateLimit, config.role !== 'funnel')
    url = await listen(app, config.host, config.port, 'VMONEY_PORT or --port')
  } catch (error) {
    // A node that cannot serve stops its threads and connections, so the process can exit.
    pool.stop()
    await changes.stop()
    await webhooks.stop()
    await writer.stop()
    await verifier.close()
    await database.close()
    throw error
  }
  // Publication goes with the funnel: an api replica has no blocks of its own to push.
  if (config.role !== 'api') for (const browser of config.publishTo) publishTo(browser)
  return {
    url,
    identity,
    adminKeyFile,
    fresh,
    database,
    publishTo,
    async close() {
      await app.close()
      await Promise.all(publishers.map((publisher) => publisher.stop()))
      await changes.stop()
      await webhooks.stop()
      pool.stop()
      await writer.stop()
      await verifier.close()
      await database.close()
    },
  }
}

/** The first leaf: the node registers its key and its first operator (the admin). */
function genesisRow(identity: NodeIdentity, adminKeyFile: string) {
  const adminId = newId()
  const adminKeys = openKeyFile(newKeyFile(adminId))
  writeKeyFile(adminKeyFile, adminKeys.file, true)
  const admin: Person = {
    id: adminId,
    kind: 'legal',
    names: [{ legalPersonName: 'Node operator', legalPersonNameIdentifierType: 'LEGL' }],
  }
  const signed = signTransaction(
    {
      v: 1,
      id: newId(),
      node: identity.nodeId,
      created: nowTimestamp(),
      signer: identity.nodeId,
      type: 'genesis',
      origin: identity.origin,
      nodeKey: identity.signingJwk as never,
      admin,
      adminKey: adminKeys.deviceKey,
    },
    identity.signing.secretKey,
  )
  return poolRow(signed)
}
