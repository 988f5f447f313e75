import { resolve } from 'node:path'
import { VmError } from '../protocol/errors.js'

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
  masterKey: {
    env: 'VMONEY_MASTER_KEY',
    flag: null,
    default: '',
    help: "base64 32-byte key that encrypts the node's private keys; default a key file <data dir>/master.key (mode 0600)",
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
  readonly masterKey: string | undefined
  readonly logLevel: string
}

const logLevels = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])

function port(name: string, text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65_535)
    throw new VmError('config_invalid', `${name} must be a port number 0-65535, got ${JSON.stringify(text)}`)
  return Number(text)
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
  const masterKey = value('masterKey')
  return {
    dataDir,
    host: value('host'),
    port: port(settings.port.env, value('port')),
    browserPort: port(settings.browserPort.env, value('browserPort')),
    databaseUrl,
    masterKey: masterKey === '' ? undefined : masterKey,
    logLevel,
  }
}
