import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NodeClient } from '../client/client.js'
import { readKeyFile } from '../client/key-file.js'
import { loadConfig, type SettingName } from '../node/config.js'
import { createLogger } from '../node/logger.js'
import { type RunningNode, startNode } from '../node/node.js'
import { createTestDatabase, dropTestDatabase } from './databases.js'

/** A real node on a fresh database of the suite's dialect and a free loopback port, for tests. */
export async function startTestNode(settings: Partial<Record<SettingName, string>> = {}): Promise<{
  node: RunningNode
  client: NodeClient
  dataDir: string
  admin: ReturnType<typeof readKeyFile>
  /** Stops the node and starts it again on the same data and database, with these settings. */
  restart(changed: Partial<Record<SettingName, string>>): Promise<void>
  close(): Promise<void>
}> {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-test-'))
  const databaseUrl = await createTestDatabase(dataDir)
  const start = async (current: Partial<Record<SettingName, string>>) => {
    const config = loadConfig({ dataDir, databaseUrl, port: '0', logLevel: 'silent', ...current }, {})
    return startNode(config, createLogger('silent'))
  }
  const node = await start(settings)
  const harness = {
    node,
    client: new NodeClient(node.url),
    dataDir,
    admin: readKeyFile(node.adminKeyFile),
    async restart(changed: Partial<Record<SettingName, string>>) {
      await harness.node.close()
      harness.node = await start({ ...settings, ...changed })
      harness.client = new NodeClient(harness.node.url)
    },
    async close() {
      await harness.node.close()
      await dropTestDatabase(dataDir)
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
  return harness
}
