import { existsSync, readFileSync, statSync } from 'node:fs'
import type { Command } from 'commander'
import { NodeClient } from '../client/client.js'
import { readKeyFile, writeSecretFile } from '../client/key-file.js'
import { VmError } from '../protocol/errors.js'
import { publicJwk } from '../protocol/keys.js'
import { derivePasswordKeys } from '../protocol/password-key.js'
import type { DeviceKey } from '../protocol/transaction.js'
import {
  emptyState,
  formatState,
  parseState,
  type ReaderKeys,
  type VerifierState,
  type VerifyReport,
  verify,
} from '../verifier/index.js'
import { CliExit, exitCodes, print } from './output.js'
import { readPassword } from './password-prompt.js'

export const defaultStateFile = './vmoney-verify-state.json'
/** State files larger than this are refused unread. */
export const stateFileBytesMax = 1024 * 1024 * 1024
/** The progress bar appears only on runs longer than this, and redraws at most this often. */
export const progressDelayMs = 1_000
export const progressIntervalMs = 100

const defaultNode = process.env.VMONEY_NODE_URL ?? 'http://127.0.0.1:8080'
const defaultBrowser = process.env.VMONEY_BROWSER_URL ?? 'http://127.0.0.1:8081'
const personPattern = /^[0-9a-f]{32}$/

interface VerifyCommandOptions {
  node: string
  browser: string
  state: string
  full?: boolean
  key?: string
  password?: boolean
  person?: string
  json?: boolean
}

/** Reads the state file; a missing file is a first run, anything unreadable a usage error (exit 2). */
function readState(file: string): VerifierState {
  if (!existsSync(file)) return emptyState()
  let text: string
  try {
    if (statSync(file).size > stateFileBytesMax)
      throw new Error(`it is larger than ${stateFileBytesMax} bytes`)
    text = readFileSync(file, 'utf8')
  } catch (error) {
    throw new CliExit(exitCodes.usage, `cannot read the state file ${file}: ${(error as Error).message}`)
  }
  try {
    return parseState(text)
  } catch (error) {
    throw new CliExit(
      exitCodes.usage,
      `the state file ${file} is not a valid verifier state (${(error as Error).message}); it was left as it is: move it away to start over`,
    )
  }
}

async function readerKeys(options: VerifyCommandOptions): Promise<ReaderKeys | undefined> {
  if (options.key !== undefined && options.password === true)
    throw new CliExit(exitCodes.usage, 'use either --key or --password, not both')
  if (options.person !== undefined && options.password !== true)
    throw new CliExit(exitCodes.usage, '--person goes with --password')
  if (options.key !== undefined) {
    const keys = readKeyFile(options.key)
    return {
      ...(keys.person === undefined ? {} : { person: keys.person }),
      signing: keys.signing,
      encryption: keys.encryption,
    }
  }
  if (options.password !== true) return undefined
  if (options.person === undefined || !personPattern.test(options.person))
    throw new CliExit(exitCodes.usage, '--password needs --person <id>, 32 lowercase hex digits')
  const keys = await derivePasswordKeys(await readPassword('password: '), options.person)
  return { person: options.person, ...keys }
}

/** A bar on stderr, only at a terminal and only once a run takes longer than progressDelayMs. */
function progressBar(): { update: (done: number, total: number) => void; end: () => void } {
  const started = Date.now()
  let drawnAt = 0
  return {
    update(done, total) {
      const now = Date.now()
      if (!process.stderr.isTTY || now - started < progressDelayMs || now - drawnAt < progressIntervalMs)
        return
      drawnAt = now
      const width = 30
      const filled = Math.round((width * done) / Math.max(total, 1))
      process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} leaves`)
    },
    end() {
      if (drawnAt > 0) process.stderr.write('\r\u001b[K')
    },
  }
}

function humanReport(report: VerifyReport, stateNote: string): string {
  const lines = [
    `node ${report.node.url}${report.node.nodeId === null ? '' : ` (${report.node.nodeId})`}, browser ${report.browser.url}`,
    ...report.checks.map((check) => `${check.ok ? '✓' : '✗'} ${check.name}: ${check.detail}`),
  ]
  if (report.findings.length > 0) lines.push('findings:')
  for (const finding of report.findings) {
    lines.push(`  ${finding.severity === 'failure' ? '✗' : '·'} ${finding.message}`)
    const { leafHash, block } = finding
    if (finding.kind === 'split_view' && finding.leafIndex !== undefined) {
      lines.push(
        `      leaf ${finding.leafIndex}: node block ${block?.node ?? '?'}, browser block ${block?.browser ?? '?'}`,
        `      leaf hash at the node:    ${leafHash?.node ?? '(none)'}`,
        `      leaf hash at the browser: ${leafHash?.browser ?? '(none)'}`,
      )
    }
  }
  if (report.leavesPerSecond !== undefined) lines.push(`${report.leavesPerSecond} leaves/s re-hashed`)
  lines.push(
    report.ok
      ? `verified: log size ${report.checkpoint?.size}, root ${report.checkpoint?.root}${stateNote}`
      : `VERIFICATION FAILED: ${report.checks.filter((check) => !check.ok).length} checks failed${stateNote}`,
  )
  return lines.join('\n')
}

async function runVerify(options: VerifyCommandOptions): Promise<void> {
  const state = readState(options.state)
  const reader = await readerKeys(options)
  const progress = progressBar()
  let report: VerifyReport
  try {
    report = await verify({
      nodeUrl: options.node,
      browserUrl: options.browser,
      state,
      full: options.full === true,
      ...(reader === undefined ? {} : { reader }),
      onProgress: progress.update,
    })
  } catch (error) {
    if (error instanceof VmError && error.code === 'server_unreachable')
      throw new CliExit(exitCodes.unreachable, error.message)
    if (error instanceof VmError && error.code === 'answer_malformed')
      throw new CliExit(exitCodes.checkFailed, error.message)
    if (error instanceof VmError && error.code === 'key_refused')
      throw new CliExit(exitCodes.usage, `${error.message}: is it the right key or password, and registered?`)
    // Anything else a server answered (busy, refused, an error of its own) means the check did not pass.
    if (error instanceof VmError) throw new CliExit(exitCodes.checkFailed, error.message)
    throw error
  } finally {
    progress.end()
  }
  if (report.state !== null) writeSecretFile(options.state, formatState(report.state), true)
  const stateNote =
    report.state === null ? `; ${options.state} left as it was` : `; state kept in ${options.state}`
  const { state: _kept, ...shown } = report
  print(
    options.json === true,
    { ...shown, stateFile: options.state, stateWritten: report.state !== null },
    () => humanReport(report, stateNote),
  )
  if (!report.ok) throw new CliExit(exitCodes.checkFailed, 'verification failed')
}

/** `vmoney keys password`: registers the key derived from the person's password, for reads only. */
async function registerPasswordKey(options: { key: string; node: string; json?: boolean }): Promise<void> {
  const client = new NodeClient(options.node)
  const device = readKeyFile(options.key)
  const person =
    device.person ?? ((await client.get(device, `/v1/keys/${device.keyId}`)) as { person: string }).person
  const derived = await derivePasswordKeys(await readPassword('new password: ', true), person)
  const key: DeviceKey = {
    signing: publicJwk('Ed25519', derived.signing.publicKey) as DeviceKey['signing'],
    encryption: publicJwk('X25519', derived.encryption.publicKey) as NonNullable<DeviceKey['encryption']>,
    use: 'read',
    label: 'password',
  }
  const [outcome] = await client.submitAndWait(device, [
    await client.sign(device, { type: 'add_key', person, key }),
  ])
  print(options.json === true, outcome, () =>
    outcome?.status === 'accepted'
      ? `registered the password key of person ${person} (reads only) at leaf ${outcome.leafIndex}`
      : `not registered: ${outcome?.status} ${outcome?.code ?? ''}`,
  )
  if (outcome?.status !== 'accepted')
    throw new CliExit(exitCodes.checkFailed, 'the password key was not registered')
}

export function registerVerifyCommand(program: Command): void {
  program
    .command('verify')
    .description(
      'verify the node against a block browser: signed checkpoints, consistency with the last run, agreement; ' +
        'with --full every block; with a key or password, your transactions against what the node shows',
    )
    .option('--node <url>', 'node URL (env VMONEY_NODE_URL)', defaultNode)
    .option('--browser <url>', 'block browser URL (env VMONEY_BROWSER_URL)', defaultBrowser)
    .option(
      '--state <file>',
      'what earlier runs verified; written only when every check passes',
      defaultStateFile,
    )
    .option('--full', 'download and check every block, and compare every leaf of the node with the browser')
    .option('--key <file>', 'a key file: read, decrypt and compare your transactions')
    .option(
      '--password',
      `a password-derived key instead (env VMONEY_PASSWORD, a prompt, or stdin); needs --person`,
    )
    .option('--person <id>', 'the person the password belongs to')
    .option('--json', 'print JSON: {ok, node, browser, checkpoint, checks, findings, leavesPerSecond?}')
    .addHelpText(
      'after',
      '\nExit codes: 0 every check passed; 1 a check failed; 2 bad usage, state file or key; 3 a server is unreachable.',
    )
    .action(runVerify)

  const keys = program.commands.find((command) => command.name() === 'keys')
  if (keys === undefined) throw new Error('invariant violated: the keys command is registered before verify')
  keys
    .command('password')
    .description('register a key derived from your password, for reads only (vmoney verify --password)')
    .requiredOption('--key <file>', 'your device key file, which signs the registration')
    .option('--node <url>', 'node URL (env VMONEY_NODE_URL)', defaultNode)
    .option('--json', 'print JSON')
    .action(registerPasswordKey)
}
