import type { Worker } from 'node:worker_threads'
import { VmError } from '../protocol/errors.js'

/** What a worker answers: the job's id and its result, or why it failed. */
export type WorkerReply<R> = { readonly id: number } & (
  | { readonly result: R }
  | { readonly error: { readonly code: string; readonly message: string; readonly status: number } }
)

interface Waiter<R> {
  resolve(result: R): void
  reject(error: unknown): void
}

interface Slot<R> {
  /** Null after the thread failed, until the next job starts another. */
  worker: Worker | null
  readonly waiting: Map<number, Waiter<R>>
}

/**
 * Jobs run on worker threads, each job on the thread with the fewest waiting, answered by id. A thread
 * that fails or exits fails the jobs it holds and is replaced when the next job comes (a thread that
 * cannot start then fails that job, and never spins). Idle threads do not keep the process alive; busy
 * ones do. Threads start at once, so that their start overlaps the caller's own.
 */
export class WorkerJobs<J, R> {
  readonly #spawnWorker: () => Worker
  readonly #name: string
  readonly #slots: Slot<R>[] = []
  #nextId = 1
  #closed = false

  constructor(name: string, spawn: () => Worker, threads = 1) {
    this.#name = name
    this.#spawnWorker = spawn
    for (let i = 0; i < threads; i++) {
      const slot: Slot<R> = { worker: null, waiting: new Map() }
      this.#spawn(slot)
      this.#slots.push(slot)
    }
  }

  /** Jobs sent and not yet answered, on all threads. */
  get pending(): number {
    return this.#slots.reduce((sum, slot) => sum + slot.waiting.size, 0)
  }

  /** Runs `job` on a thread; what `transfer` names moves there without a copy. */
  run(job: J, transfer: readonly ArrayBuffer[] = []): Promise<R> {
    if (this.#closed)
      return Promise.reject(new VmError('internal', `the ${this.#name} is closed`, { status: 500 }))
    const slot = this.#slots.reduce((least, slot) => (slot.waiting.size < least.waiting.size ? slot : least))
    const worker = slot.worker ?? this.#spawn(slot)
    const id = this.#nextId++
    return new Promise<R>((resolve, reject) => {
      try {
        worker.postMessage({ id, job }, transfer as ArrayBuffer[])
      } catch (error) {
        // Nothing was sent (a value that cannot be copied or moved): the job fails alone.
        reject(error)
        return
      }
      slot.waiting.set(id, { resolve, reject })
      worker.ref()
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    await Promise.all(this.#slots.map((slot) => this.#stop(slot, `the ${this.#name} is closed`)))
  }

  /** For tests: ends one thread as a crash would. */
  async crashOne(): Promise<void> {
    const slot = this.#slots[0]
    if (slot !== undefined) await this.#stop(slot, `the ${this.#name} exited`)
  }

  /**
   * Ends a slot's thread and fails the jobs it holds. The thread is held by the event loop until it is
   * gone (an idle, unreferenced one would never report its end), and nothing unreferences it meanwhile.
   */
  async #stop(slot: Slot<R>, reason: string): Promise<void> {
    const worker = slot.worker
    if (worker === null) return
    this.#drop(slot, new VmError('internal', reason, { status: 500 }))
    worker.ref()
    await worker.terminate()
  }

  /** The slot has no thread any more: its jobs fail with `error`, and the next job starts a thread. */
  #drop(slot: Slot<R>, error: unknown): void {
    slot.worker = null
    for (const waiter of slot.waiting.values()) waiter.reject(error)
    slot.waiting.clear()
  }

  #spawn(slot: Slot<R>): Worker {
    const worker = this.#spawnWorker()
    slot.worker = worker
    worker.unref()
    worker.on('message', (reply: WorkerReply<R>) => {
      if (slot.worker !== worker) return
      const waiter = slot.waiting.get(reply.id)
      slot.waiting.delete(reply.id)
      if (slot.waiting.size === 0) worker.unref()
      if ('error' in reply) {
        const { code, message, status } = reply.error
        waiter?.reject(new VmError(code, message, { status }))
      } else waiter?.resolve(reply.result)
    })
    const fail = (error: unknown) => {
      if (slot.worker === worker) this.#drop(slot, error)
    }
    worker.on('error', fail)
    worker.on('exit', (code) =>
      fail(new VmError('internal', `the ${this.#name} exited with ${code}`, { status: 500 })),
    )
    return worker
  }
}

/** The worker's side: answers each job with `handle`'s result (moving what it names) or its error. */
export function serveWorkerJobs<J, R>(
  port: {
    on(event: 'message', listener: (message: { id: number; job: J }) => void): unknown
    postMessage(message: unknown, transfer?: ArrayBuffer[]): void
  },
  handle: (job: J) => { result: R; transfer?: ArrayBuffer[] },
): void {
  port.on('message', ({ id, job }) => {
    let answer: { result: R; transfer?: ArrayBuffer[] }
    try {
      answer = handle(job)
    } catch (error) {
      // A VmError keeps its code across the thread; anything else is an internal failure.
      const { code, status } = error instanceof VmError ? error : { code: 'internal', status: 500 }
      port.postMessage({
        id,
        error: { code, status, message: (error as Error).message },
      } satisfies WorkerReply<R>)
      return
    }
    port.postMessage({ id, result: answer.result } satisfies WorkerReply<R>, answer.transfer ?? [])
  })
}
