import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { NodeClient } from '../src/client/client.js'
import { readKeyFile } from '../src/client/key-file.js'
import type { DemoWorld } from '../src/node/demo.js'
import { openDatabase } from '../src/node/storage/database.js'
import type { BlockHeader } from '../src/protocol/block.js'
import { createTestDatabase, dropTestDatabase, testDatabaseArgs } from '../src/testing/databases.js'
import {
  exited,
  freePort,
  runCli,
  spawnBrowser,
  spawnNode,
  spawnServer,
} from '../src/testing/node-process.js'

/** How long the load runs before and while the backup is taken. */
const loadMs = 1_500

test('a backup taken under load restores into an empty database; audit and verify --full pass on it', {
  timeout: 180_000,
}, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-backup-'))
  // The restored database is named after a second directory; the node's keys stay in the first.
  const restoredDir = mkdtempSync(join(tmpdir(), 'vmoney-restored-'))
  const backupFile = join(dataDir, 'node.backup')
  let original: Awaited<ReturnType<typeof spawnNode>> | undefined
  let restored: Awaited<ReturnType<typeof spawnServer>> | undefined
  let browser: Awaited<ReturnType<typeof spawnBrowser>> | undefined
  try {
    original = await spawnNode('start', dataDir, await freePort())
    const world = JSON.parse(readFileSync(join(dataDir, 'demo', 'demo.json'), 'utf8')) as DemoWorld
    const person = (name: string) => world.persons.find((p) => p.name === name)!
    const alice = readKeyFile(join(dataDir, 'demo', person('Alice').keyFile))
    const client = new NodeClient(original.url)
    await client.node()
    let stop = false
    let submitted = 0
    const load = (async () => {
      while (!stop) {
        const batch = await Promise.all(
          Array.from({ length: 20 }, () =>
            client.sign(alice, {
              type: 'transfer',
              debit: person('Alice').accounts[0]!,
              credit: person('Bob').accounts[0]!,
              amount: '1',
              asset: world.asset,
            }),
          ),
        )
        await client.submit(batch)
        submitted += batch.length
      }
    })()
    await new Promise((resolve) => setTimeout(resolve, loadMs))
    const taken = await runCli([
      'backup',
      '--data-dir',
      dataDir,
      ...testDatabaseArgs(dataDir),
      '--out',
      backupFile,
      '--json',
    ])
    stop = true
    await load
    assert.equal(taken.code, 0, taken.stderr)
    assert.ok(submitted > 0)
    const summary = JSON.parse(taken.stdout) as { rows: Record<string, number>; logSize: number }
    assert.ok(summary.logSize > 0 && summary.rows.pool! > 0)
    const again = await runCli([
      'backup',
      '--data-dir',
      dataDir,
      ...testDatabaseArgs(dataDir),
      '--out',
      backupFile,
    ])
    assert.equal(again.code, 2, 'a backup never overwrites a file')

    const restoredArgs = ['--data-dir', dataDir, '--database-url', await createTestDatabase(restoredDir)]
    const put = await runCli(['restore', ...restoredArgs, '--in', backupFile])
    assert.equal(put.code, 0, put.stderr)
    const twice = await runCli(['restore', ...restoredArgs, '--in', backupFile])
    assert.equal(twice.code, 2)
    assert.match(twice.stderr, /restore_target_not_empty/)
    const audited = await runCli(['audit', ...restoredArgs])
    assert.equal(audited.code, 0, audited.stdout + audited.stderr)

    // The restored log is the published one: every restored header is the browser's at that height.
    const database = await openDatabase(restoredArgs[3]!)
    const headers = (
      await database.db.selectFrom('chain_blocks').select('header').orderBy('height').execute()
    ).map((row) => JSON.parse(row.header) as BlockHeader)
    await database.close()
    assert.equal(headers.at(-1)!.logSize, summary.logSize)
    for (const header of headers) {
      const published = (await (
        await fetch(`${original.browserUrl()}/v1/blocks/${header.height}`)
      ).json()) as {
        header: BlockHeader
      }
      assert.deepEqual(published.header, header, `block ${header.height}`)
    }
    original.child.kill('SIGTERM')
    await exited(original.child)

    // A node on the restored database, with the original keys, and a browser that follows it from scratch.
    const restoredPort = await freePort()
    const node = await spawnNodeOn(restoredArgs, restoredPort)
    restored = node
    const nodeKey = ((await (await fetch(`${node.url}/v1/node`)).json()) as { signingKey: { x: string } })
      .signingKey.x
    browser = await spawnBrowser([
      '--data-dir',
      restoredDir,
      '--follow',
      `${node.url}=${nodeKey}`,
      '--browser-port',
      String(await freePort()),
    ])
    const state = join(restoredDir, 'verify.json')
    const verify = () =>
      runCli([
        'verify',
        '--node',
        restored!.url,
        '--browser',
        browser!.url,
        '--state',
        state,
        '--full',
        '--json',
      ])
    let verified = await verify()
    for (let tries = 0; verified.code !== 0 && tries < 50; tries++) {
      // The browser may still be pulling the restored log.
      await new Promise((resolve) => setTimeout(resolve, 200))
      rmSync(state, { force: true })
      verified = await verify()
    }
    assert.equal(verified.code, 0, verified.stdout + verified.stderr)

    // A file cut short or changed is refused before anything is written.
    const text = readFileSync(backupFile, 'utf8')
    const cut = join(dataDir, 'cut.backup')
    writeFileSync(cut, text.slice(0, text.lastIndexOf('{"end"')))
    const emptyDir = mkdtempSync(join(tmpdir(), 'vmoney-empty-'))
    try {
      const emptyArgs = ['--data-dir', dataDir, '--database-url', await createTestDatabase(emptyDir)]
      const refused = await runCli(['restore', ...emptyArgs, '--in', cut])
      assert.equal(refused.code, 2)
      assert.match(refused.stderr, /backup_incomplete/)
      const changed = join(dataDir, 'changed.backup')
      writeFileSync(changed, text.replace('"amount":"1"', '"amount":"9"'))
      const corrupt = await runCli(['restore', ...emptyArgs, '--in', changed])
      assert.equal(corrupt.code, 2)
      assert.match(corrupt.stderr, /backup_corrupt/)
      const empty = await openDatabase(emptyArgs[3]!)
      const pooled = await empty.db.selectFrom('pool').select('id').execute()
      await empty.close()
      assert.deepEqual(pooled, [], 'a refused restore writes nothing')
    } finally {
      await dropTestDatabase(emptyDir)
      rmSync(emptyDir, { recursive: true, force: true })
    }
  } finally {
    for (const child of [original?.child, restored?.child, browser?.child]) child?.kill('SIGKILL')
    await dropTestDatabase(dataDir)
    await dropTestDatabase(restoredDir)
    rmSync(dataDir, { recursive: true, force: true })
    rmSync(restoredDir, { recursive: true, force: true })
  }
})

/** `vmoney node` on an explicit database (spawnNode would give it the data directory's own). */
function spawnNodeOn(args: readonly string[], port: number) {
  return spawnServer(['node', ...args, '--port', String(port), '--log-level', 'warn'], 'node')
}
