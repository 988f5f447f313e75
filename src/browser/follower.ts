import { type BlockHeader, headerHash, validateHeader } from '../protocol/block.js'
import { toBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { raiseAlarm } from './alarms.js'
import { storedHead, storedHeaderAt } from './browser-store.js'
import type { BrowserContext } from './context.js'
import type { FollowedNodeInfo } from './followed-nodes.js'
import { blockBodyBytesMax } from './routes.js'

/** How often a follower asks its node for new blocks when nothing tells it sooner. */
export const pullIntervalMs = 5_000
/** Every request to the node gives up after this long. */
export const fetchTimeoutMs = 30_000
/** After a failure the follower waits this long, doubling up to the bound. */
export const backoffInitialMs = 1_000
export const backoffMaxMs = 60_000
/** Blocks fetched in one pull before the follower looks up the head again (and goes on at once). */
export const blocksPerPullMax = 1_000
/** `GET /v1/node` and `GET /v1/blocks` answers are small. */
export const smallAnswerBytesMax = 64 * 1024

export interface FollowerTiming {
  readonly pullIntervalMs: number
  readonly backoffInitialMs: number
  readonly backoffMaxMs: number
  readonly fetchTimeoutMs: number
}

export const defaultFollowerTiming: FollowerTiming = {
  pullIntervalMs,
  backoffInitialMs,
  backoffMaxMs,
  fetchTimeoutMs,
}

interface SignedHead {
  readonly header: BlockHeader
  readonly signature: string
}

/**
 * Pulls what a browser missed from one node, through the same acceptor as pushed blocks: on start,
 * every pull interval, and at once when a pushed block leaves a gap. It first checks that the node
 * signs with the configured key; if not it raises an alarm and never pulls from it.
 */
export class Follower {
  readonly #node: FollowedNodeInfo
  readonly #context: BrowserContext
  readonly #timing: FollowerTiming
  readonly #stop = new AbortController()
  #pullRequested = false
  #wake: (() => void) | undefined
  #running: Promise<void> = Promise.resolve()

  constructor(
    node: FollowedNodeInfo,
    context: BrowserContext,
    timing: FollowerTiming = defaultFollowerTiming,
  ) {
    this.#node = node
    this.#context = context
    this.#timing = timing
  }

  start(): void {
    this.#running = this.#run()
  }

  /** Pull as soon as the current pull (if any) is done. */
  pullNow(): void {
    this.#pullRequested = true
    this.#wake?.()
  }

  /** Stops promptly: aborts the request in flight and waits for the loop to end. */
  async close(): Promise<void> {
    this.#stop.abort()
    this.#wake?.()
    await this.#running
  }

  get #closed(): boolean {
    return this.#stop.signal.aborted
  }

  async #run(): Promise<void> {
    if (!(await this.#retrying(() => this.#checkKey()))) return
    while (!this.#closed) {
      const more = await this.#retrying(() => this.#pull())
      await this.#sleep(more ? 0 : this.#timing.pullIntervalMs)
    }
  }

  /** Runs `work` until it succeeds, backing off exponentially after each failure; false once closed. */
  async #retrying(work: () => Promise<boolean>): Promise<boolean> {
    let delay = this.#timing.backoffInitialMs
    while (!this.#closed) {
      try {
        return await work()
      } catch (error) {
        if (this.#closed) break
        this.#context.log.warn(
          { node: this.#node.id, url: this.#node.url, err: error, retryInMs: delay },
          'following the node failed; retrying',
        )
        await this.#sleep(delay)
        delay = Math.min(delay * 2, this.#timing.backoffMaxMs)
      }
    }
    return false
  }

  #sleep(ms: number): Promise<void> {
    if (this.#pullRequested || this.#closed) {
      this.#pullRequested = false
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.#wake = undefined
        this.#pullRequested = false
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.#wake = done
    })
  }

  /** True when the node signs with the configured key; otherwise an alarm, and no pulling. */
  async #checkKey(): Promise<boolean> {
    const info = (await this.#get('/v1/node', smallAnswerBytesMax)) as { signingKey?: { x?: unknown } } | null
    const served = info?.signingKey?.x
    if (served === this.#node.signingJwk.x) return true
    const servedKey = typeof served === 'string' ? served : null
    await raiseAlarm(
      this.#context,
      {
        node: this.#node.id,
        height: null,
        kind: 'key_mismatch',
        held_hash: null,
        offered_hash: null,
        evidence: JSON.stringify({ url: this.#node.url, configuredKey: this.#node.signingJwk.x, servedKey }),
        fingerprint: `${this.#node.id}/key_mismatch/${servedKey}`,
        time: Date.now(),
      },
      `${this.#node.url} does not sign with the configured key of node ${this.#node.id}; not following it`,
    )
    return false
  }

  /** Fetches the blocks above the held head, in order; says whether more are left for the next pull. */
  async #pull(): Promise<boolean> {
    const answer = (await this.#get('/v1/blocks', smallAnswerBytesMax)) as SignedHead | null
    if (answer === null) return false
    const remote = { header: validateHeader(answer.header), signature: answer.signature }
    const local = await storedHead(this.#context.db, this.#node.id)
    const localHeight = local?.header.height ?? -1
    if (remote.header.height <= localHeight) {
      await this.#compareHead(remote)
      return false
    }
    const last = Math.min(remote.header.height, localHeight + blocksPerPullMax)
    for (let height = localHeight + 1; height <= last && !this.#closed; height++) {
      await this.#fetchAndAccept(height)
    }
    return last < remote.header.height
  }

  async #fetchAndAccept(height: number): Promise<void> {
    const block = await this.#get(`/v1/blocks/${height}`, blockBodyBytesMax)
    if (block === null) throw new VmError('block_not_found', `the node does not serve block ${height}`)
    try {
      await this.#context.acceptor.accept(block)
    } catch (error) {
      // The node's chain no longer links to what is held: offer its version of the held block below, so
      // that a rewrite it signed becomes an alarm.
      if (error instanceof VmError && error.code === 'block_previous_mismatch' && height > 0) {
        await this.#offerHeld(height - 1)
      }
      throw error
    }
  }

  /** The node's head is at or below the held one: if its header there differs, it rewrote history. */
  async #compareHead(remote: SignedHead): Promise<void> {
    const held = await storedHeaderAt(this.#context.db, this.#node.id, remote.header.height)
    if (held !== null && held.headerHash !== toBase64(headerHash(remote.header))) {
      await this.#offerHeld(remote.header.height)
    }
  }

  async #offerHeld(height: number): Promise<void> {
    const block = await this.#get(`/v1/blocks/${height}`, blockBodyBytesMax)
    if (block !== null) await this.#context.acceptor.accept(block)
  }

  /** GETs JSON from the node; null on 404. */
  async #get(path: string, bytesMax: number): Promise<unknown> {
    const signal = AbortSignal.any([this.#stop.signal, AbortSignal.timeout(this.#timing.fetchTimeoutMs)])
    const response = await fetch(`${this.#node.url}${path}`, {
      signal,
      headers: { accept: 'application/json' },
    })
    if (response.status === 404) {
      await response.body?.cancel()
      return null
    }
    if (!response.ok) {
      await response.body?.cancel()
      throw new VmError('node_unreachable', `GET ${path} answered ${response.status}`, { status: 502 })
    }
    return JSON.parse(await readBounded(response, bytesMax, signal))
  }
}

/** Reads a response body as text, refusing it past `bytesMax` without reading the rest. */
async function readBounded(response: Response, bytesMax: number, signal: AbortSignal): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? 0)
  const tooLarge = () =>
    new VmError('node_answer_too_large', `the node's answer exceeds ${bytesMax} bytes`, { status: 502 })
  if (declared > bytesMax) {
    await response.body?.cancel()
    throw tooLarge()
  }
  const chunks: Uint8Array[] = []
  let total = 0
  for await (const chunk of response.body ?? []) {
    signal.throwIfAborted()
    total += chunk.length
    if (total > bytesMax) throw tooLarge()
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}
