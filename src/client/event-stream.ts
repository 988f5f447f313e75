import { VmError } from '../protocol/errors.js'

/** One Server-Sent Event. */
export interface StreamEvent {
  readonly id: string | undefined
  readonly event: string
  readonly data: string
}

/** An event larger than this ends the stream: no server of ours sends one. */
export const eventBytesMax = 1024 * 1024

/**
 * Parses a `text/event-stream` body (the WHATWG rules this client needs: `id`, `event`, multi-line `data`,
 * comments ignored) into events, bounded in size, until the body ends or the reader is cancelled.
 */
export async function* readEventStream(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamEvent> {
  const decoder = new TextDecoder()
  const reader = body.getReader()
  let buffered = ''
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      buffered += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n')
      for (let end = buffered.indexOf('\n\n'); end !== -1; end = buffered.indexOf('\n\n')) {
        const block = buffered.slice(0, end)
        buffered = buffered.slice(end + 2)
        const event = parseEvent(block)
        if (event !== null) yield event
      }
      if (buffered.length > eventBytesMax)
        throw new VmError('event_too_large', `an event of the stream passed ${eventBytesMax} bytes`)
    }
  } finally {
    await reader.cancel().catch(() => {})
  }
}

function parseEvent(block: string): StreamEvent | null {
  let id: string | undefined
  let event = 'message'
  const data: string[] = []
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
    if (field === 'id') id = value
    else if (field === 'event') event = value
    else if (field === 'data') data.push(value)
  }
  return data.length === 0 ? null : { id, event, data: data.join('\n') }
}
