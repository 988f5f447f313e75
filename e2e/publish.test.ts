import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { type RunningBrowser, startBrowser } from '../src/browser/browser.js'
import { NodeClient } from '../src/client/client.js'
import { readKeyFile } from '../src/client/key-file.js'
import { loadConfig } from '../src/node/config.js'
import { createLogger } from '../src/node/logger.js'
import { type RunningNode, startNode } from '../src/node/node.js'
import { toBase64Url } from '../src/protocol/encoding.js'
import { createTestDatabase, dropTestDatabase } from '../src/testing/databases.js'
import { freePort } from '../src/testing/node-process.js'

/** Publication (seed 000 F6): every block reaches the browser, whichever side was down or restarted. */
const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-publish-'))
const log = createLogger('silent')
const catchUpMs = 20_000
let node: RunningNode | null = null
let browser: RunningBrowser | null = null

after(async () => {
  await browser?.close()
  await node?.close()
  await dropTestDatabase(dataDir)
  rmSync(dataDir, { recursive: true, force: true })
})

async function checkpointOf(url: string): Promise<string | null> {
  const response = await fetch(`${url}/v1/log/checkpoint`)
  return response.ok ? response.text() : null
}

/** Waits until the browser serves exactly the node's newest checkpoint. */
async function caughtUp(nodeUrl: string, browserUrl: string): Promise<void> {
  const deadline = Date.now() + catchUpMs
  for (;;) {
    const expected = await checkpointOf(nodeUrl)
    if (expected !== null && (await checkpointOf(browserUrl)) === expected) return
    assert.ok(Date.now() < deadline, 'the browser did not catch up with the node in time')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

async function someBlocks(url: string, count: number): Promise<void> {
  const client = new NodeClient(url)
  const admin = readKeyFile(join(dataDir, 'admin.key.json'))
  for (let i = 0; i < count; i++) {
    const signed = await client.sign(admin, {
      type: 'create_asset',
      asset: `pub${Date.now().toString(36)}${i}:EUR`,
      issuer: admin.person!,
      scale: 2,
      name: 'Published',
    })
    const [outcome] = await client.submitAndWait(admin, [signed])
    assert.equal(outcome?.status, 'accepted', outcome?.code)
  }
}

test('a browser that was down catches up, and every later block is pushed to it, across restarts', async () => {
  const browserPort = await freePort()
  const browserUrl = `http://127.0.0.1:${browserPort}`
  const databaseUrl = await createTestDatabase(dataDir)
  const config = loadConfig(
    { dataDir, databaseUrl, port: '0', logLevel: 'silent', publishTo: browserUrl },
    {},
  )
  node = await startNode(config, log)
  // The browser is not running yet: the node keeps committing, and retries publishing with backoff.
  await someBlocks(node.url, 3)

  const browserConfig = loadConfig(
    {
      dataDir,
      browserPort: String(browserPort),
      browserNodes: `${node.url}=${toBase64Url(node.identity.signing.publicKey)}`,
      logLevel: 'silent',
    },
    {},
  )
  browser = await startBrowser(browserConfig, log)
  await caughtUp(node.url, browser.url)
  await someBlocks(node.url, 2)
  await caughtUp(node.url, browser.url)

  // The browser restarts on its own database and goes on from its head.
  await browser.close()
  browser = null
  await someBlocks(node.url, 2)
  browser = await startBrowser(browserConfig, log)
  await caughtUp(node.url, browser.url)

  // The node restarts: its publisher asks the browser where it stands and goes on from there.
  await node.close()
  node = await startNode({ ...config, port: Number(new URL(node.url).port) }, log)
  await someBlocks(node.url, 2)
  await caughtUp(node.url, browser.url)

  const head = (await (await fetch(`${browser.url}/v1/blocks`)).json()) as { header: { height: number } }
  const nodeHead = (await (await fetch(`${node.url}/v1/blocks`)).json()) as { header: { height: number } }
  assert.equal(head.header.height, nodeHead.header.height)
  const alarms = (await (await fetch(`${browser.url}/v1/alarms`)).json()) as { alarms: unknown[] }
  assert.deepEqual(alarms.alarms, [], 'an honest node raises no alarm')
})
