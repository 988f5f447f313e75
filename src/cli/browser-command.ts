import type { Command } from 'commander'
import { startBrowser } from '../browser/browser.js'
import { followedNodeInfo } from '../browser/followed-nodes.js'
import { type SettingName, settings } from '../node/config.js'
import { createLogger } from '../node/logger.js'
import { CliExit, exitCodes } from './output.js'
import { configFrom, withSettings } from './settings.js'

const browserSettings: SettingName[] = [
  'dataDir',
  'host',
  'browserPort',
  'browserDatabaseUrl',
  'browserNodes',
  'rateLimit',
  'logLevel',
]

async function runBrowser(options: Record<string, string | undefined>): Promise<void> {
  const config = configFrom(options)
  if (config.browserNodes.length === 0) {
    throw new CliExit(
      exitCodes.usage,
      `the browser follows no node: pass --${settings.browserNodes.flag} <node URL>=<base64url Ed25519 public key> or set ${settings.browserNodes.env}`,
    )
  }
  const log = createLogger(config.logLevel)
  const browser = await startBrowser(config, log)
  const followed = config.browserNodes.map(
    (node) => `  following:     ${followedNodeInfo(node).id} at ${node.url}`,
  )
  process.stdout.write(
    `VisibleMoney block browser\n  browser:       ${browser.url}\n  api docs:      ${browser.url}/docs\n${followed.join('\n')}\n`,
  )
  const shutdown = async (signal: string) => {
    log.info({ signal }, 'shutting down')
    try {
      await browser.close()
      process.exit(0)
    } catch (error) {
      log.error({ err: error }, 'the browser did not close cleanly')
      process.exit(1)
    }
  }
  process.once('SIGINT', () => void shutdown('SIGINT'))
  process.once('SIGTERM', () => void shutdown('SIGTERM'))
}

export function registerBrowserCommand(program: Command): void {
  withSettings(
    program
      .command('browser')
      .description('run a block browser that checks and keeps the blocks of the nodes it follows'),
    browserSettings,
  ).action((options) => runBrowser(options))
}
