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
import { newId } from '../src/protocol/transaction.js'
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

test('a restored node takes the blocks committed after its backup from a block browser, then goes on from there', {
  timeout: 180_000,
}, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-backup-'))
  const restoredDir = mkdtempSync(join(tmpdir(), 'vmoney-restored-'))
  const followerDir = mkdtempSync(join(tmpdir(), 'vmoney-follower-'))
  const backupFile = join(dataDir, 'node.backup')
  let original: Awaited<ReturnType<typeof spawnNode>> | undefined
  let restored: Awaited<ReturnType<typeof spawnServer>> | undefined
  let follower: Awaited<ReturnType<typeof spawnBrowser>> | undefined
  const others: Awaited<ReturnType<typeof spawnServer>>[] = []
  try {
    // Every node here takes the original's port, so that the browser following it follows it on.
    const port = await freePort()
    original = await spawnNode('start', dataDir, port)
    const world = JSON.parse(readFileSync(join(dataDir, 'demo', 'demo.json'), 'utf8')) as DemoWorld
    const person = (name: string) => world.persons.find((p) => p.name === name)!
    const alice = readKeyFile(join(dataDir, 'demo', person('Alice').keyFile))
    const client = new NodeClient(original.url)
    const { signingKey } = (await (await fetch(`${original.url}/v1/node`)).json()) as {
      signingKey: { x: string }
    }
    follower = await spawnBrowser([
      '--data-dir',
      followerDir,
      '--follow',
      `${original.url}=${signingKey.x}`,
      '--browser-port',
      String(await freePort()),
    ])
    const transfers = async (count: number) => {
      const signed = await Promise.all(
        Array.from({ length: count }, () =>
          client.sign(alice, {
            type: 'transfer',
            debit: person('Alice').accounts[0]!,
            credit: person('Bob').accounts[0]!,
            amount: '1',
            asset: world.asset,
          }),
        ),
      )
      const outcomes = await client.submitAndWait(alice, signed)
      assert.ok(outcomes.every((outcome) => outcome.status === 'accepted'))
      return outcomes
    }
    await transfers(10)
    // An api-only node pools what it is sent and decides nothing: the backup holds two pending transfers.
    original.child.kill('SIGTERM')
    await exited(original.child)
    const nodeArgs = ['--data-dir', dataDir, ...testDatabaseArgs(dataDir)]
    const apiOnly = await spawnNodeOn([...nodeArgs, '--role', 'api'], port)
    others.push(apiOnly)
    const transfer = (credit: string) =>
      client.sign(alice, {
        type: 'transfer',
        debit: person('Alice').accounts[0]!,
        credit,
        amount: '1',
        asset: world.asset,
      })
    const good = await transfer(person('Bob').accounts[0]!)
    // To an account that does not exist: the funnel refuses it.
    const bad = await transfer(newId())
    const pooled = await client.submit([good, bad])
    assert.deepEqual(
      pooled.map((outcome) => outcome.status),
      ['pending', 'pending'],
    )
    const taken = await runCli(['backup', ...nodeArgs, '--out', backupFile])
    assert.equal(taken.code, 0, taken.stderr)
    apiOnly.child.kill('SIGTERM')
    await exited(apiOnly.child)

    // The whole node decides them, and goes on, after the backup; the browser holds every block.
    const sequencer = await spawnNodeOn(nodeArgs, port)
    others.push(sequencer)
    const [goodOutcome, badOutcome] = await client.awaitFinal(alice, pooled, Date.now() + 30_000)
    assert.equal(goodOutcome!.status, 'accepted')
    assert.equal(badOutcome!.status, 'rejected')
    const after = [goodOutcome!, ...(await transfers(15)), ...(await transfers(15))]
    const head = await headHeight(sequencer.url)
    await until(async () => (await headHeight(follower!.url)) === head)
    // The node's database is lost.
    sequencer.child.kill('SIGKILL')
    await exited(sequencer.child)

    const restoredArgs = ['--data-dir', dataDir, '--database-url', await createTestDatabase(restoredDir)]
    const put = await runCli([
      'restore',
      ...restoredArgs,
      '--in',
      backupFile,
      '--browser',
      follower.url,
      '--json',
    ])
    assert.equal(put.code, 0, put.stdout + put.stderr)
    const { replays, undecidedRefused } = JSON.parse(put.stdout) as {
      replays: { blocks: number; height: number }[]
      undecidedRefused: number
    }
    assert.equal(replays.length, 1)
    assert.ok(replays[0]!.blocks >= 3, 'the blocks after the backup were replayed')
    assert.equal(replays[0]!.height, head)
    // The refused transfer is not decided again: it might be accepted this time.
    assert.equal(undecidedRefused, 1)
    const audited = await runCli(['audit', ...restoredArgs])
    assert.equal(audited.code, 0, audited.stdout + audited.stderr)
    // Every transfer accepted after the backup (one of them pending in it) is accepted, in its block.
    const database = await openDatabase(restoredArgs[3]!)
    const rows = await database.db
      .selectFrom('pool')
      .select(['id', 'status', 'code_name', 'block_height'])
      .where('id', 'in', [...after.map((outcome) => outcome.id), bad.tx.id])
      .execute()
    await database.close()
    assert.deepEqual(
      new Map<string, unknown[]>(rows.map((row) => [row.id, [row.status, row.code_name, row.block_height]])),
      new Map<string, unknown[]>([
        ...after.map((outcome): [string, unknown[]] => [outcome.id, ['accepted', 'ok', outcome.blockHeight]]),
        [bad.tx.id, ['rejected', 'undecided_at_restore', null]],
      ]),
    )
    const again = await runCli(['replay', ...restoredArgs, '--browser', follower.url, '--json'])
    assert.equal(again.code, 0, again.stderr)
    assert.equal((JSON.parse(again.stdout) as { replays: { blocks: number }[] }).replays[0]!.blocks, 0)

    // Bad input: a browser that is not a URL, and one that does not answer.
    const notUrl = await runCli(['replay', ...restoredArgs, '--browser', 'browser.example'])
    assert.equal(notUrl.code, 2)
    assert.match(notUrl.stderr, /--browser takes an http\(s\) URL/)
    const away = await runCli([
      'replay',
      ...restoredArgs,
      '--browser',
      `http://127.0.0.1:${await freePort()}`,
    ])
    assert.equal(away.code, 3, away.stdout + away.stderr)

    // A node whose chain is not the browser's is refused, and nothing is written into it.
    const forkedDir = mkdtempSync(join(tmpdir(), 'vmoney-forked-'))
    try {
      const forkedArgs = ['--data-dir', dataDir, '--database-url', await createTestDatabase(forkedDir)]
      assert.equal((await runCli(['restore', ...forkedArgs, '--in', backupFile])).code, 0)
      const forked = await openDatabase(forkedArgs[3]!)
      const top = await forked.db
        .selectFrom('chain_blocks')
        .select(['height', 'header'])
        .orderBy('height', 'desc')
        .limit(1)
        .executeTakeFirstOrThrow()
      const header = JSON.parse(top.header) as BlockHeader
      await forked.db
        .updateTable('chain_blocks')
        .set({ header: JSON.stringify({ ...header, time: '2000-01-01T00:00:00.000Z' }) })
        .where('height', '=', top.height)
        .execute()
      const poolBefore = await forked.db.selectFrom('pool').select(['id', 'status']).orderBy('seq').execute()
      const refusedReplay = await runCli(['replay', ...forkedArgs, '--browser', follower.url])
      assert.equal(refusedReplay.code, 1, refusedReplay.stdout + refusedReplay.stderr)
      assert.match(refusedReplay.stderr, /replay_refused: .*two histories/)
      const heights = await forked.db.selectFrom('chain_blocks').select('height').execute()
      const poolAfter = await forked.db.selectFrom('pool').select(['id', 'status']).orderBy('seq').execute()
      await forked.close()
      assert.equal(Math.max(...heights.map((row) => row.height)), top.height)
      assert.deepEqual(poolAfter, poolBefore)
    } finally {
      await dropTestDatabase(forkedDir)
      rmSync(forkedDir, { recursive: true, force: true })
    }

    // The restored node's next blocks extend the browser's log: accepted, no alarm.
    restored = await spawnNodeOn([...restoredArgs, '--publish-to', follower.url], port)
    const busy = await runCli(['replay', ...restoredArgs, '--browser', follower.url])
    assert.equal(busy.code, 2, 'no replay into a running node')
    assert.match(busy.stderr, /funnel_running/)
    const later = new NodeClient(restored.url)
    const signed = await later.sign(alice, {
      type: 'transfer',
      debit: person('Alice').accounts[0]!,
      credit: person('Bob').accounts[0]!,
      amount: '1',
      asset: world.asset,
    })
    const [outcome] = await later.submitAndWait(alice, [signed])
    assert.equal(outcome!.status, 'accepted')
    assert.ok(outcome!.blockHeight! > head)
    await until(async () => (await headHeight(follower!.url)) === outcome!.blockHeight)
    const { alarms } = (await (await fetch(`${follower.url}/v1/alarms`)).json()) as { alarms: unknown[] }
    assert.deepEqual(alarms, [])
    const verified = await runCli([
      'verify',
      '--node',
      restored.url,
      '--browser',
      follower.url,
      '--state',
      join(restoredDir, 'verify.json'),
      '--full',
    ])
    assert.equal(verified.code, 0, verified.stdout + verified.stderr)
  } finally {
    for (const child of [original?.child, restored?.child, follower?.child, ...others.map((o) => o.child)])
      child?.kill('SIGKILL')
    for (const dir of [dataDir, restoredDir, followerDir]) {
      await dropTestDatabase(dir)
      rmSync(dir, { recursive: true, force: true })
    }
  }
})

/** The height of the newest block a node or a browser (of its one node) serves; -1 before any. */
async function headHeight(url: string): Promise<number> {
  const answer = await fetch(`${url}/v1/blocks`)
  if (!answer.ok) return -1
  return ((await answer.json()) as { header: BlockHeader }).header.height
}

/** Waits (bounded) until `done` says so. */
async function until(done: () => Promise<boolean>): Promise<void> {
  for (let tries = 0; tries < 150; tries++) {
    if (await done()) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.fail('timed out waiting')
}

/** `vmoney node` on an explicit database (spawnNode would give it the data directory's own). */
function spawnNodeOn(args: readonly string[], port: number) {
  return spawnServer(['node', ...args, '--port', String(port), '--log-level', 'warn'], 'node')
}
