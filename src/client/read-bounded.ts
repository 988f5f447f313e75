import { VmError } from '../protocol/errors.js'

/** Answers larger than this are refused: a block of many large leaves fits (the browser takes 32 MiB). */
export const answerBytesMax = 64 * 1024 * 1024

/** The answer's text, refusing (and abandoning) a body larger than `bytesMax`. */
export async function readBounded(response: Response, bytesMax: number): Promise<string> {
  return new TextDecoder().decode(await readBoundedBytes(response, bytesMax))
}

/** The answer's bytes, refusing (and abandoning) a body larger than `bytesMax`. */
export async function readBoundedBytes(response: Response, bytesMax: number): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length'))
  if (declared > bytesMax || response.body === null) {
    await response.body?.cancel()
    if (declared > bytesMax) throw tooLarge(response.url, bytesMax)
    return new Uint8Array(0)
  }
  const reader = response.body.getReader()
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
