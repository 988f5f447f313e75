import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { NodeClient } from '../src/client/client.js'
import { newKeyFile, openKeyFile, readKeyFile } from '../src/client/key-file.js'
import type { VmError } from '../src/protocol/errors.js'
import { createTestDatabase, dropTestDatabase, testDialect } from '../src/testing/databases.js'
import { exited, freePort, runCli, spawnServer } from '../src/testing/node-process.js'

test(`an api replica and a funnel process share one ${testDialect} database`, {
  timeout: 120_000,
}, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-roles-'))
  const started: Awaited<ReturnType<typeof spawnServer>>[] = []
  try {
    const args = [
      '--data-dir',
      dataDir,
      '--database-url',
      await createTestDatabase(dataDir),
      '--log-level',
      'warn',
    ]
    const role = async (name: string) => {
      const process = await spawnServer(
        ['node', ...args, '--role', name, '--port', String(await freePort())],
        'node',
      )
      started.push(process)
      return process
    }
    // The funnel pools the genesis (the database is fresh) and commits it; then the replicas start.
    const funnel = await role('funnel')
    const replicas = [await role('api'), await role('api')]

    const admin = readKeyFile(join(dataDir, 'admin.key.json'))
    // A changefeed on the second replica hears of blocks committed through the first.
    const feed = new AbortController()
    const heights: number[] = []
    const listening = (async () => {
      for await (const event of new NodeClient(replicas[1]!.url).changes(admin, {
        after: '0-0',
        signal: feed.signal,
      })) {
        if (event.event === 'block') heights.push((JSON.parse(event.data) as { height: number }).height)
      }
    })().catch((error: unknown) => {
      if (!feed.signal.aborted) throw error
    })
    const committedAt: number[] = []
    for (const [i, replica] of replicas.entries()) {
      const client = new NodeClient(replica.url)
      const signed = await client.sign(admin, {
        type: 'create_asset',
        asset: `replica${i}${Date.now().toString(36)}:EUR`,
        issuer: admin.person!,
        scale: 2,
        name: `Replica ${i}`,
      })
      // Decided by the funnel process; the replica learns the outcome from the database.
      const [outcome] = await client.submitAndWait(admin, [signed], 15_000)
      assert.equal(outcome?.status, 'accepted', JSON.stringify(outcome))
      committedAt.push(outcome.blockHeight!)
      assert.match(await (await fetch(`${replica.url}/metrics`)).text(), /^vmoney_funnel_leading 0$/m)
    }
    assert.match(await (await fetch(`${funnel.url}/metrics`)).text(), /^vmoney_funnel_leading 1$/m)
    for (let waited = 0; !committedAt.every((height) => heights.includes(height)); waited += 50) {
      assert.ok(waited < 10_000, `blocks ${committedAt} reached the other replica's feed: ${heights}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    feed.abort()
    await listening

    // A key revoked through one replica stops reading at the other once its tail saw the block: the
    // replica's cache of keys is dropped.
    const [first, second] = replicas.map((replica) => new NodeClient(replica.url)) as [NodeClient, NodeClient]
    const spare = { ...openKeyFile(newKeyFile()), person: admin.person }
    const decide = async (body: Parameters<NodeClient['sign']>[1]) => {
      const [outcome] = await first.submitAndWait(admin, [await first.sign(admin, body)], 15_000)
      assert.equal(outcome?.status, 'accepted', JSON.stringify(outcome))
    }
    await decide({ type: 'add_key', person: admin.person!, key: spare.deviceKey })
    await second.get(spare, `/v1/persons/${admin.person}`)
    await decide({ type: 'revoke_key', person: admin.person!, keyId: spare.keyId })
    for (let waited = 0; ; waited += 100) {
      const refused = await second.get(spare, `/v1/persons/${admin.person}`).then(
        () => null,
        (error: VmError) => error.code,
      )
      if (refused === 'signer_key_revoked') break
      assert.ok(waited < 5_000, `the other replica still takes the revoked key (${refused})`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    assert.equal((await fetch(`${funnel.url}/v1/log/checkpoint`)).status, 404, 'the funnel serves no api')
    assert.equal((await fetch(`${funnel.url}/readyz`)).status, 200)

    const wrong = await runCli(['node', ...args, '--role', 'everything', '--port', String(await freePort())])
    assert.equal(wrong.code, 2)
    assert.match(wrong.stderr, /VMONEY_ROLE must be all, api or funnel/)
    const startWithRole = await runCli([
      'start',
      ...args,
      '--role',
      'api',
      '--port',
      String(await freePort()),
    ])
    assert.equal(startWithRole.code, 2)
    assert.match(startWithRole.stderr, /--role is for vmoney node/)
  } finally {
    for (const process of started) {
      process.child.kill('SIGTERM')
      await exited(process.child)
    }
    await dropTestDatabase(dataDir)
    rmSync(dataDir, { recursive: true, force: true })
  }
})
