import { Worker } from 'node:worker_threads'
import { VmError } from '../../protocol/errors.js'
import type { PoolRow, SubmissionResult } from '../pool/pool.js'
import type { FunnelEvent } from './funnel.js'
import type { WriterInit, WriterRequest } from './writer-thread.js'

type WriterMessage =
  | { readonly type: 'ready' }
  | { readonly type: 'stopped' }
  | { readonly type: 'funnel'; readonly event: FunnelEvent }
  | {
      readonly type: 'written'
      readonly id: number
      readonly results?: SubmissionResult[]
      readonly error?: string
    }

/** How long the writer thread may take to load the ledger at start. */
export const writerStartTimeoutMs = 120_000

/** The api's handle on the writer thread (see writer-thread.ts). */
export class Writer {
  readonly #worker: Worker
  readonly #writes = new Map<
    number,
    { resolve(results: SubmissionResult[]): void; reject(error: unknown): void }
  >()
  #nextId = 1
  #stopped: (() => void) | null = null

  private constructor(worker: Worker) {
    this.#worker = worker
  }

  /**
   * Starts the thread and resolves once the funnel has loaded its state. `onEvent` hears every commit and
   * failure; `onFatal` hears that the thread died, after which the node cannot write and must stop.
   */
  static start(
    init: WriterInit,
    onEvent: (event: FunnelEvent) => void,
    onFatal: (error: Error) => void,
  ): Promise<Writer> {
    const worker = new Worker(new URL('./writer-thread.js', import.meta.url), { workerData: init })
    const writer = new Writer(worker)
    return new Promise((resolve, reject) => {
      let ready = false
      const timer = setTimeout(
        () => reject(new Error('the writer thread did not start in time')),
        writerStartTimeoutMs,
      )
      worker.on('message', (message: WriterMessage) => {
        if (message.type === 'ready') {
          ready = true
          clearTimeout(timer)
          resolve(writer)
        } else if (message.type === 'funnel') {
          onEvent(message.event)
        } else if (message.type === 'written') {
          const waiter = writer.#writes.get(message.id)
          writer.#writes.delete(message.id)
          if (message.results !== undefined) waiter?.resolve(message.results)
          else
            waiter?.reject(
              new VmError('storage_unavailable', message.error ?? 'pool write failed', { status: 503 }),
            )
        } else {
          writer.#stopped?.()
        }
      })
      const died = (error: Error) => {
        for (const waiter of writer.#writes.values()) waiter.reject(error)
        writer.#writes.clear()
        if (writer.#stopped !== null) return
        clearTimeout(timer)
        if (ready) onFatal(error)
        else reject(error)
      }
      worker.on('error', died)
      worker.on('exit', (code) => {
        if (writer.#stopped === null) died(new Error(`the writer thread exited with code ${code}`))
      })
    })
  }

  write(submissions: readonly (readonly PoolRow[])[]): Promise<SubmissionResult[]> {
    const id = this.#nextId++
    return new Promise((resolve, reject) => {
      this.#writes.set(id, { resolve, reject })
      this.#worker.postMessage({ type: 'write', id, submissions } satisfies WriterRequest)
    })
  }

  /** Lets the funnel finish its step, closes the connection, and ends the thread. */
  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#stopped = resolve
      this.#worker.postMessage({ type: 'stop' } satisfies WriterRequest)
    })
    await this.#worker.terminate()
  }
}
