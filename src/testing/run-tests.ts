/**
 * `npm test`: the whole suite once per database dialect, SQLite always and PostgreSQL when its server
 * answers (VMONEY_TEST_POSTGRES_URL, default the local one). A dialect that cannot run is named, with the
 * reason; `VMONEY_TEST_DIALECTS=sqlite,postgres` (as CI sets it) makes that a failure. Arguments, if any,
 * are the test files or folders to run instead of all of them.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import type { Dialect } from '../storage/connect.js'

const dialects: readonly Dialect[] = ['sqlite', 'postgres']
const postgresServer = process.env.VMONEY_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432'
const postgresProbeTimeoutMs = 3_000
/** Test files run two at a time (the machine's cores); none may run longer than this. */
const testConcurrency = 2
const testTimeoutMs = 300_000

function required(): Set<string> {
  const listed = (process.env.VMONEY_TEST_DIALECTS ?? '').split(',').filter((name) => name !== '')
  for (const name of listed) {
    if (!dialects.includes(name as Dialect))
      throw new Error(`VMONEY_TEST_DIALECTS names ${JSON.stringify(name)}: use ${dialects.join(', ')}`)
  }
  return new Set(listed)
}

async function withServer<T>(run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({
    connectionString: `${postgresServer}/postgres`,
    connectionTimeoutMillis: postgresProbeTimeoutMs,
  })
  await client.connect()
  try {
    return await run(client)
  } finally {
    await client.end()
  }
}

/** Why the dialect cannot run here, or null when it can. */
async function unavailable(dialect: Dialect): Promise<string | null> {
  if (dialect === 'sqlite') return null
  try {
    await withServer((client) => client.query('select 1'))
    return null
  } catch (error) {
    return `no PostgreSQL server answers at ${postgresServer} (${(error as Error).message}); set VMONEY_TEST_POSTGRES_URL`
  }
}

/** Drops the databases a run's tests left behind (a test killed midway cannot drop its own). */
async function dropLeftovers(prefix: string): Promise<void> {
  await withServer(async (client) => {
    const { rows } = await client.query<{ datname: string }>(
      'select datname from pg_database where starts_with(datname, $1)',
      [prefix],
    )
    for (const { datname } of rows) await client.query(`drop database if exists "${datname}" with (force)`)
  })
}

function runSuite(dialect: Dialect, prefix: string, paths: readonly string[]): Promise<number> {
  const child = spawn(
    process.execPath,
    ['--test', `--test-concurrency=${testConcurrency}`, `--test-timeout=${testTimeoutMs}`, ...paths],
    {
      stdio: 'inherit',
      env: { ...process.env, VMONEY_TEST_DIALECT: dialect, VMONEY_TEST_DATABASE_PREFIX: prefix },
    },
  )
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)))
}

async function main(): Promise<number> {
  const mustRun = required()
  const paths = process.argv.length > 2 ? process.argv.slice(2) : ['dist/src', 'dist/e2e']
  const summary: string[] = []
  let failed = false
  for (const dialect of dialects) {
    const reason = await unavailable(dialect)
    if (reason !== null) {
      summary.push(`${dialect}: SKIPPED: ${reason}`)
      if (mustRun.has(dialect)) failed = true
      continue
    }
    process.stdout.write(`\n# the suite on ${dialect}\n`)
    const prefix = `vmoney_test_${randomBytes(4).toString('hex')}_`
    const code = await runSuite(dialect, prefix, paths)
    if (dialect === 'postgres') await dropLeftovers(prefix)
    summary.push(`${dialect}: ${code === 0 ? 'passed' : `FAILED (exit code ${code})`}`)
    if (code !== 0) failed = true
  }
  process.stdout.write(`\n# dialects\n${summary.map((line) => `# ${line}`).join('\n')}\n`)
  return failed ? 1 : 0
}

process.exitCode = await main()
