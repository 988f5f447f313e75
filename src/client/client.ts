import { VmError } from '../protocol/errors.js'
import { type RequestTarget, signRequest } from '../protocol/http-signature.js'
import {
  newId,
  nowTimestamp,
  type SignedTransaction,
  signTransaction,
  type Transaction,
} from '../protocol/transaction.js'
import { readEventStream, type StreamEvent } from './event-stream.js'
import type { DeviceKeys } from './key-file.js'
import { answerBytesMax, readBounded } from './read-bounded.js'

export interface Outcome {
  readonly id: string
  readonly status: 'pending' | 'accepted' | 'rejected'
  readonly code?: string
  readonly codeNumber?: number
  readonly blockHeight?: number
  readonly leafIndex?: number
}

export interface NodeInfo {
  readonly nodeId: string
  readonly origin: string
  readonly noteVerifierKey: string
}

/** Distributes `Omit` over the transaction union, so each kind keeps its own fields. */
type TransactionBody<T = Transaction> = T extends Transaction
  ? Omit<T, 'v' | 'id' | 'node' | 'created' | 'signer'>
  : never

/** What an RFC 9421 signature covers of a request to this absolute URL. */
export function requestTarget(method: string, absoluteUrl: string): RequestTarget {
  const url = new URL(absoluteUrl)
  return { method, authority: url.host, url: url.pathname + url.search }
}

/** The request body for one signed transaction or a batch. */
export function encodeSubmission(transactions: readonly SignedTransaction[]): string {
  return JSON.stringify(transactions.length === 1 ? transactions[0] : { transactions })
}

/** How often, and how long at most each time, a client waits when the node pushes back. */
export const pushBackRetriesMax = 3
export const pushBackWaitSecondsMax = 5

/** Client requests give up after this long. */
export const clientTimeoutMs = 60_000

/** The TypeScript SDK: builds and signs transactions, submits them, and makes signed reads. */
export class NodeClient {
  readonly baseUrl: string
  #node: NodeInfo | undefined

  constructor(baseUrl: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, '')
  }

  async node(): Promise<NodeInfo> {
    this.#node ??= (await this.#request('GET', '/v1/node')) as NodeInfo
    return this.#node
  }

  /** Builds and signs a transaction of this node with a fresh id. */
  async sign(
    keys: DeviceKeys,
    body: TransactionBody,
    options: { id?: string } = {},
  ): Promise<SignedTransaction> {
    const { nodeId } = await this.node()
    const tx = {
      v: 1,
      id: options.id ?? newId(),
      node: nodeId,
      created: nowTimestamp(),
      signer: keys.keyId,
      ...body,
    } as Transaction
    return signTransaction(tx, keys.signing.secretKey)
  }

  async submit(transactions: readonly SignedTransaction[], waitMs = 0): Promise<Outcome[]> {
    return this.submitEncoded(encodeSubmission(transactions), waitMs)
  }

  /** Submits a body made by `encodeSubmission`: clients that send a lot serialize ahead of time. */
  async submitEncoded(body: string, waitMs = 0): Promise<Outcome[]> {
    const query = waitMs > 0 ? `?wait=${Math.min(waitMs, 30_000)}` : ''
    const result = (await this.#request('POST', `/v1/transactions${query}`, body)) as {
      transactions: Outcome[]
    }
    return result.transactions
  }

  /** Submits and waits for finality until `timeoutMs`. */
  async submitAndWait(
    keys: DeviceKeys,
    transactions: readonly SignedTransaction[],
    timeoutMs = 30_000,
  ): Promise<Outcome[]> {
    const deadline = Date.now() + timeoutMs
    return this.awaitFinal(keys, await this.submit(transactions, timeoutMs), deadline)
  }

  /** Long-polls every pending outcome (reads signed by `keys`) until it is final or `deadline` passes. */
  async awaitFinal(keys: DeviceKeys, outcomes: readonly Outcome[], deadline: number): Promise<Outcome[]> {
    return Promise.all(
      outcomes.map(async (outcome) => {
        let current = outcome
        while (current.status === 'pending' && Date.now() < deadline) {
          const wait = Math.min(30_000, deadline - Date.now())
          current = (await this.get(keys, `/v1/transactions/${outcome.id}?wait=${wait}`)) as Outcome
        }
        return current
      }),
    )
  }

  /** A read signed with a device key (RFC 9421). */
  async get(keys: DeviceKeys, path: string): Promise<unknown> {
    return this.#request(
      'GET',
      path,
      undefined,
      signRequest(requestTarget('GET', this.baseUrl + path), keys.keyId, keys.signing.secretKey),
    )
  }

  /**
   * The changefeed (`GET /v1/changes` as Server-Sent Events), signed with a device key: yields events until
   * the server ends the stream or `signal` aborts. Resume with the last event's id as `after`.
   */
  async *changes(
    keys: DeviceKeys,
    options: { accounts?: readonly string[]; all?: boolean; after?: string; signal?: AbortSignal } = {},
  ): AsyncGenerator<StreamEvent> {
    const query = new URLSearchParams()
    for (const account of options.accounts ?? []) query.append('account', account)
    if (options.all === true) query.set('all', 'true')
    if (options.after !== undefined) query.set('after', options.after)
    const path = `/v1/changes${query.size > 0 ? `?${query}` : ''}`
    let response: Response
    try {
      response = await fetch(this.baseUrl + path, {
        headers: {
          accept: 'text/event-stream',
          ...signRequest(requestTarget('GET', this.baseUrl + path), keys.keyId, keys.signing.secretKey),
        },
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      })
    } catch (error) {
      throw new VmError('node_unreachable', `cannot reach ${this.baseUrl}: ${(error as Error).message}`, {
        status: 503,
        cause: error,
      })
    }
    if (!response.ok || response.body === null) {
      const problem = (await response.json().catch(() => ({}))) as { code?: string; detail?: string }
      throw new VmError(problem.code ?? 'http_error', problem.detail ?? `GET ${path}: ${response.status}`, {
        status: response.status,
      })
    }
    yield* readEventStream(response.body)
  }

  async publicGet(path: string): Promise<unknown> {
    return this.#request('GET', path)
  }

  async checkpoint(): Promise<string> {
    return (await this.#request('GET', '/v1/log/checkpoint')) as string
  }

  /**
   * One HTTP exchange. A node that pushes back (429 or 503 with Retry-After) is asked again, a bounded
   * number of times: safe for every request here, since reads change nothing and transactions are
   * idempotent by id.
   */
  async #request(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#exchange(method, path, body, headers)
      } catch (error) {
        const retryAfter = error instanceof VmError ? error.detail?.['retryAfterSeconds'] : undefined
        if (typeof retryAfter !== 'number' || attempt >= pushBackRetriesMax) throw error
        await new Promise((resolve) =>
          setTimeout(resolve, Math.min(retryAfter, pushBackWaitSecondsMax) * 1000),
        )
      }
    }
  }

  async #exchange(
    method: string,
    path: string,
    body: unknown,
    headers: Record<string, string>,
  ): Promise<unknown> {
    let response: Response
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
        signal: AbortSignal.timeout(clientTimeoutMs),
      })
    } catch (error) {
      throw new VmError('node_unreachable', `cannot reach ${this.baseUrl}: ${(error as Error).message}`, {
        status: 503,
        cause: error,
      })
    }
    const type = response.headers.get('content-type') ?? ''
    let payload: unknown
    try {
      // Bounded: a node that answers without end must not exhaust this process.
      const text = await readBounded(response, answerBytesMax)
      payload = type.includes('json') ? JSON.parse(text) : text
    } catch (error) {
      if (error instanceof VmError) throw error
      throw new VmError('node_unreachable', `${method} ${path}: the answer was cut off or is not JSON`, {
        status: 502,
        cause: error,
      })
    }
    if (!response.ok) {
      const problem = (typeof payload === 'object' && payload !== null ? payload : {}) as {
        code?: string
        detail?: string
      }
      const retryAfter = Number(response.headers.get('retry-after'))
      const pushedBack = (response.status === 429 || response.status === 503) && retryAfter > 0
      throw new VmError(
        problem.code ?? 'http_error',
        problem.detail ?? `${method} ${path} answered ${response.status}`,
        {
          status: response.status,
          detail: {
            ...(problem as Record<string, unknown>),
            ...(pushedBack ? { retryAfterSeconds: retryAfter } : {}),
          },
        },
      )
    }
    return payload
  }
}
