import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import type { Counter, Gauge } from 'prom-client'
import { blockFromRaw } from '../protocol/block.js'
import { VmError } from '../protocol/errors.js'
import { blockAt, latestBlock } from './chain/chain-store.js'
import type { Database } from './storage/schema.js'
import { WakeableSleep } from './wakeable-sleep.js'

/** One push or head query; a browser that takes longer is retried. */
export const publishTimeoutMs = 10_000
/** Failed pushes back off exponentially up to this. */
export const publishBackoffMsMax = 30_000
/** How long a publisher with nothing to push sleeps before it checks again (a commit wakes it sooner). */
export const publishIdleMs = 1_000

export interface PublisherMetrics {
  readonly published: Counter<'browser'>
  readonly failures: Counter<'browser' | 'code'>
  readonly lag: Gauge<'browser'>
}

/**
 * Publishes every block to one block browser right after its commit (seed 000 F6). The outbox is the
 * chain itself: every block is durable before it is published, and the browser's own head is the
 * acknowledgement. So after a restart of either side the publisher asks the browser where it stands and
 * goes on from there, and a block is never lost or skipped. Pushes are in height order, one at a time.
 */
export class Publisher {
  readonly #db: Kysely<Database>
  readonly #browser: string
  readonly #nodeId: string
  readonly #log: Logger
  readonly #metrics: PublisherMetrics
  /** The next height the browser needs; null until the browser said where it stands. */
  #next: number | null = null
  #stopping = false
  readonly #sleeper = new WakeableSleep()
  #running: Promise<void> | null = null
  readonly #abort = new AbortController()

  constructor(options: {
    db: Kysely<Database>
    browser: string
    nodeId: string
    log: Logger
    metrics: PublisherMetrics
  }) {
    this.#db = options.db
    this.#browser = options.browser
    this.#nodeId = options.nodeId
    this.#log = options.log.child({ browser: options.browser })
    this.#metrics = options.metrics
  }

  start(): void {
    this.#running = this.#run()
  }

  /** A block was committed: push it now. */
  wake(): void {
    this.#sleeper.wake()
  }

  async stop(): Promise<void> {
    this.#stopping = true
    this.#abort.abort()
    this.wake()
    await this.#running
  }

  async #run(): Promise<void> {
    let failures = 0
    while (!this.#stopping) {
      try {
        const pushed = await this.#step()
        failures = 0
        if (!pushed) await this.#sleeper.sleep(publishIdleMs)
      } catch (error) {
        if (this.#stopping) break
        failures++
        const code = error instanceof VmError ? error.code : 'unreachable'
        this.#metrics.failures.inc({ browser: this.#browser, code })
        const level = code === 'block_rewrite' ? 'error' : 'warn'
        this.#log[level]({ err: error, failures }, 'publishing to the block browser failed; retrying')
        // After any failure, ask the browser again where it stands: it may have pulled blocks meanwhile.
        this.#next = null
        await this.#sleeper.sleep(Math.min(publishBackoffMsMax, 100 * 2 ** failures))
      }
    }
  }

  /** Pushes the next block if the browser lacks it. Returns whether there was one. */
  async #step(): Promise<boolean> {
    this.#next ??= await this.#browserNext()
    const head = await latestBlock(this.#db)
    const headHeight = head?.header.height ?? -1
    this.#metrics.lag.set({ browser: this.#browser }, Math.max(0, headHeight + 1 - this.#next))
    if (this.#next > headHeight) return false
    const block = await blockAt(this.#db, this.#next)
    if (block === null) throw new VmError('internal', `block ${this.#next} is missing`, { status: 500 })
    const response = await this.#fetch('/v1/blocks', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(blockFromRaw(block)),
    })
    if (response.ok) {
      this.#metrics.published.inc({ browser: this.#browser })
      this.#next++
      return true
    }
    const problem = (await response.json().catch(() => ({}))) as {
      code?: string
      detail?: string
      expected?: number
    }
    if (problem.code === 'block_height_gap' && typeof problem.expected === 'number') {
      // The browser stands elsewhere (it pulled blocks itself, or was restored): go on from where it is.
      this.#next = problem.expected
      return true
    }
    throw new VmError(
      problem.code ?? `http_${response.status}`,
      `the browser refused block ${this.#next}: ${problem.detail ?? response.statusText}`,
      { status: 502 },
    )
  }

  /** The first height the browser does not hold yet. */
  async #browserNext(): Promise<number> {
    const response = await this.#fetch(`/n/${this.#nodeId}/v1/blocks`, { method: 'GET' })
    if (response.status === 404) {
      const problem = (await response.json().catch(() => ({}))) as { code?: string }
      if (problem.code === 'log_empty') return 0
      throw new VmError('node_not_followed', `the browser does not follow node ${this.#nodeId}`, {
        status: 502,
      })
    }
    if (!response.ok) throw new VmError(`http_${response.status}`, 'the browser did not tell its head')
    const head = (await response.json()) as { header: { height: number } }
    return head.header.height + 1
  }

  #fetch(path: string, init: RequestInit): Promise<Response> {
    return fetch(`${this.#browser}${path}`, {
      ...init,
      signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(publishTimeoutMs)]),
    })
  }
}
