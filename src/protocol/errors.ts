/**
 * One error base class for every expected failure, with a stable machine-readable `code`.
 * Programmer errors are not VmErrors: they fail an assertion and stop the process.
 */
export class VmError extends Error {
  readonly code: string
  readonly status: number
  readonly detail: Readonly<Record<string, unknown>> | undefined

  constructor(
    code: string,
    message: string,
    options: { status?: number; detail?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'VmError'
    this.code = code
    this.status = options.status ?? 400
    this.detail = options.detail
  }
}

/** Fails loudly on a broken invariant: a bug, never a client's mistake. */
export function assert(condition: unknown, message = 'assertion failed'): asserts condition {
  if (!condition) throw new Error(`invariant violated: ${message}`)
}
