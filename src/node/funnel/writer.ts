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
/** How long a stop waits for the thread to finish its step and close the database before ending it. */
export const writerStopTimeoutMs = 30_000

/** The api's handle on the writer thread (see writer-thread.ts). */
export class Writer {
  readonly #worker: Worker
  readonly #writes = new Map<
    number,
    { resolve(results: SubmissionResult[]): void; reject(error: unknown): void }
  >()
  #nextId = 1
  #stopping = false
  #exited = false
  #onStopped: (() => void) | null = null

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
      const timer = setTimeout(() => {
        reject(
          new VmError('writer_start_timeout', 'the writer thread did not load the ledger in time', {
            status: 500,
          }),
        )
        void worker.terminate()
      }, writerStartTimeoutMs)
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
          writer.#onStopped?.()
        }
      })
      const died = (error: Error) => {
        clearTimeout(timer)
        writer.#failWrites(error)
        writer.#onStopped?.()
        if (writer.#stopping) return
        if (ready) onFatal(error)
        else reject(error)
      }
      worker.on('error', died)
      worker.on('exit', (code) => {
        writer.#exited = true
        died(new Error(`the writer thread exited with code ${code}`))
      })
    })
  }

  write(submissions: readonly (readonly PoolRow[])[]): Promise<SubmissionResult[]> {
    if (this.#stopping) {
      return Promise.reject(new VmError('storage_unavailable', 'the node is stopping', { status: 503 }))
    }
    const id = this.#nextId++
    return new Promise((resolve, reject) => {
      this.#writes.set(id, { resolve, reject })
      this.#worker.postMessage({ type: 'write', id, submissions } satisfies WriterRequest)
    })
  }

  /** Lets the thread finish its writes and its step, close the connection, and end; bounded in time. */
  async stop(): Promise<void> {
    if (this.#stopping) return
    this.#stopping = true
    if (!this.#exited) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, writerStopTimeoutMs)
        this.#onStopped = () => {
          clearTimeout(timer)
          resolve()
        }
        this.#worker.postMessage({ type: 'stop' } satisfies WriterRequest)
      })
    }
    await this.#worker.terminate()
    this.#failWrites(new VmError('storage_unavailable', 'the node stopped', { status: 503 }))
  }

  #failWrites(error: unknown): void {
    for (const waiter of this.#writes.values()) waiter.reject(error)
    this.#writes.clear()
  }
}
