import type { Command } from 'commander'
import { audit } from '../node/audit.js'
import { loadConfig, type NodeConfig, type SettingName, settings } from '../node/config.js'
import { seedDemo } from '../node/demo.js'
import { loadMasterKey, loadOrCreateIdentity } from '../node/identity.js'
import { createLogger } from '../node/logger.js'
import { startNode } from '../node/node.js'
import { openDatabase, redactUrl } from '../node/storage/database.js'
import { fromBase64Url } from '../protocol/encoding.js'
import { CliExit, exitCodes, print } from './output.js'

function withSettings(command: Command, names: readonly SettingName[]): Command {
  for (const name of names) {
    const setting = settings[name]
    // Secrets have no flag: a command line is visible to every user of the machine.
    if (setting.flag === null) continue
    command.option(
      `--${setting.flag} <value>`,
      `${setting.help} (env ${setting.env}, default ${setting.default || 'see help'})`,
    )
  }
  return command
}

function configFrom(options: Record<string, string | undefined>): NodeConfig {
  const flags: Partial<Record<SettingName, string>> = {}
  for (const name of Object.keys(settings) as SettingName[]) {
    const value = options[name]
    if (value !== undefined) flags[name] = value
  }
  return loadConfig(flags)
}

const serverSettings: SettingName[] = [
  'dataDir',
  'host',
  'port',
  'browserPort',
  'databaseUrl',
  'masterKey',
  'logLevel',
]

async function runNode(options: Record<string, string | undefined>, seed: boolean): Promise<void> {
  const config = configFrom(options)
  const log = createLogger(config.logLevel)
  const node = await startNode(config, log)
  let demo = ''
  if (seed && node.fresh) {
    const world = await seedDemo(node.url, node.adminKeyFile, config.dataDir)
    demo = `\n  demo world:    ${config.dataDir}/demo/demo.json (asset ${world.asset})`
  }
  process.stdout.write(
    `VisibleMoney node ${node.identity.nodeId}\n  node:          ${node.url}\n  api docs:      ${node.url}/docs\n  checkpoint:    ${node.url}/v1/log/checkpoint\n  admin key:     ${node.adminKeyFile}${demo}\n`,
  )
  const shutdown = async (signal: string) => {
    log.info({ signal }, 'shutting down')
    await node.close()
    process.exit(0)
  }
  process.once('SIGINT', () => void shutdown('SIGINT'))
  process.once('SIGTERM', () => void shutdown('SIGTERM'))
}

export function registerNodeCommands(program: Command): void {
  withSettings(
    program
      .command('start')
      .description('run everything on the embedded database; seeds a demo world in a new data dir'),
    serverSettings,
  ).action((options) => runNode(options, true))

  withSettings(
    program.command('node').description('run the node (production: never seeds)'),
    serverSettings,
  ).action((options) => runNode(options, false))

  withSettings(program.command('migrate').description('apply database migrations and exit'), [
    'dataDir',
    'databaseUrl',
  ]).action(async (options) => {
    const config = configFrom(options)
    const database = await openDatabase(config.databaseUrl)
    await database.close()
    process.stdout.write(`migrated ${redactUrl(database.url)}\n`)
  })

  withSettings(
    program
      .command('audit')
      .description("rebuild the ledger from the log alone and compare every account with the node's database")
      .option('--json', 'print the report as JSON'),
    ['dataDir', 'databaseUrl', 'masterKey'],
  ).action(async (options) => {
    const config = configFrom(options)
    const database = await openDatabase(config.databaseUrl)
    try {
      const { identity } = await loadOrCreateIdentity(
        database.db,
        loadMasterKey(config.masterKey, config.dataDir, false),
      )
      const progress = process.stderr.isTTY
        ? (done: number, total: number) => process.stderr.write(`\raudit: block ${done}/${total}`)
        : undefined
      const report = await audit(database.db, fromBase64Url(identity.signingJwk.x), identity.nodeId, progress)
      if (progress !== undefined) process.stderr.write('\n')
      print(options.json === true, report, () =>
        report.ok
          ? `audit passed: ${report.blocks} blocks, ${report.leaves} leaves, ${report.accounts} accounts match the log`
          : `audit FAILED (${report.findings.length} findings):\n${report.findings.map((f) => `  ${f.where}: ${f.message}`).join('\n')}`,
      )
      if (!report.ok) throw new CliExit(exitCodes.checkFailed, 'the database does not match the log')
    } finally {
      await database.close()
    }
  })

  program
    .command('bench')
    .description('measure throughput and finality end to end (same as npm run bench)')
    .allowUnknownOption()
    .action(async () => {
      const { runBench } = await import('../bench/main.js')
      await runBench(process.argv.slice(process.argv.indexOf('bench') + 1))
    })
}
