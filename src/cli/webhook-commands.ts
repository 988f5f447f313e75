import type { Command } from 'commander'
import { loadMasterKey } from '../node/identity.js'
import { openDatabase } from '../node/storage/database.js'
import {
  addWebhook,
  eventTypes,
  listDeadLetters,
  listWebhooks,
  removeWebhook,
  replayDeadLetters,
  signatureHeader,
} from '../node/webhooks/webhooks.js'
import { CliExit, exitCodes, print } from './output.js'
import { configFrom, withSettings } from './settings.js'

type Options = Record<string, string | boolean | undefined>

/** Runs `action` on the node's database (operators' commands work where the node's database is). */
async function onDatabase<T>(
  options: Options,
  action: (db: Awaited<ReturnType<typeof openDatabase>>['db'], masterKey: () => Uint8Array) => Promise<T>,
): Promise<T> {
  const config = configFrom(options as Record<string, string | undefined>)
  const database = await openDatabase(config.databaseUrl, { waitMs: config.databaseWaitMs })
  try {
    return await action(database.db, () => loadMasterKey(config.masterKey, config.dataDir, false).key)
  } finally {
    await database.close()
  }
}

function deadLetterId(text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  if (!/^\d{1,15}$/.test(text))
    throw new CliExit(exitCodes.usage, `--dead-letter takes a number, got ${text}`)
  return Number(text)
}

/** `vmoney webhooks …`: operators register webhooks, read their dead letters and replay them. */
export function registerWebhookCommands(program: Command): void {
  const webhooks = program
    .command('webhooks')
    .description("operators' webhooks: signed deliveries of committed entries and blocks")
  const databaseSettings = ['dataDir', 'databaseUrl', 'databaseWaitMs', 'masterKey'] as const

  withSettings(
    webhooks
      .command('add')
      .description('register a webhook for what is committed from now on; prints its secret once')
      .requiredOption('--url <url>', 'where deliveries are POSTed (http or https)')
      .option('--events <types>', 'comma-separated: entry, block', 'entry,block')
      .option('--json', 'print as JSON'),
    databaseSettings,
  ).action(async (options: Options) => {
    const added = await onDatabase(options, (db, masterKey) =>
      addWebhook(db, masterKey(), options.url as string, eventTypes(options.events as string)),
    )
    print(options.json === true, added, () =>
      [
        `webhook ${added.id} registered`,
        `  secret (shown once; base64url, the HMAC-SHA256 key of the ${signatureHeader} header): ${added.secret}`,
      ].join('\n'),
    )
  })

  withSettings(
    webhooks
      .command('list')
      .description('the webhooks, their cursors and dead letters')
      .option('--json', 'print as JSON'),
    databaseSettings,
  ).action(async (options: Options) => {
    const list = await onDatabase(options, (db) => listWebhooks(db))
    print(options.json === true, { webhooks: list }, () =>
      list.length === 0
        ? 'no webhooks'
        : list
            .map(
              (w) =>
                `${w.id} ${w.url} [${w.events.join(',')}] at ${w.cursor}, ${w.deadLetters} dead letters${w.lastError === null ? '' : `, last error: ${w.lastError}`}`,
            )
            .join('\n'),
    )
  })

  withSettings(
    webhooks
      .command('remove')
      .description('stop a webhook (its record and dead letters are kept)')
      .argument('<id>'),
    databaseSettings,
  ).action(async (id: string, options: Options) => {
    await onDatabase(options, (db) => removeWebhook(db, id))
    process.stdout.write(`webhook ${id} removed\n`)
  })

  withSettings(
    webhooks
      .command('dead-letters')
      .description("a webhook's batches that failed every attempt")
      .argument('<id>')
      .option('--after <n>', 'list dead letters after this id (pages of 1,000)', '0')
      .option('--json', 'print as JSON'),
    databaseSettings,
  ).action(async (id: string, options: Options) => {
    const letters = await onDatabase(options, (db) =>
      listDeadLetters(db, id, deadLetterId(options.after as string) ?? 0),
    )
    print(options.json === true, { deadLetters: letters }, () =>
      letters.length === 0
        ? 'no dead letters'
        : letters
            .map(
              (d) =>
                `${d.id} ${d.state}: ${d.events} events ${d.firstEvent}..${d.lastEvent}, ${d.attempts} attempts, ${d.lastError} (${d.failedAt})`,
            )
            .join('\n'),
    )
  })

  withSettings(
    webhooks
      .command('replay')
      .description('deliver dead letters again (all of the webhook, or one), with their original event ids')
      .argument('<id>')
      .option('--dead-letter <n>', 'only this dead letter'),
    databaseSettings,
  ).action(async (id: string, options: Options) => {
    const count = await onDatabase(options, (db) =>
      replayDeadLetters(db, id, deadLetterId(options.deadLetter as string | undefined)),
    )
    process.stdout.write(`${count} dead letters queued for delivery\n`)
  })
}
