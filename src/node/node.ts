import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import pino, { type Logger } from 'pino'
import { newKeyFile, openKeyFile, writeKeyFile } from '../client/key-file.js'
import { noteVerifierKey } from '../protocol/checkpoint.js'
import { newId, nowTimestamp, type Person, signTransaction } from '../protocol/transaction.js'
import { buildApp } from './api/app.js'
import type { ApiContext } from './api/context.js'
import { KeyDirectory } from './api/key-directory.js'
import { SignatureVerifier } from './api/signature-verifier.js'
import type { NodeConfig } from './config.js'
import { Funnel } from './funnel/funnel.js'
import { hasIdentity, loadMasterKey, loadOrCreateIdentity, type NodeIdentity } from './identity.js'
import { createMetrics } from './metrics.js'
import { Pool, poolRow } from './pool/pool.js'
import { type NodeDatabase, openDatabase, redactUrl } from './storage/database.js'

export interface RunningNode {
  readonly url: string
  readonly identity: NodeIdentity
  readonly adminKeyFile: string
  /** True when this start created the log (a new data dir or database). */
  readonly fresh: boolean
  readonly funnel: Funnel
  readonly database: NodeDatabase
  close(): Promise<void>
}

export function createLogger(level: string): Logger {
  return pino({
    level,
    redact: {
      paths: ['req.headers.signature', 'req.headers["signature-input"]', '*.secretKey', '*.d', 'masterKey'],
      censor: '[redacted]',
    },
  })
}

/** Starts a node: database, identity, pool, funnel and api, listening on host:port. */
export async function startNode(config: NodeConfig, log: Logger): Promise<RunningNode> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
  const database = await openDatabase(config.databaseUrl)
  const { db } = database
  log.info({ database: redactUrl(database.url) }, 'database ready')
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
  const pool = new Pool(db)
  await pool.start()
  const adminKeyFile = join(config.dataDir, 'admin.key.json')
  const fresh = (await db.selectFrom('pool').select('seq').limit(1).executeTakeFirst()) === undefined
  if (fresh) {
    await pool.submit([genesisRow(identity, adminKeyFile)])
    log.info({ adminKeyFile }, 'genesis pooled; the admin key file is the first operator key')
  }

  const funnel = new Funnel({
    db,
    pool,
    identity,
    log: log.child({ component: 'funnel' }),
    metrics: metrics.funnel,
  })
  await funnel.load()
  const keys = new KeyDirectory(db)
  funnel.onCommit((commit) => {
    if (commit.keysChanged) keys.invalidate()
  })
  funnel.start()

  const verifier = new SignatureVerifier()
  const context: ApiContext = {
    db,
    pool,
    identity,
    keys,
    verifier,
    metrics,
    noteVerifierKey: noteVerifierKey(identity.origin, identity.signing.publicKey),
  }
  const app = await buildApp(context, log.child({ component: 'api' }))
  const address = await app.listen({ host: config.host, port: config.port })
  const url = address.replace('://[::1]', '://localhost')
  return {
    url,
    identity,
    adminKeyFile,
    fresh,
    funnel,
    database,
    async close() {
      await app.close()
      await funnel.stop()
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
