import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { NodeClient, type Outcome } from '../src/client/client.js'
import { type DeviceKeys, readKeyFile } from '../src/client/key-file.js'
import { seedDemo } from '../src/node/demo.js'
import { openDatabase } from '../src/node/storage/database.js'
import { type BlockHeader, headerHash } from '../src/protocol/block.js'
import { toBase64 } from '../src/protocol/encoding.js'
import type { SignedTransaction } from '../src/protocol/transaction.js'
import { dropTestDatabase, testDatabaseArgs, testDatabaseUrl } from '../src/testing/databases.js'
import { exited, freePort, runCli, spawnNode } from '../src/testing/node-process.js'

/** Bounds: a few kill rounds, each a short burst of load. */
const killRounds = 3
const clients = 4
const batchSize = 50

test('SIGKILL at a random moment loses and doubles nothing', { timeout: 180_000 }, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmoney-crash-'))
  const port = await freePort()
  let node: Awaited<ReturnType<typeof spawnNode>> | undefined
  try {
    node = await spawnNode('node', dataDir, port)
    const world = await seedDemo(node.url, join(dataDir, 'admin.key.json'), dataDir)
    const person = (name: string) => world.persons.find((p) => p.name === name)!
    const keysOf = (name: string) => readKeyFile(join(dataDir, 'demo', person(name).keyFile))
    const parties: { keys: DeviceKeys; from: string; to: string }[] = [
      { keys: keysOf('Alice'), from: person('Alice').accounts[0]!, to: person('Bob').accounts[0]! },
      { keys: keysOf('Bob'), from: person('Bob').accounts[0]!, to: person('Alice').accounts[0]! },
    ]
    const admin = readKeyFile(join(dataDir, 'admin.key.json'))
    const acknowledged = new Map<string, SignedTransaction>()
    let kills = 0

    for (let round = 0; round < killRounds; round++) {
      const client = new NodeClient(node.url)
      // Asked once before the load, so that signing needs no request that the kill could cut.
      await client.node()
      let stop = false
      const load = Array.from({ length: clients }, async (_, c) => {
        const party = parties[c % parties.length]!
        while (!stop) {
          // Small amounts, and now and then more than the balance: both outcomes must survive the crash.
          const batch = await Promise.all(
            Array.from({ length: batchSize }, (_, i) =>
              client.sign(party.keys, {
                type: 'transfer',
                debit: party.from,
                credit: party.to,
                amount: i === 0 && c === 0 ? '999999999' : String(1 + i),
                asset: world.asset,
              }),
            ),
          )
          try {
            const outcomes = await client.submit(batch)
            for (const outcome of outcomes)
              acknowledged.set(outcome.id, batch.find((s) => s.tx.id === outcome.id)!)
          } catch {
            return
          }
        }
      })
      await new Promise((resolve) => setTimeout(resolve, 200 + Math.random() * 1_500))
      node.child.kill('SIGKILL')
      kills++
      stop = true
      await Promise.all(load)
      await exited(node.child)
      node = await spawnNode('node', dataDir, port)
    }

    const client = new NodeClient(node.url)
    const outcomes = new Map<string, Outcome>()
    for (const id of acknowledged.keys()) {
      const outcome = (await client.get(admin, `/v1/transactions/${id}?wait=10000`)) as Outcome
      outcomes.set(id, outcome)
      assert.ok(
        outcome.status === 'accepted' || outcome.status === 'rejected',
        `${id} is still ${outcome.status}`,
      )
    }
    node.child.kill('SIGTERM')
    await exited(node.child)

    const database = await openDatabase(testDatabaseUrl(dataDir))
    try {
      const { db } = database
      for (const [id, outcome] of outcomes) {
        const leaves = await db
          .selectFrom('chain_leaves')
          .select('leaf_index')
          .where('transaction_id', '=', id)
          .execute()
        const n = leaves.length
        assert.equal(n, outcome.status === 'accepted' ? 1 : 0, `transaction ${id} is in the log ${n} times`)
      }
      const headers = (await db.selectFrom('chain_blocks').select('header').orderBy('height').execute()).map(
        (row) => JSON.parse(row.header) as BlockHeader,
      )
      headers.forEach((header, height) => {
        assert.equal(header.height, height, 'no gap in block heights')
        if (height > 0) assert.equal(header.previous, toBase64(headerHash(headers[height - 1]!)), 'no fork')
        if (height > 0) assert.equal(header.firstLeaf, headers[height - 1]!.logSize)
      })
      const totals = await db
        .selectFrom('ledger_accounts')
        .select(['credits_posted', 'debits_posted'])
        .where('asset', '=', world.asset)
        .execute()
      const sum = totals.reduce(
        (total, row) => total + BigInt(row.credits_posted) - BigInt(row.debits_posted),
        0n,
      )
      assert.equal(sum, 0n, 'transfers neither create nor destroy money')
    } finally {
      await database.close()
    }
    const audited = await runCli(['audit', '--data-dir', dataDir, ...testDatabaseArgs(dataDir), '--json'])
    assert.equal(audited.code, 0, audited.stdout + audited.stderr)
    const accepted = [...outcomes.values()].filter((o) => o.status === 'accepted').length
    process.stdout.write(
      `crash: runs ${killRounds}, kills ${kills}, acknowledged ${acknowledged.size}, accepted ${accepted}, lost 0, doubled 0\n`,
    )
    assert.ok(acknowledged.size > 0, 'the load got transactions acknowledged before the kills')
  } finally {
    node?.child.kill('SIGKILL')
    await dropTestDatabase(dataDir)
    rmSync(dataDir, { recursive: true, force: true })
  }
})
