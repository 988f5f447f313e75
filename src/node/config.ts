import { resolve } from 'node:path'
import { fromBase64Url } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { databaseWaitMsDefault, dialectOf, redactUrl } from '../storage/connect.js'

/** Every setting, its environment variable, default and meaning: the README's table is made from this. */
export const settings = {
  dataDir: {
    env: 'VMONEY_DATA_DIR',
    flag: 'data-dir',
    default: './data',
    help: 'where the node keeps its files',
  },
  host: { env: 'VMONEY_HOST', flag: 'host', default: '127.0.0.1', help: 'address the servers listen on' },
  port: { env: 'VMONEY_PORT', flag: 'port', default: '8080', help: "the node's HTTP port" },
  browserPort: {
    env: 'VMONEY_BROWSER_PORT',
    flag: 'browser-port',
    default: '8081',
    help: "the block browser's HTTP port",
  },
  databaseUrl: {
    env: 'VMONEY_DATABASE_URL',
    flag: 'database-url',
    default: '',
    help: 'database URL; default sqlite:<data dir>/node.db',
  },
  databaseWaitMs: {
    env: 'VMONEY_DATABASE_WAIT_MS',
    flag: 'database-wait-ms',
    default: String(databaseWaitMsDefault),
    help: 'how long a database server that does not answer at start is retried (with backoff) before the process exits',
  },
  masterKey: {
    env: 'VMONEY_MASTER_KEY',
    flag: null,
    default: '',
    help: "base64 32-byte key that encrypts the node's private keys; default a key file <data dir>/master.key (mode 0600)",
  },
  browserDatabaseUrl: {
    env: 'VMONEY_BROWSER_DATABASE_URL',
    flag: 'browser-database-url',
    default: '',
    help: "the block browser's own database URL (sqlite: or postgres://); default sqlite:<data dir>/browser.db",
  },
  browserNodes: {
    env: 'VMONEY_BROWSER_NODES',
    flag: 'follow',
    default: '',
    help: 'nodes the block browser follows: comma-separated <node URL>=<base64url Ed25519 public key>; `start` follows its own node',
  },
  publishTo: {
    env: 'VMONEY_PUBLISH_TO',
    flag: 'publish-to',
    default: '',
    help: 'comma-separated block browser URLs the node publishes every block to; `start` adds its own browser',
  },
  leafEncryption: {
    env: 'VMONEY_LEAF_ENCRYPTION',
    flag: 'leaf-encryption',
    default: 'on',
    help: 'on: the body of every leaf is encrypted to its recipients; off: leaves are public (a fully public ledger)',
  },
  auditorKeys: {
    env: 'VMONEY_AUDITOR_KEYS',
    flag: 'auditor-keys',
    default: '',
    help: 'comma-separated base64url X25519 public keys of auditors, recipients of every leaf',
  },
  rateLimit: {
    env: 'VMONEY_RATE_LIMIT',
    flag: 'rate-limit',
    default: '',
    help: 'requests per client address per 10 s (then 429); default 2000 for the node, 20000 for the browser; 0 turns it off (a proxy in front limits instead)',
  },
  role: {
    env: 'VMONEY_ROLE',
    flag: 'role',
    default: 'all',
    help: 'all: api and funnel; api: a stateless api replica; funnel: the sequencer (with publication), serving only /healthz, /readyz and /metrics. Funnels of one node take turns by a lease in the database',
  },
  webhookAttempts: {
    env: 'VMONEY_WEBHOOK_ATTEMPTS',
    flag: 'webhook-attempts',
    default: '12',
    help: 'attempts of one webhook delivery (backing off from 1 s, doubling, up to 60 s between them) before it goes to the dead-letter list',
  },
  logLevel: {
    env: 'VMONEY_LOG_LEVEL',
    flag: 'log-level',
    default: 'info',
    help: 'fatal, error, warn, info, debug or trace',
  },
} as const

export type SettingName = keyof typeof settings

export interface NodeConfig {
  readonly dataDir: string
  readonly host: string
  readonly port: number
  readonly browserPort: number
  readonly databaseUrl: string
  readonly databaseWaitMs: number
  readonly masterKey: string | undefined
  readonly browserDatabaseUrl: string
  readonly browserNodes: readonly FollowedNode[]
  readonly publishTo: readonly string[]
  readonly leafEncryption: boolean
  readonly auditorKeys: readonly Uint8Array[]
  /** Undefined: each server's own default. */
  readonly rateLimit: number | undefined
  readonly role: NodeRole
  readonly webhookAttempts: number
  readonly logLevel: string
}

/** A node a block browser follows: where to pull from, and the key its blocks must be signed with. */
export interface FollowedNode {
  readonly url: string
  readonly publicKey: Uint8Array
}

/** Bounds on list settings, so that a typo cannot make the node fan out without limit. */
export const followedNodesMax = 64
export const publishTargetsMax = 16
export const auditorKeysMax = 16

const logLevels = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])

function list(text: string, name: string, max: number): string[] {
  const items = text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
  if (items.length > max) throw new VmError('config_invalid', `${name} takes at most ${max} entries`)
  return items
}

function httpUrl(name: string, text: string): string {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new VmError('config_invalid', `${name}: ${JSON.stringify(text)} is not a URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new VmError('config_invalid', `${name}: ${JSON.stringify(text)} is not an http(s) URL`)
  return text.replace(/\/+$/, '')
}

function key32(name: string, text: string): Uint8Array {
  let key: Uint8Array
  try {
    key = fromBase64Url(text)
  } catch {
    key = new Uint8Array()
  }
  if (key.length !== 32)
    throw new VmError('config_invalid', `${name}: ${JSON.stringify(text)} is not a base64url 32-byte key`)
  return key
}

function followedNodes(text: string): FollowedNode[] {
  const name = settings.browserNodes.env
  return list(text, name, followedNodesMax).map((item) => {
    const at = item.lastIndexOf('=')
    if (at < 0) throw new VmError('config_invalid', `${name}: each entry is <node URL>=<public key>`)
    return { url: httpUrl(name, item.slice(0, at)), publicKey: key32(name, item.slice(at + 1)) }
  })
}

function onOff(name: string, text: string): boolean {
  if (text !== 'on' && text !== 'off') throw new VmError('config_invalid', `${name} must be on or off`)
  return text === 'on'
}

function rateLimit(text: string): number | undefined {
  if (text === '') return undefined
  if (!/^\d{1,9}$/.test(text))
    throw new VmError(
      'config_invalid',
      `${settings.rateLimit.env} must be a whole number of requests, got ${JSON.stringify(text)}`,
    )
  return Number(text)
}

function milliseconds(name: string, text: string): number {
  if (!/^\d{1,9}$/.test(text))
    throw new VmError(
      'config_invalid',
      `${name} must be a whole number of milliseconds, got ${JSON.stringify(text)}`,
    )
  return Number(text)
}

function port(name: string, text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65_535)
    throw new VmError('config_invalid', `${name} must be a port number 0-65535, got ${JSON.stringify(text)}`)
  return Number(text)
}

/** The browser's tables are written for SQLite and PostgreSQL only. */
export function browserOnMysql(url: string): VmError {
  return new VmError(
    'database_url_unsupported',
    `the block browser keeps its log on sqlite:<file> or postgres://..., not ${JSON.stringify(redactUrl(url))}`,
    { status: 500 },
  )
}

/** Flags win over the environment, the environment over defaults. Validated once, here. */
export function loadConfig(
  flags: Partial<Record<SettingName, string | undefined>>,
  env: NodeJS.ProcessEnv = process.env,
): NodeConfig {
  const value = (name: SettingName): string =>
    flags[name] ?? env[settings[name].env] ?? settings[name].default
  const dataDir = resolve(value('dataDir'))
  const logLevel = value('logLevel')
  if (!logLevels.has(logLevel))
    throw new VmError(
      'config_invalid',
      `${settings.logLevel.env} must be one of ${[...logLevels].join(', ')}`,
    )
  const databaseUrl = value('databaseUrl') || `sqlite:${resolve(dataDir, 'node.db')}`
  const browserDatabaseUrl = value('browserDatabaseUrl') || `sqlite:${resolve(dataDir, 'browser.db')}`
  // An unknown scheme is refused here, at once, before anything starts.
  dialectOf(databaseUrl)
  if (dialectOf(browserDatabaseUrl) === 'mysql') throw browserOnMysql(browserDatabaseUrl)
  const masterKey = value('masterKey')
  return {
    dataDir,
    host: value('host'),
    port: port(settings.port.env, value('port')),
    browserPort: port(settings.browserPort.env, value('browserPort')),
    databaseUrl,
    databaseWaitMs: milliseconds(settings.databaseWaitMs.env, value('databaseWaitMs')),
    masterKey: masterKey === '' ? undefined : masterKey,
    browserDatabaseUrl,
    browserNodes: followedNodes(value('browserNodes')),
    publishTo: list(value('publishTo'), settings.publishTo.env, publishTargetsMax).map((url) =>
      httpUrl(settings.publishTo.env, url),
    ),
    leafEncryption: onOff(settings.leafEncryption.env, value('leafEncryption')),
    auditorKeys: list(value('auditorKeys'), settings.auditorKeys.env, auditorKeysMax).map((key) =>
      key32(settings.auditorKeys.env, key),
    ),
    rateLimit: rateLimit(value('rateLimit')),
    role: nodeRole(value('role')),
    webhookAttempts: webhookAttempts(value('webhookAttempts')),
    logLevel,
  }
}

/** Attempts of one webhook delivery: at most about an hour of backing off. */
export const webhookAttemptsMax = 64

function webhookAttempts(text: string): number {
  if (!/^\d{1,2}$/.test(text) || Number(text) < 1 || Number(text) > webhookAttemptsMax)
    throw new VmError(
      'config_invalid',
      `${settings.webhookAttempts.env} must be a whole number from 1 to ${webhookAttemptsMax}, got ${JSON.stringify(text)}`,
    )
  return Number(text)
}

export type NodeRole = 'all' | 'api' | 'funnel'

function nodeRole(text: string): NodeRole {
  if (text !== 'all' && text !== 'api' && text !== 'funnel')
    throw new VmError(
      'config_invalid',
      `${settings.role.env} must be all, api or funnel, got ${JSON.stringify(text)}`,
    )
  return text
}
