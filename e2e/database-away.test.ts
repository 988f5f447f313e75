import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Socket, connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { NodeClient } from '../src/client/client.js'
import { type DeviceKeys, readKeyFile } from '../src/client/key-file.js'
import { loadConfig } from '../src/node/config.js'
import { createLogger } from '../src/node/logger.js'
import { type RunningNode, startNode } from '../src/node/node.js'
import { VmError } from '../src/protocol/errors.js'
import { createTestDatabase, dropTestDatabase, testDialect } from '../src/testing/databases.js'
import { runCli } from '../src/testing/node-process.js'

/** How long the node may take to carry on once its database is back. */
const recoveryMs = 30_000

/** A TCP proxy to the database server that the test can cut (every connection dropped) and restore. */
async function databaseProxy(host: string, port: number) {
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = tcpConnect(port, host)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      socket.on('error', () => {})
    }
    client.pipe(upstream).pipe(client)
  })
  const listen = (at: number) =>
    new Promise<number>((resolve) =>
      server.listen(at, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
    )
  const proxyPort = await listen(0)
  return {
    port: proxyPort,
    async cut() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      })
    },
    restore: () => listen(proxyPort),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

test('while the database is away the api answers 503 with Retry-After, writes nothing, and carries on when it is back', {
  skip: testDialect === 'sqlite' ? 'SQLite is embedded: there is no server to lose' : false,
  timeout: 120_000,
}, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-away-'))
  const direct = new URL(await createTestDatabase(dataDir))
  const proxy = await databaseProxy(direct.hostname, Number(direct.port))
  const viaProxy = new URL(direct)
  viaProxy.port = String(proxy.port)
  let node: RunningNode | undefined
  try {
    const config = loadConfig(
      { dataDir, databaseUrl: viaProxy.toString(), port: '0', logLevel: 'silent' },
      {},
    )
    node = await startNode(config, createLogger('silent'))
    const client = new NodeClient(node.url)
    const admin = readKeyFile(join(dataDir, 'admin.key.json'))
    assert.equal((await createAsset(client, admin, 'before'))[0]?.status, 'accepted')

    await proxy.cut()
    const ready = await fetch(`${node.url}/readyz`)
    assert.equal(ready.status, 503)
    assert.equal(ready.headers.get('retry-after'), '1')
    const read = await fetch(`${node.url}/v1/blocks/0`)
    assert.equal(read.status, 503)
    assert.equal(read.headers.get('retry-after'), '1')
    assert.equal(((await read.json()) as { code: string }).code, 'storage_unavailable')
    const refused = await createAsset(client, admin, 'away').then(
      () => null,
      (error: unknown) => error,
    )
    assert.ok(refused instanceof VmError, String(refused))
    assert.equal(refused.code, 'storage_unavailable')

    await proxy.restore()
    const deadline = Date.now() + recoveryMs
    for (;;) {
      const after = await createAsset(client, admin, 'after').catch((error: unknown) => error)
      if (Array.isArray(after)) {
        assert.equal(after[0]?.status, 'accepted')
        break
      }
      assert.ok(Date.now() < deadline, `the node did not carry on: ${String(after)}`)
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    await node.close()
    node = undefined
    const audited = await runCli(['audit', '--data-dir', dataDir, '--database-url', direct.toString()])
    assert.equal(audited.code, 0, audited.stdout + audited.stderr)
  } finally {
    await node?.close()
    await proxy.close()
    await dropTestDatabase(dataDir)
    rmSync(dataDir, { recursive: true, force: true })
  }
})

function createAsset(client: NodeClient, admin: DeviceKeys, name: string) {
  return client
    .sign(admin, {
      type: 'create_asset',
      asset: `${name}${Date.now().toString(36)}:EUR`,
      issuer: admin.person!,
      scale: 2,
      name,
    })
    .then((signed) => client.submitAndWait(admin, [signed]))
}
