import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { browserApp, makeChain, type SyntheticNode, sqliteTarget, syntheticNode } from './browser-fixtures.js'
import type { BrowserDatabase } from './storage.js'

const target = sqliteTarget()
let database: BrowserDatabase
let app: FastifyInstance
let url: string
let node: SyntheticNode

before(async () => {
  database = await target.open()
  node = syntheticNode()
  ;({ app } = await browserApp(database, [node]))
  await app.listen({ host: '127.0.0.1', port: 0 })
  url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
})
after(async () => {
  await app.close()
  await database.close()
  await target.dispose()
})

/** Reads Server-Sent Events until `count` events named `name` have arrived. */
async function readEvents(body: ReadableStream<Uint8Array>, name: string, count: number) {
  const decoder = new TextDecoder()
  const events: unknown[] = []
  let buffered = ''
  for await (const chunk of body) {
    buffered += decoder.decode(chunk, { stream: true })
    let end = buffered.indexOf('\n\n')
    while (end >= 0) {
      const lines = buffered.slice(0, end).split('\n')
      buffered = buffered.slice(end + 2)
      if (lines.includes(`event: ${name}`)) {
        const data = lines.find((line) => line.startsWith('data: '))!
        events.push(JSON.parse(data.slice('data: '.length)))
        if (events.length === count) return events
      }
      end = buffered.indexOf('\n\n')
    }
  }
  return events
}

test('every accepted block reaches live subscribers as a `block` event', async () => {
  const controller = new AbortController()
  const stream = await fetch(`${url}/v1/events`, { signal: controller.signal })
  assert.equal(stream.status, 200)
  assert.match(String(stream.headers.get('content-type')), /^text\/event-stream/)
  const received = readEvents(stream.body!, 'block', 2)
  assert.match(await (await fetch(`${url}/metrics`)).text(), /vmoney_browser_event_subscribers 1/)

  const { blocks } = makeChain(node, [2, 3])
  for (const block of blocks) {
    const response = await fetch(`${url}/v1/blocks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(block),
    })
    assert.equal(response.status, 201)
  }
  // A duplicate is not news.
  await fetch(`${url}/v1/blocks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(blocks[0]),
  })
  assert.deepEqual(
    await received,
    blocks.map(({ header }) => ({
      node: node.id,
      height: header.height,
      logSize: header.logSize,
      logRoot: header.logRoot,
      leafCount: header.leafCount,
      time: header.time,
    })),
  )
  controller.abort()
})

test('the page shows the newest blocks of each followed node', async () => {
  const page = await (await fetch(`${url}/`)).text()
  assert.match(page, new RegExp(`<tbody data-node="${node.id}"><tr><td>1</td>`))
})
