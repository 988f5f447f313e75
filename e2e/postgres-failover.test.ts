/**
 * PostgreSQL failover: a primary and a synchronous streaming standby (two clusters of the machine's own
 * PostgreSQL binaries on spare ports), a node configured with both hosts and
 * `target_session_attrs=read-write`, load, the primary killed, the standby promoted. The node must find
 * the new primary by itself and carry on, and no transaction it acknowledged may be lost.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, execFile } from 'node:child_process'
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import { NodeClient } from '../src/client/client.js'
import { readKeyFile } from '../src/client/key-file.js'
import { seedDemo } from '../src/node/demo.js'
import type { SignedTransaction } from '../src/protocol/transaction.js'
import { testDialect } from '../src/testing/databases.js'
import { exited, freePort, runCli, spawnServer } from '../src/testing/node-process.js'

const run = promisify(execFile)

/** The newest PostgreSQL server binaries Debian installed, if any. */
function postgresBin(): string | null {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return null
  const versions = readdirSync(root)
    .filter((name) => existsSync(join(root, name, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a))
  return versions.length === 0 ? null : join(root, versions[0]!, 'bin')
}

const bin = postgresBin()
const skip =
  testDialect !== 'postgres'
    ? 'runs with the PostgreSQL suite'
    : bin === null
      ? 'no PostgreSQL server binaries under /usr/lib/postgresql'
      : false

/** PostgreSQL refuses to run as root: as root, its tools run as the postgres user. */
async function pg(tool: string, args: readonly string[]): Promise<string> {
  const command = join(bin!, tool)
  const asRoot = process.getuid?.() === 0
  const { stdout } = await run(
    asRoot ? 'runuser' : command,
    asRoot ? ['-u', 'postgres', '--', command, ...args] : [...args],
    {
      timeout: 60_000,
    },
  )
  return stdout
}

/** Runs a query (from a file: lists of ids outgrow a command line) and returns psql's unaligned rows. */
async function psql(port: number, query: string, database = 'postgres'): Promise<string> {
  const file = join(tmpdir(), `vmoney-query-${process.pid}-${Math.random().toString(36).slice(2)}.sql`)
  writeFileSync(file, query)
  try {
    const { stdout } = await run(
      'psql',
      ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', database, '-Atf', file],
      {
        timeout: 30_000,
        maxBuffer: 64 * 1024 * 1024,
      },
    )
    return stdout.trim()
  } finally {
    rmSync(file, { force: true })
  }
}

async function until(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (await check().catch(() => false)) return
    assert.ok(Date.now() < deadline, `${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

/**
 * The primary waits for its standby on every commit; the standby (whose base backup copied the primary's
 * settings) has none to wait for once promoted.
 */
const clusterSettings = (port: number, socketDir: string, primary: boolean) =>
  [
    `port = ${port}`,
    "listen_addresses = '127.0.0.1'",
    `unix_socket_directories = '${socketDir}'`,
    'wal_level = replica',
    'max_wal_senders = 4',
    'hot_standby = on',
    'max_connections = 60',
    'shared_buffers = 32MB',
    // Every commit waits until the standby has it: a failover loses nothing acknowledged.
    `synchronous_standby_names = '${primary ? 'standby1' : ''}'`,
    'synchronous_commit = on',
  ].join('\n')

test('the node rides a PostgreSQL failover to a promoted synchronous standby and loses nothing', {
  skip,
  timeout: 240_000,
}, async () => {
  const root = mkdtempSync(join(tmpdir(), 'vmoney-pg-failover-'))
  const primaryDir = join(root, 'primary')
  const standbyDir = join(root, 'standby')
  const dataDir = join(root, 'node')
  const [primaryPort, standbyPort, nodePort] = [await freePort(), await freePort(), await freePort()]
  let node: { child: ChildProcess; url: string; output: () => string } | null = null
  try {
    if (process.getuid?.() === 0) await run('chown', ['postgres:postgres', root])
    await pg('initdb', ['-D', primaryDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'])
    appendFileSync(join(primaryDir, 'postgresql.conf'), `\n${clusterSettings(primaryPort, root, true)}\n`)
    await pg('pg_ctl', ['-D', primaryDir, '-l', join(root, 'primary.log'), '-w', 'start'])
    await pg('pg_basebackup', [
      '-h',
      '127.0.0.1',
      '-p',
      String(primaryPort),
      '-U',
      'postgres',
      '-D',
      standbyDir,
      '-X',
      'stream',
    ])
    appendFileSync(
      join(standbyDir, 'postgresql.conf'),
      `\n${clusterSettings(standbyPort, root, false)}\nprimary_conninfo = 'host=127.0.0.1 port=${primaryPort} user=postgres application_name=standby1'\n`,
    )
    writeFileSync(join(standbyDir, 'standby.signal'), '')
    if (process.getuid?.() === 0) await run('chown', ['-R', 'postgres:postgres', standbyDir])
    await pg('pg_ctl', ['-D', standbyDir, '-l', join(root, 'standby.log'), '-w', 'start'])
    await until(
      'the standby streams synchronously',
      async () =>
        (await psql(
          primaryPort,
          "select sync_state from pg_stat_replication where application_name = 'standby1'",
        )) === 'sync',
    )
    await psql(primaryPort, 'create database vmoney')

    const url = `postgres://postgres@127.0.0.1:${primaryPort},127.0.0.1:${standbyPort}/vmoney?target_session_attrs=read-write`
    node = await spawnServer(
      [
        'node',
        '--data-dir',
        dataDir,
        '--database-url',
        url,
        '--port',
        String(nodePort),
        '--log-level',
        'error',
      ],
      'node',
    )
    const world = await seedDemo(node.url, join(dataDir, 'admin.key.json'), dataDir)
    const person = (name: string) => world.persons.find((p) => p.name === name)!
    const alice = readKeyFile(join(dataDir, 'demo', person('Alice').keyFile))
    const client = new NodeClient(node.url)
    await client.node()

    // Load from two clients until told to stop; a batch counts only once the node acknowledged it.
    const acknowledged = new Map<string, SignedTransaction>()
    const refusals = new Map<string, number>()
    let stop = false
    const load = Array.from({ length: 2 }, async () => {
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
        try {
          for (const outcome of await client.submit(batch))
            acknowledged.set(outcome.id, batch.find((s) => s.tx.id === outcome.id)!)
        } catch (error) {
          const code = (error as { code?: string }).code ?? 'unknown'
          refusals.set(code, (refusals.get(code) ?? 0) + 1)
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      }
    })
    await until('load acknowledged', async () => acknowledged.size >= 200)

    // The primary dies at once (no shutdown checkpoint); the standby is promoted.
    const postmasterPid = Number(readFileSync(join(primaryDir, 'postmaster.pid'), 'utf8').split('\n')[0])
    process.kill(postmasterPid, 'SIGKILL')
    const killedAt = acknowledged.size
    await pg('pg_ctl', ['-D', standbyDir, '-w', 'promote'])
    await until('the api answers from the new primary', async () => (await fetch(`${node!.url}/readyz`)).ok)
    await until(
      'load acknowledged after the failover',
      async () => acknowledged.size >= killedAt + 200,
      60_000,
    ).catch(async (error: unknown) => {
      const seen = `refusals ${JSON.stringify(Object.fromEntries(refusals))}, node output: ${node!.output()}`
      const metrics = await (await fetch(`${node!.url}/metrics`)).text()
      const lines = metrics
        .split('\n')
        .filter((l) => /^vmoney_(funnel|pool|http_requests|transactions)/.test(l))
      throw new Error(
        `${(error as Error).message}; acknowledged ${acknowledged.size} (${killedAt} at the kill); ${lines.join(' | ')}; ${seen}`,
      )
    })
    stop = true
    await Promise.all(load)

    // On the promoted server: every acknowledged transaction is in the pool and decided, the accepted ones
    // in the log once.
    const ids = [...acknowledged.keys()]
    const idList = ids.map((id) => `'${id}'`).join(',')
    let statuses = new Map<string, string>()
    await until(
      'every acknowledged transaction decided',
      async () => {
        const rows = await psql(standbyPort, `select id, status from pool where id in (${idList})`, 'vmoney')
        statuses = new Map(rows.split('\n').map((line) => line.split('|') as [string, string]))
        return [...statuses.values()].every((status) => status !== 'pending')
      },
      60_000,
    )
    assert.deepEqual(
      ids.filter((id) => !statuses.has(id)),
      [],
      'no acknowledged transaction was lost',
    )
    const inLog = Number(
      await psql(
        standbyPort,
        `select count(*) from chain_leaves where transaction_id in (${idList})`,
        'vmoney',
      ),
    )
    const accepted = [...statuses.values()].filter((status) => status === 'accepted').length
    assert.equal(inLog, accepted, 'each accepted one is in the log once')
    const audit = await runCli(['audit', '--data-dir', dataDir, '--database-url', url])
    assert.equal(audit.code, 0, audit.stdout + audit.stderr)
    process.stdout.write(
      `postgres failover: acknowledged ${ids.length} (${killedAt} before the kill), lost 0, refused while away: ${JSON.stringify(Object.fromEntries(refusals))}\n`,
    )
  } finally {
    if (node !== null) {
      node.child.kill('SIGTERM')
      await exited(node.child)
    }
    for (const dir of [standbyDir, primaryDir]) {
      if (existsSync(join(dir, 'postmaster.pid')))
        await pg('pg_ctl', ['-D', dir, '-m', 'immediate', 'stop']).catch(() => {})
    }
    rmSync(root, { recursive: true, force: true })
  }
})
