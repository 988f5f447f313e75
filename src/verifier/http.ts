/**
 * The public log routes that a node and a block browser both serve (seed 000 F10, F12, F13), read with
 * the global fetch: no `node:` imports, so the verifier runs in a web page too. Every request has a
 * timeout and a bounded answer; a server that pushes back (429, 503 with Retry-After) is asked again a
 * bounded number of times. A server that cannot be reached is a VmError 'server_unreachable'; any other
 * failed answer is a VmError with the server's problem code, which the verifier reports as a failed check.
 */

import { answerBytesMax, type BytePool, readBoundedBytes } from '../client/read-bounded.js'
import {
  type Block,
  type BlockHeader,
  type RawBlock,
  validateBlock,
  validateHeader,
} from '../protocol/block.js'
import { fromBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { hashSize } from '../protocol/hash.js'
import type { OkpJwk } from '../protocol/keys.js'
import { binaryMediaType, decodeRawBlock } from '../protocol/leaf-page.js'

/** Every request gives up after this long. */
export const requestTimeoutMs = 30_000
/** How often, and how long at most each time, a request is repeated when the server pushes back. */
export const pushBackRetriesMax = 3
export const pushBackWaitMsMax = 5_000
/** Leaf indexes per page of the browser's recipients route (its maximum). */
export const recipientLeavesPerPageMax = 1_000

/** Not fatal: an answer that is not UTF-8 fails as JSON, with the server named. */
const answerDecoder = new TextDecoder()

export type ServerRole = 'node' | 'browser'

export interface NodeDescription {
  readonly nodeId: string
  readonly origin: string
  readonly noteVerifierKey: string
  readonly signingKey: OkpJwk
}

export interface SignedHeader {
  readonly header: BlockHeader
  readonly signature: string
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isIndex(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

/** One server's public log, at `baseUrl` (a browser's root, or its `/n/<node id>` prefix). */
export class LogServer {
  readonly role: ServerRole
  readonly baseUrl: string

  constructor(role: ServerRole, baseUrl: string) {
    this.role = role
    this.baseUrl = baseUrl.replace(/\/+$/, '')
  }

  /** The same server, serving the log of another followed node. */
  scoped(nodeId: string): LogServer {
    return new LogServer(this.role, `${this.baseUrl}/n/${encodeURIComponent(nodeId)}`)
  }

  #malformed(path: string, what: string): VmError {
    return new VmError('answer_malformed', `the ${this.role} answered GET ${path} with ${what}`, {
      status: 502,
    })
  }

  async node(): Promise<NodeDescription> {
    const path = '/v1/node'
    const value = await this.json(path)
    if (
      !isObject(value) ||
      typeof value.nodeId !== 'string' ||
      typeof value.origin !== 'string' ||
      typeof value.noteVerifierKey !== 'string' ||
      !isObject(value.signingKey)
    ) {
      throw this.#malformed(path, 'no node description')
    }
    return value as unknown as NodeDescription
  }

  async checkpoint(): Promise<string> {
    return this.text('/v1/log/checkpoint')
  }

  /** Leaves [start, end) as the server's base64 strings; the server may answer fewer (a page). */
  async leaves(start: number, end: number): Promise<string[]> {
    const path = `/v1/log/leaves?start=${start}&end=${end}`
    const value = await this.json(path)
    if (!isObject(value) || value.start !== start || !Array.isArray(value.leaves))
      throw this.#malformed(path, 'no page of leaves')
    const leaves = value.leaves as unknown[]
    if (leaves.length > end - start || !leaves.every((leaf) => typeof leaf === 'string'))
      throw this.#malformed(path, 'leaves that are not base64 strings of the range')
    return leaves as string[]
  }

  async leaf(index: number): Promise<Uint8Array> {
    const path = `/v1/log/leaves/${index}`
    const value = await this.json(path)
    if (!isObject(value) || value.index !== index || typeof value.leaf !== 'string')
      throw this.#malformed(path, 'no leaf')
    return fromBase64(value.leaf)
  }

  async inclusionProof(index: number, size: number): Promise<Uint8Array[]> {
    return this.#proof(`/v1/log/proofs/inclusion?index=${index}&size=${size}`)
  }

  async consistencyProof(from: number, to: number): Promise<Uint8Array[]> {
    return this.#proof(`/v1/log/proofs/consistency?from=${from}&to=${to}`)
  }

  async #proof(path: string): Promise<Uint8Array[]> {
    const value = await this.json(path)
    if (!isObject(value) || !Array.isArray(value.proof) || value.proof.length > 128)
      throw this.#malformed(path, 'no proof')
    return value.proof.map((hash: unknown) => {
      if (typeof hash !== 'string') throw this.#malformed(path, 'a proof hash that is not a string')
      return fromBase64(hash)
    })
  }

  async block(height: number): Promise<Block> {
    return validateBlock(await this.json(blockPath(height)))
  }

  /** A block in the binary form (leaf-page.ts): what a full check downloads. */
  async blockBytes(height: number, pool?: BytePool): Promise<Uint8Array> {
    return this.binary(blockPath(height), pool)
  }

  /** The block `height` from its binary form (blockBytes), its shape checked. */
  decodeBlock(height: number, bytes: Uint8Array): RawBlock {
    try {
      return decodeRawBlock(bytes)
    } catch (error) {
      if (error instanceof VmError && (error.code === 'binary_malformed' || error.code === 'block_malformed'))
        throw this.#malformed(blockPath(height), `a block that is not well formed: ${error.message}`)
      throw error
    }
  }

  /**
   * The hashes of leaves [start, end), 32 bytes each one after another, in the binary form; the server
   * may answer fewer (a page).
   */
  async leafHashes(start: number, end: number): Promise<Uint8Array> {
    const path = `/v1/log/leaf-hashes?start=${start}&end=${end}`
    const bytes = await this.binary(path)
    if (bytes.length % hashSize !== 0 || bytes.length > (end - start) * hashSize)
      throw this.#malformed(path, 'bytes that are not hashes of the range')
    return bytes
  }

  /** The newest block's signed header. */
  async head(): Promise<SignedHeader> {
    const path = '/v1/blocks'
    const value = await this.json(path)
    if (!isObject(value) || typeof value.signature !== 'string')
      throw this.#malformed(path, 'no block header')
    return { header: validateHeader(value.header), signature: value.signature }
  }

  /** A page of the leaf indexes whose JWE or disclosure names `kid` (a browser route). */
  async recipientLeaves(
    kid: string,
    after: number | null,
  ): Promise<{ leaves: number[]; next: number | null }> {
    const query = `limit=${recipientLeavesPerPageMax}${after === null ? '' : `&after=${after}`}`
    const path = `/v1/log/recipients/${encodeURIComponent(kid)}?${query}`
    const value = await this.json(path)
    if (!isObject(value) || !Array.isArray(value.leaves) || !(value.next === null || isIndex(value.next)))
      throw this.#malformed(path, 'no page of leaf indexes')
    const leaves = value.leaves as unknown[]
    if (leaves.length > recipientLeavesPerPageMax || !leaves.every(isIndex))
      throw this.#malformed(path, 'leaf indexes that are not indexes')
    return { leaves: leaves as number[], next: value.next }
  }

  async json(path: string): Promise<unknown> {
    const text = await this.text(path)
    try {
      return JSON.parse(text)
    } catch (error) {
      throw new VmError('answer_malformed', `the ${this.role} answered GET ${path} with no JSON`, {
        status: 502,
        cause: error,
      })
    }
  }

  async text(path: string): Promise<string> {
    return answerDecoder.decode(await this.#bytes(path, 'application/json, text/plain'))
  }

  /** The bytes of a binary answer (leaf-page.ts), in a buffer of `pool` if given. */
  async binary(path: string, pool?: BytePool): Promise<Uint8Array> {
    return this.#bytes(path, binaryMediaType, pool)
  }

  async #bytes(path: string, accept: string, pool?: BytePool): Promise<Uint8Array> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#get(path, accept, pool)
      } catch (error) {
        const wait = error instanceof VmError ? error.detail?.['retryAfterMs'] : undefined
        if (typeof wait !== 'number' || attempt >= pushBackRetriesMax) throw error
        await new Promise((resolve) => setTimeout(resolve, wait))
      }
    }
  }

  async #get(path: string, accept: string, pool?: BytePool): Promise<Uint8Array> {
    const url = this.baseUrl + path
    let response: Response
    let body: Uint8Array
    try {
      response = await fetch(url, { headers: { accept }, signal: AbortSignal.timeout(requestTimeoutMs) })
      body = await readBoundedBytes(response, answerBytesMax, response.ok ? pool : undefined)
    } catch (error) {
      if (error instanceof VmError) throw error
      throw new VmError('server_unreachable', `cannot reach the ${this.role} at ${url}: ${causeOf(error)}`, {
        status: 503,
        detail: { server: this.role, url },
        cause: error,
      })
    }
    if (response.ok) return body
    let problem: Record<string, unknown> = {}
    try {
      const parsed: unknown = JSON.parse(answerDecoder.decode(body))
      if (isObject(parsed)) problem = parsed
    } catch {
      // Not problem+json: the status says enough.
    }
    const code = typeof problem.code === 'string' ? problem.code : 'http_error'
    const detail = typeof problem.detail === 'string' ? `: ${problem.detail}` : ''
    const retryAfterSeconds = Number(response.headers.get('retry-after'))
    const pushedBack = (response.status === 429 || response.status === 503) && retryAfterSeconds > 0
    throw new VmError(code, `the ${this.role} answered ${response.status} to GET ${path}${detail}`, {
      status: response.status,
      detail: {
        server: this.role,
        ...(pushedBack ? { retryAfterMs: Math.min(retryAfterSeconds * 1000, pushBackWaitMsMax) } : {}),
      },
    })
  }
}

function blockPath(height: number): string {
  return `/v1/blocks/${height}`
}

function causeOf(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown } }).cause
  const code = typeof cause?.code === 'string' ? ` (${cause.code})` : ''
  return `${(error as Error).message}${code}`
}
