import { VmError } from '../protocol/errors.js'

/** Answers larger than this are refused: a block of many large leaves fits (the browser takes 32 MiB). */
export const answerBytesMax = 64 * 1024 * 1024

/** The answer's text, refusing (and abandoning) a body larger than `bytesMax`. */
export async function readBounded(response: Response, bytesMax: number): Promise<string> {
  return new TextDecoder().decode(await readBoundedBytes(response, bytesMax))
}

/**
 * Buffers for answers of a declared length, used again once given back: a full check reads gigabytes of
 * blocks of similar sizes, and fresh memory for each costs page faults and garbage collections.
 */
export class BytePool {
  readonly #free: ArrayBuffer[] = []
  readonly #buffersMax: number

  /** Keeps at most `buffersMax` buffers given back. */
  constructor(buffersMax: number) {
    this.#buffersMax = buffersMax
  }

  /** `length` bytes (not zeroed) in a buffer of the pool, or in a new one. */
  take(length: number): Uint8Array {
    const at = this.#free.findIndex((buffer) => buffer.byteLength >= length)
    if (at >= 0) return new Uint8Array(this.#free.splice(at, 1)[0]!, 0, length)
    // Rounded up, so that a buffer serves the slightly larger answers that follow.
    return new Uint8Array(
      new ArrayBuffer(Math.ceil(length / poolRoundingBytes) * poolRoundingBytes),
      0,
      length,
    )
  }

  /** Gives a buffer back; nothing may use it afterwards. */
  give(buffer: ArrayBuffer): void {
    if (this.#free.length < this.#buffersMax) this.#free.push(buffer)
  }
}

const poolRoundingBytes = 1024 * 1024

/**
 * The answer's bytes, refusing (and abandoning) a body larger than `bytesMax`. With a `pool`, an answer
 * that declares its length is read into a buffer of the pool.
 */
export async function readBoundedBytes(
  response: Response,
  bytesMax: number,
  pool?: BytePool,
): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length'))
  if (declared > bytesMax || response.body === null) {
    await response.body?.cancel()
    if (declared > bytesMax) throw tooLarge(response.url, bytesMax)
    return new Uint8Array(0)
  }
  const reader = response.body.getReader()
  // A compressed answer declares its compressed length: it is read as chunks, whatever its length.
  const encoding = response.headers.get('content-encoding') ?? 'identity'
  if (pool !== undefined && response.headers.has('content-length') && encoding === 'identity') {
    const bytes = pool.take(declared)
    let length = 0
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      // The fetch implementation ends a body at its declared length; this guards the copy regardless.
      if (length + value.length > declared) {
        await reader.cancel()
        throw new VmError('answer_malformed', `${response.url} answered more than its declared length`, {
          status: 502,
        })
      }
      bytes.set(value, length)
      length += value.length
    }
    return bytes.subarray(0, length)
  }
  const chunks: Uint8Array[] = []
  let length = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    length += value.length
    if (length > bytesMax) {
      await reader.cancel()
      throw tooLarge(response.url, bytesMax)
    }
    chunks.push(value)
  }
  const bytes = new Uint8Array(length)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.length
  }
  return bytes
}

function tooLarge(url: string, bytesMax: number): VmError {
  return new VmError('answer_too_large', `${url} answered more than ${bytesMax} bytes`, { status: 502 })
}
