import { VmError } from '../protocol/errors.js'

/** Exit codes, documented in the README and `vmoney --help`. */
export const exitCodes = {
  ok: 0,
  /** A check failed: a transaction was rejected, an audit or a proof did not verify. */
  checkFailed: 1,
  /** Bad usage: unknown flag, missing argument, invalid value. */
  usage: 2,
  /** The server (or the database server, at start) could not be reached. */
  unreachable: 3,
  /** The server refused the request (4xx problem). */
  refused: 4,
  /** Anything else: a bug or an unexpected failure. */
  internal: 5,
} as const

export class CliExit extends Error {
  readonly exitCode: number
  constructor(exitCode: number, message: string) {
    super(message)
    this.exitCode = exitCode
  }
}

export function print(json: boolean, value: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`)
}

/** Maps any failure to a message on stderr and a documented exit code. */
export function exitCodeOf(error: unknown): { code: number; message: string } {
  if (error instanceof CliExit) return { code: error.exitCode, message: error.message }
  if (error instanceof VmError) {
    if (error.code === 'node_unreachable' || error.code === 'server_unreachable')
      return { code: exitCodes.unreachable, message: error.message }
    if (error.code === 'database_unreachable')
      return { code: exitCodes.unreachable, message: `${error.code}: ${error.message}` }
    // A block the browser holds that does not extend the node's chain is a failed check.
    if (error.code === 'replay_refused')
      return { code: exitCodes.checkFailed, message: `${error.code}: ${error.message}` }
    if (error.code === 'database_refused' || error.code === 'database_url_unsupported')
      return { code: exitCodes.usage, message: `${error.code}: ${error.message}` }
    if (error.status >= 400 && error.status < 500 && error.detail?.['requestId'] !== undefined) {
      return { code: exitCodes.refused, message: `refused (${error.code}): ${error.message}` }
    }
    // Local failures of the machine or its setup (a port taken, a database away) are not usage errors.
    const code = error.status >= 500 ? exitCodes.internal : exitCodes.usage
    return { code, message: `${error.code}: ${error.message}` }
  }
  return {
    code: exitCodes.internal,
    message: `unexpected failure: ${(error as Error).stack ?? String(error)}`,
  }
}
