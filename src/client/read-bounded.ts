import { concatBytes } from '../protocol/encoding.js'
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
  const pooled =
    pool !== undefined && response.headers.has('content-length') && encoding === 'identity'
      ? pool.take(declared)
      : null
  const chunks: Uint8Array[] = []
  let length = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    length += value.length
    // The fetch implementation ends a body at its declared length; this guards the pooled copy regardless.
    if (length > (pooled?.length ?? bytesMax)) {
      await reader.cancel()
      throw tooLarge(response.url, pooled?.length ?? bytesMax)
    }
    if (pooled === null) chunks.push(value)
    else pooled.set(value, length - value.length)
  }
  return pooled === null ? concatBytes(...chunks) : pooled.subarray(0, length)
}

function tooLarge(url: string, bytesMax: number): VmError {
  return new VmError('answer_too_large', `${url} answered more than ${bytesMax} bytes`, { status: 502 })
}
