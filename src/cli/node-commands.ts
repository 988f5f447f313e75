import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { type RunningBrowser, startBrowser } from '../browser/browser.js'
import { audit } from '../node/audit.js'
import { type BackupSummary, backup, restore } from '../node/backup.js'
import { type ReplaySummary, refuseUndecided, replayFromBrowser } from '../node/chain/replay.js'
import type { SettingName } from '../node/config.js'
import { seedDemo } from '../node/demo.js'
import { hasIdentity, loadMasterKey, loadOrCreateIdentity } from '../node/identity.js'
import { createLogger } from '../node/logger.js'
import { startNode } from '../node/node.js'
import { type NodeDatabase, openDatabase } from '../node/storage/database.js'
import { VmError } from '../protocol/errors.js'
import { CliExit, exitCodeOf, exitCodes, print } from './output.js'
import { configFrom, withSettings } from './settings.js'

const serverSettings: SettingName[] = [
  'dataDir',
  'host',
  'port',
  'browserPort',
  'databaseUrl',
  'databaseWaitMs',
  'browserDatabaseUrl',
  'browserNodes',
  'publishTo',
  'leafEncryption',
  'auditorKeys',
  'rateLimit',
  'role',
  'webhookAttempts',
  'masterKey',
  'logLevel',
]

/**
 * `start` runs everything on the embedded default: the node, its own block browser (which follows the
 * node and receives every block) and a demo world. `node` runs the node alone, as production does.
 */
async function runNode(options: Record<string, string | undefined>, everything: boolean): Promise<void> {
  const config = configFrom(options)
  if (everything && config.role !== 'all')
    throw new CliExit(exitCodes.usage, 'vmoney start runs everything: --role is for vmoney node')
  const log = createLogger(config.logLevel)
  const node = await startNode(config, log)
  let browser: RunningBrowser | null = null
  const lines = [
    `VisibleMoney node ${node.identity.nodeId}`,
    `  node:          ${node.url}`,
    `  api docs:      ${node.url}/docs`,
    `  checkpoint:    ${node.url}/v1/log/checkpoint`,
    `  admin key:     ${node.adminKeyFile}`,
    ...(config.role === 'all' ? [] : [`  role:          ${config.role}`]),
  ]
  try {
    if (everything) {
      const followed = { url: node.url, publicKey: node.identity.signing.publicKey }
      browser = await startBrowser({ ...config, browserNodes: [followed, ...config.browserNodes] }, log)
      node.publishTo(browser.url)
      lines.push(`  block browser: ${browser.url}`)
      if (node.fresh) {
        const world = await seedDemo(node.url, node.adminKeyFile, config.dataDir)
        lines.push(`  demo world:    ${config.dataDir}/demo/demo.json (asset ${world.asset})`)
      }
    }
  } catch (error) {
    await browser?.close()
    await node.close()
    throw error
  }
  process.stdout.write(`${lines.join('\n')}\n`)
  const shutdown = async (signal: string) => {
    log.info({ signal }, 'shutting down')
    await browser?.close()
    await node.close()
    process.exit(0)
  }
  process.once('SIGINT', () => void shutdown('SIGINT'))
  process.once('SIGTERM', () => void shutdown('SIGTERM'))
}

/** Commander's collector for a repeatable option. */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}

function browserUrls(urls: readonly string[]): string[] {
  return urls.map((url) => {
    if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol))
      throw new CliExit(exitCodes.usage, `--browser takes an http(s) URL, not ${JSON.stringify(url)}`)
    return url
  })
}

/**
 * Replays from each browser in turn into `summaries`: each holds a prefix of the one history the node
 * signed, so the node ends at the longest; a browser holding another history is refused at once. A
 * browser that cannot be reached is passed by, unless none could be. Reports each on stdout as it goes,
 * unless the caller prints them as JSON.
 */
async function replayAll(
  database: NodeDatabase,
  config: ReturnType<typeof configFrom>,
  browsers: readonly string[],
  json: boolean,
  summaries: ReplaySummary[],
): Promise<void> {
  if (!(await hasIdentity(database.db)))
    throw new CliExit(exitCodes.usage, 'this database holds no node: restore a backup into it first')
  const { identity } = await loadOrCreateIdentity(
    database.db,
    loadMasterKey(config.masterKey, config.dataDir, false),
  )
  let unreachable: unknown = null
  for (const browser of browsers) {
    const progress = process.stderr.isTTY
      ? (done: number, total: number) => process.stderr.write(`\rreplay: block ${done}/${total}`)
      : undefined
    let summary: ReplaySummary
    try {
      summary = await replayFromBrowser(database.db, identity, browser, progress)
    } catch (error) {
      if (!(error instanceof VmError && error.code === 'server_unreachable')) throw error
      process.stderr.write(`replay: ${error.message}; going on with the next browser\n`)
      unreachable = error
      continue
    }
    if (progress !== undefined && summary.blocks > 0) process.stderr.write('\n')
    summaries.push(summary)
    if (!json)
      print(false, summary, () =>
        summary.blocks === 0
          ? `${browser} holds nothing beyond the node's block ${summary.height}`
          : `replayed ${summary.blocks} blocks (${summary.leaves} leaves) from ${browser}: the node's head is block ${summary.height}`,
      )
  }
  if (summaries.length === 0) throw unreachable
}

function describeRows(summary: BackupSummary): string {
  const rows = Object.values(summary.rows).reduce((total, count) => total + count, 0)
  return `${rows} rows in ${Object.keys(summary.rows).length} tables, a log of ${summary.logSize} leaves`
}

export function registerNodeCommands(program: Command): void {
  withSettings(
    program
      .command('start')
      .description(
        'run the node and its block browser on the embedded database; seeds a demo world in a new data dir',
      ),
    serverSettings,
  ).action((options) => runNode(options, true))

  withSettings(
    program.command('node').description('run the node (production: never seeds)'),
    serverSettings,
  ).action((options) => runNode(options, false))

  withSettings(program.command('migrate').description('apply database migrations and exit'), [
    'dataDir',
    'databaseUrl',
    'databaseWaitMs',
  ]).action(async (options) => {
    const config = configFrom(options)
    const database = await openDatabase(config.databaseUrl, { waitMs: config.databaseWaitMs })
    await database.close()
    process.stdout.write(
      database.migrated.length === 0
        ? `${database.url}: the schema is up to date\n`
        : `${database.url}: applied ${database.migrated.join(', ')}\n`,
    )
  })

  withSettings(
    program
      .command('audit')
      .description("rebuild the ledger from the log alone and compare every account with the node's database")
      .option('--json', 'print the report as JSON'),
    ['dataDir', 'databaseUrl', 'databaseWaitMs', 'masterKey'],
  ).action(async (options) => {
    const config = configFrom(options)
    const database = await openDatabase(config.databaseUrl, { waitMs: config.databaseWaitMs })
    try {
      const { identity } = await loadOrCreateIdentity(
        database.db,
        loadMasterKey(config.masterKey, config.dataDir, false),
      )
      const progress = process.stderr.isTTY
        ? (done: number, total: number) => process.stderr.write(`\raudit: block ${done}/${total}`)
        : undefined
      const report = await audit(database.db, identity, progress)
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

  withSettings(
    program
      .command('backup')
      .description("write a consistent snapshot of the node's database to a file, while the node runs")
      .requiredOption('--out <file>', 'the backup file to create (never overwritten)')
      .option('--json', 'print the summary as JSON'),
    ['dataDir', 'databaseUrl', 'databaseWaitMs'],
  ).action(async (options) => {
    const config = configFrom(options)
    const out = resolve(options.out as string)
    if (existsSync(out)) throw new CliExit(exitCodes.usage, `${out} exists: a backup never overwrites a file`)
    const database = await openDatabase(config.databaseUrl, { waitMs: config.databaseWaitMs })
    try {
      const summary = await backup(database, out)
      print(options.json === true, summary, () => `backup written: ${out}, ${describeRows(summary)}`)
    } finally {
      await database.close()
    }
  })

  withSettings(
    program
      .command('restore')
      .description(
        'restore a backup into an empty node database (any dialect), checked whole before anything is written',
      )
      .requiredOption('--in <file>', 'the backup file')
      .option(
        '--browser <url>',
        'then take from this block browser the blocks committed after the backup (repeatable)',
        collect,
        [],
      )
      .option('--json', 'print the summary as JSON'),
    ['dataDir', 'databaseUrl', 'databaseWaitMs', 'masterKey'],
  ).action(async (options) => {
    const config = configFrom(options)
    const file = resolve(options.in as string)
    if (!existsSync(file)) throw new CliExit(exitCodes.usage, `${file} does not exist`)
    const browsers = browserUrls(options.browser as string[])
    const database = await openDatabase(config.databaseUrl, { waitMs: config.databaseWaitMs })
    try {
      const json = options.json === true
      const summary = await restore(database, file)
      const restored = `restored into ${database.url}: ${describeRows(summary)}`
      if (browsers.length === 0) {
        print(
          json,
          summary,
          () =>
            `${restored}; without --browser, transactions pending in the backup are decided again when the node starts`,
        )
        return
      }
      if (!json) process.stdout.write(`${restored}\n`)
      const replays: ReplaySummary[] = []
      try {
        await replayAll(database, config, browsers, json, replays)
      } catch (error) {
        if (json) print(true, { ...summary, replays }, () => '')
        throw new CliExit(
          exitCodeOf(error).code,
          `the backup is restored, but the replay failed (${exitCodeOf(error).message}); vmoney replay continues it`,
        )
      }
      const undecidedRefused = await refuseUndecided(database.db)
      print(
        json,
        { ...summary, replays, undecidedRefused },
        () =>
          `${undecidedRefused} transactions pending in the backup and in no replayed block were refused (undecided_at_restore)`,
      )
    } finally {
      await database.close()
    }
  })

  withSettings(
    program
      .command('replay')
      .description(
        "take from block browsers the blocks they hold beyond the node's head (what a restored node lacks); the node must be stopped",
      )
      .option(
        '--browser <url>',
        'a block browser to replay from (repeatable; default: the browsers the node publishes to)',
        collect,
        [],
      )
      .option('--json', 'print the summaries as JSON'),
    ['dataDir', 'databaseUrl', 'databaseWaitMs', 'masterKey', 'publishTo'],
  ).action(async (options) => {
    const config = configFrom(options)
    const given = browserUrls(options.browser as string[])
    const browsers = given.length > 0 ? given : config.publishTo
    if (browsers.length === 0)
      throw new CliExit(exitCodes.usage, 'name a block browser: --browser <url>, or VMONEY_PUBLISH_TO')
    const database = await openDatabase(config.databaseUrl, { waitMs: config.databaseWaitMs })
    try {
      const replays: ReplaySummary[] = []
      await replayAll(database, config, browsers, options.json === true, replays)
      if (options.json === true) print(true, { replays }, () => '')
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
