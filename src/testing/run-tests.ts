/**
 * `npm test`: the whole suite once per database dialect: SQLite always, PostgreSQL and MySQL (or MariaDB)
 * when their servers answer (VMONEY_TEST_POSTGRES_URL, VMONEY_TEST_MYSQL_URL; by default the local ones,
 * as administrators). A dialect that cannot run is named, with the reason;
 * `VMONEY_TEST_DIALECTS=sqlite,postgres,mysql` (as CI sets it) makes that a failure. Arguments, if any,
 * are the test files or folders to run instead of all of them.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import type { Dialect } from '../storage/connect.js'
import { onTestServer, testMysqlServer, testPostgresServer } from './databases.js'

const dialects: readonly Dialect[] = ['sqlite', 'postgres', 'mysql']
const serverProbeTimeoutMs = 3_000
/**
 * Test files run two at a time (the machine's cores); none may run longer than this: the crash campaign's
 * ten runs, each starting three processes on a fresh database, are the longest.
 */
const testConcurrency = 2
const testTimeoutMs = 600_000
/** Failed tests repeated at the end of the run (where a shortened log still shows them), each cut short. */
const failuresShownMax = 20
const failureLinesMax = 40

function required(): Set<string> {
  const listed = (process.env.VMONEY_TEST_DIALECTS ?? '').split(',').filter((name) => name !== '')
  for (const name of listed) {
    if (!dialects.includes(name as Dialect))
      throw new Error(`VMONEY_TEST_DIALECTS names ${JSON.stringify(name)}: use ${dialects.join(', ')}`)
  }
  return new Set(listed)
}

/** Why the dialect cannot run here, or null when it can. */
async function unavailable(dialect: Dialect): Promise<string | null> {
  if (dialect === 'sqlite') return null
  const [server, variable] =
    dialect === 'postgres'
      ? [testPostgresServer, 'VMONEY_TEST_POSTGRES_URL']
      : [testMysqlServer, 'VMONEY_TEST_MYSQL_URL']
  try {
    await onTestServer(dialect, async (run) => void (await run('select 1')), serverProbeTimeoutMs)
    return null
  } catch (error) {
    return `no ${dialect} server answers at ${server} (${(error as Error).message}); set ${variable}`
  }
}

/** Drops the databases a run's tests left behind (a test killed midway cannot drop its own). */
async function dropLeftovers(dialect: Exclude<Dialect, 'sqlite'>, prefix: string): Promise<void> {
  await onTestServer(dialect, async (run) => {
    const listing =
      dialect === 'postgres'
        ? 'select datname as name from pg_database where starts_with(datname, $1)'
        : `select schema_name as name from information_schema.schemata where left(schema_name, ${prefix.length}) = ?`
    const rows = (await run(listing, [prefix])) as { name: string }[]
    for (const { name } of rows)
      await run(
        dialect === 'postgres'
          ? `drop database if exists "${name}" with (force)`
          : `drop database if exists \`${name}\``,
      )
  })
}

interface SuiteOutcome {
  readonly code: number
  /** The TAP lines of each failed test: its "not ok" line and the block that says why. */
  readonly failures: readonly string[][]
}

function runSuite(dialect: Dialect, prefix: string, paths: readonly string[]): Promise<SuiteOutcome> {
  const child = spawn(
    process.execPath,
    ['--test', `--test-concurrency=${testConcurrency}`, `--test-timeout=${testTimeoutMs}`, ...paths],
    {
      stdio: ['inherit', 'pipe', 'inherit'],
      env: { ...process.env, VMONEY_TEST_DIALECT: dialect, VMONEY_TEST_DATABASE_PREFIX: prefix },
    },
  )
  child.stdout.pipe(process.stdout)
  const failures: string[][] = []
  // A failed test's block ends with "..." at the indentation of its "not ok" line, plus two.
  let open: { lines: string[]; end: string } | null = null
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (open !== null) {
      if (open.lines.length < failureLinesMax) open.lines.push(line)
      if (line === open.end) open = null
      return
    }
    const failed = /^(\s*)not ok \d+ - /.exec(line)
    if (failed === null || failures.length === failuresShownMax) return
    open = { lines: [line], end: `${failed[1]}  ...` }
    failures.push(open.lines)
  })
  return new Promise((resolve) => child.once('close', (code) => resolve({ code: code ?? 1, failures })))
}

async function main(): Promise<number> {
  const mustRun = required()
  const paths = process.argv.length > 2 ? process.argv.slice(2) : ['dist/src', 'dist/e2e']
  const summary: string[] = []
  const failureReports: string[] = []
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
    const { code, failures } = await runSuite(dialect, prefix, paths)
    if (dialect !== 'sqlite') await dropLeftovers(dialect, prefix)
    summary.push(`${dialect}: ${code === 0 ? 'passed' : `FAILED (exit code ${code})`}`)
    if (code !== 0) failed = true
    if (failures.length > 0)
      failureReports.push(
        `\n# what failed on ${dialect}\n${failures.map((lines) => lines.join('\n')).join('\n')}\n`,
      )
  }
  process.stdout.write(failureReports.join(''))
  process.stdout.write(`\n# dialects\n${summary.map((line) => `# ${line}`).join('\n')}\n`)
  return failed ? 1 : 0
}

process.exitCode = await main()
