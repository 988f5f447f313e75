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
  close(): Promise<void>
}> {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-test-'))
  const databaseUrl = await createTestDatabase(dataDir)
  const config = loadConfig({ dataDir, databaseUrl, port: '0', logLevel: 'silent', ...settings }, {})
  const node = await startNode(config, createLogger('silent'))
  const client = new NodeClient(node.url)
  const admin = readKeyFile(node.adminKeyFile)
  return {
    node,
    client,
    dataDir,
    admin,
    async close() {
      await node.close()
      await dropTestDatabase(dataDir)
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
}
