import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { newKeyFile, openKeyFile } from '../client/key-file.js'
import { loadConfig, type NodeConfig } from '../node/config.js'
import { type Block, headerHash } from '../protocol/block.js'
import { toBase64, toBase64Url } from '../protocol/encoding.js'
import { generateSigningKey, publicJwk } from '../protocol/keys.js'
import { newId } from '../protocol/transaction.js'
import { startTestNode } from '../testing/node-harness.js'
import { type RunningBrowser, startBrowser } from './browser.js'
import {
  makeBlock,
  makeChain,
  nextState,
  plainLeaves,
  type SyntheticNode,
  silentLog,
  syntheticNode,
} from './browser-fixtures.js'
import { defaultFollowerTiming } from './follower.js'

/** Long enough that only a start or a gap makes the follower pull within a test. */
const slowPolls = { ...defaultFollowerTiming, pullIntervalMs: 120_000, backoffInitialMs: 100 }
const catchUpTimeoutMs = 20_000

let harness: Awaited<ReturnType<typeof startTestNode>>
let dataDir: string

before(async () => {
  harness = await startTestNode()
  dataDir = mkdtempSync(join(tmpdir(), 'vmoney-browser-follow-'))
  await addBlocks(2)
})
after(async () => {
  await harness?.close()
  rmSync(dataDir, { recursive: true, force: true })
})

async function nodeHead(): Promise<number> {
  const head = (await harness.client.publicGet('/v1/blocks')) as { header: { height: number } }
  return head.header.height
}

/** Registers persons until the node's chain has grown by `count` blocks. */
async function addBlocks(count: number): Promise<void> {
  const target = (await nodeHead()) + count
  while ((await nodeHead()) < target) {
    const person = newId()
    const keys = openKeyFile(newKeyFile(person))
    const signed = await harness.client.sign(harness.admin, {
      type: 'register_person',
      person: {
        id: person,
        kind: 'natural',
        names: [{ primaryIdentifier: 'Example', secondaryIdentifier: 'Test', nameIdentifierType: 'LEGL' }],
      },
      keys: [keys.deviceKey],
    })
    const [outcome] = await harness.client.submitAndWait(harness.admin, [signed])
    assert.equal(outcome?.status, 'accepted', JSON.stringify(outcome))
  }
}

function browserConfig(name: string, publicKey: Uint8Array): NodeConfig {
  return loadConfig(
    {
      dataDir,
      host: '127.0.0.1',
      browserPort: '0',
      browserDatabaseUrl: `sqlite:${join(dataDir, `${name}.db`)}`,
      browserNodes: `${harness.node.url}=${toBase64Url(publicKey)}`,
      logLevel: 'silent',
    },
    {},
  )
}

async function get(url: string): Promise<{ status: number; text: string }> {
  const response = await fetch(url)
  return { status: response.status, text: await response.text() }
}

/** Polls until the browser's checkpoint is the node's; returns it. */
async function caughtUp(browser: RunningBrowser): Promise<string> {
  const deadline = Date.now() + catchUpTimeoutMs
  for (;;) {
    const [mine, theirs] = await Promise.all([
      get(`${browser.url}/v1/log/checkpoint`),
      get(`${harness.node.url}/v1/log/checkpoint`),
    ])
    if (mine.status === 200 && mine.text === theirs.text) return mine.text
    if (Date.now() > deadline) assert.fail(`the browser did not catch up: ${mine.text} vs ${theirs.text}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

describe('following a real node', () => {
  test('a browser started after the node pulls every block; its checkpoint becomes the node’s', async () => {
    const browser = await startBrowser(
      browserConfig('catch-up', harness.node.identity.signing.publicKey),
      silentLog,
      slowPolls,
    )
    try {
      await caughtUp(browser)
      const height = await nodeHead()
      for (let h = 0; h <= height; h++) {
        const [mine, theirs] = await Promise.all([
          get(`${browser.url}/v1/blocks/${h}`),
          get(`${harness.node.url}/v1/blocks/${h}`),
        ])
        assert.deepEqual(JSON.parse(mine.text), JSON.parse(theirs.text), `block ${h}`)
      }
      // Verifiers page through whole logs from either, in the same shape.
      const [myLeaves, theirLeaves] = await Promise.all([
        get(`${browser.url}/v1/log/leaves?start=0&end=100000`),
        get(`${harness.node.url}/v1/log/leaves?start=0&end=100000`),
      ])
      assert.equal(myLeaves.status, 200)
      assert.equal(myLeaves.text, theirLeaves.text)
      assert.ok((JSON.parse(myLeaves.text) as { leaves: string[] }).leaves.length >= 3)
      const nodes = JSON.parse((await get(`${browser.url}/v1/nodes`)).text) as { nodes: { nodeId: string }[] }
      assert.equal(nodes.nodes[0]?.nodeId, harness.node.identity.nodeId)
    } finally {
      await browser.close()
    }
  })

  test('a pushed block beyond the head answers block_height_gap and makes the follower pull at once', async () => {
    const browser = await startBrowser(
      browserConfig('gap', harness.node.identity.signing.publicKey),
      silentLog,
      slowPolls,
    )
    try {
      await caughtUp(browser)
      const held = await nodeHead()
      await addBlocks(2)
      const newest = (await get(`${harness.node.url}/v1/blocks/${held + 2}`)).text
      const pushed = await fetch(`${browser.url}/v1/blocks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: newest,
      })
      const problem = (await pushed.json()) as { code: string; expected: number }
      assert.equal(pushed.status, 409)
      assert.deepEqual([problem.code, problem.expected], ['block_height_gap', held + 1])
      // The poll interval is two minutes: catching up now can only come from the gap.
      await caughtUp(browser)
    } finally {
      await browser.close()
    }
  })

  test('a node that signs with another key than the configured one raises an alarm and is not followed', async () => {
    const wrongKey = generateSigningKey().publicKey
    const browser = await startBrowser(browserConfig('mismatch', wrongKey), silentLog, slowPolls)
    try {
      const deadline = Date.now() + catchUpTimeoutMs
      let alarms: { kind: string; evidence: { servedKey: string } }[] = []
      while (alarms.length === 0 && Date.now() < deadline) {
        alarms = (JSON.parse((await get(`${browser.url}/v1/alarms`)).text) as { alarms: typeof alarms })
          .alarms
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      assert.equal(alarms[0]?.kind, 'key_mismatch')
      assert.equal(alarms[0]?.evidence.servedKey, harness.node.identity.signingJwk.x)
      assert.match(
        (await get(`${browser.url}/metrics`)).text,
        /vmoney_browser_alarms\{node="[^"]+",kind="key_mismatch"\} 1/,
      )
      assert.equal((await get(`${browser.url}/v1/blocks`)).status, 404)
    } finally {
      await browser.close()
    }
  })

  test('close() stops a follower promptly while a request to its node hangs', async () => {
    const hanging = createServer(() => {})
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve))
    const { port } = hanging.address() as AddressInfo
    const silentNode = { url: `http://127.0.0.1:${port}`, publicKey: generateSigningKey().publicKey }
    const config = browserConfig('hanging', silentNode.publicKey)
    const browser = await startBrowser({ ...config, browserNodes: [silentNode] }, silentLog)
    try {
      // Let the follower's first request reach the server and hang there.
      await new Promise((resolve) => setTimeout(resolve, 200))
      const started = Date.now()
      await browser.close()
      assert.ok(Date.now() - started < 2_000, 'close took too long')
    } finally {
      hanging.closeAllConnections()
      await new Promise((resolve) => hanging.close(resolve))
    }
  })

  test('a node that serves a rewritten history raises rewrite alarms through the same accept path', async () => {
    const server = await serveSyntheticChain()
    const { node } = server
    const fast = { ...defaultFollowerTiming, pullIntervalMs: 50, backoffInitialMs: 50, backoffMaxMs: 200 }
    const original = makeChain(node, [1, 2, 3])
    server.serve(original.blocks)
    const config = browserConfig('rewrite', node.key.publicKey)
    const browser = await startBrowser({ ...config, browserNodes: [node.followed] }, silentLog, fast)
    try {
      await waitFor(async () => (await get(`${browser.url}/v1/blocks/2`)).status === 200)
      const held = (await get(`${browser.url}/v1/blocks`)).text

      // Same height, another head: the follower compares the head it is shown with the one it holds.
      const [zero, one] = original.states
      const otherHead = makeBlock(node, one!, plainLeaves(20, 1))
      server.serve([...original.blocks.slice(0, 2), otherHead])
      const first = await waitForAlarms(browser, 1)
      assert.deepEqual([first[0]!.kind, first[0]!.height], ['rewrite', 2])
      assert.equal(first[0]!.offeredHeaderHash, toBase64(headerHash(otherHead.header)))

      // A longer history forked at height 1: the next block no longer links, and the fork below is offered.
      const forkedOne = makeBlock(node, zero!, plainLeaves(21, 2))
      const forkedTwo = makeBlock(node, nextState(zero!, forkedOne), plainLeaves(22, 1))
      const forkedThree = makeBlock(
        node,
        nextState(nextState(zero!, forkedOne), forkedTwo),
        plainLeaves(23, 1),
      )
      server.serve([original.blocks[0]!, forkedOne, forkedTwo, forkedThree])
      const second = await waitForAlarms(browser, 2)
      assert.deepEqual(
        [second[0]!.height, second[0]!.offeredHeaderHash],
        [2, toBase64(headerHash(forkedTwo.header))],
      )
      // Nothing held changed.
      assert.equal((await get(`${browser.url}/v1/blocks`)).text, held)
    } finally {
      await browser.close()
      await server.close()
    }
  })
})

async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + catchUpTimeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail('timed out')
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

interface AlarmView {
  kind: string
  height: number
  offeredHeaderHash: string
}

async function waitForAlarms(browser: RunningBrowser, count: number): Promise<AlarmView[]> {
  let alarms: AlarmView[] = []
  await waitFor(async () => {
    alarms = (JSON.parse((await get(`${browser.url}/v1/alarms`)).text) as { alarms: AlarmView[] }).alarms
    return alarms.length >= count
  })
  return alarms
}

/** A real HTTP server that serves a synthetic chain the way a node serves its own (a node's read routes only). */
async function serveSyntheticChain() {
  let blocks: readonly Block[] = []
  let node: SyntheticNode | undefined
  const server = createServer((request, response) => {
    const send = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json' })
      response.end(JSON.stringify(body))
    }
    const head = blocks.at(-1)
    const height = /^\/v1\/blocks\/(\d+)$/.exec(request.url ?? '')?.[1]
    if (request.url === '/v1/node')
      send(200, { nodeId: node!.id, signingKey: publicJwk('Ed25519', node!.key.publicKey) })
    else if (request.url === '/v1/blocks' && head !== undefined)
      send(200, { header: head.header, signature: head.signature })
    else if (height !== undefined && blocks[Number(height)] !== undefined) send(200, blocks[Number(height)])
    else send(404, { code: 'not_found' })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  node = syntheticNode(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  return {
    node,
    serve(chain: readonly Block[]) {
      blocks = chain
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  }
}
