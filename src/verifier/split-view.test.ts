import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { toBase64, utf8 } from '../protocol/encoding.js'
import { consistencyProof, Frontier, inclusionProof, leafHash, MemoryNodeStore } from '../protocol/merkle.js'
import { LogServer } from './http.js'
import { firstDifferingLeaf, type LogView, prefixRoot } from './split-view.js'

/** A log served over real HTTP with the public routes the search uses; its leaves can be swapped. */
class ServedLog {
  #leaves: Uint8Array[] = []
  #store = new MemoryNodeStore()
  #frontier = new Frontier()
  readonly #server: Server = createServer((request, response) => {
    void this.#answer(new URL(request.url ?? '/', 'http://log')).then(
      (body) => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
      (error: Error) => response.writeHead(400).end(JSON.stringify({ code: 'bad', detail: error.message })),
    )
  })
  url = ''

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()))
  }

  load(leaves: readonly Uint8Array[]): LogView {
    this.#leaves = [...leaves]
    this.#store = new MemoryNodeStore()
    this.#frontier = new Frontier()
    for (const leaf of leaves) this.#store.write(this.#frontier.append(leafHash(leaf)))
    return { server: new LogServer('node', this.url), size: leaves.length, root: this.#frontier.root() }
  }

  async #answer(url: URL): Promise<unknown> {
    const query = (name: string) => Number(url.searchParams.get(name))
    const leaf = /^\/v1\/log\/leaves\/(\d+)$/.exec(url.pathname)
    if (leaf !== null) return { index: Number(leaf[1]), leaf: toBase64(this.#leaves[Number(leaf[1])]!) }
    if (url.pathname === '/v1/log/proofs/inclusion')
      return { proof: (await inclusionProof(query('index'), query('size'), this.#store.read)).map(toBase64) }
    if (url.pathname === '/v1/log/proofs/consistency')
      return { proof: (await consistencyProof(query('from'), query('to'), this.#store.read)).map(toBase64) }
    throw new Error(`no route ${url.pathname}`)
  }
}

const leaves = (count: number, salt: string) =>
  Array.from({ length: count }, (_, i) => utf8(`leaf ${i} ${salt}`))

describe('split view search', () => {
  const a = new ServedLog()
  const b = new ServedLog()
  before(async () => {
    await a.start()
    await b.start()
  })
  after(async () => {
    await a.close()
    await b.close()
  })

  test('prefix roots proven from consistency and inclusion proofs equal the roots of the prefixes', async () => {
    const all = leaves(21, 'x')
    const view = a.load(all)
    for (let size = 1; size <= all.length; size++) {
      const expected = new Frontier()
      for (const leaf of all.slice(0, size)) expected.append(leafHash(leaf))
      assert.equal(toBase64(await prefixRoot(view, size)), toBase64(expected.root()), `size ${size}`)
    }
  })

  test('finds the first differing leaf wherever it is, powers of two included', async () => {
    for (const size of [1, 2, 3, 8, 13, 16, 17]) {
      for (let differing = 0; differing < size; differing++) {
        const honest = leaves(size, 'x')
        // The other view differs from `differing` on, and is longer: the search looks at the common size.
        const forked = [...honest.slice(0, differing), ...leaves(size + 3, 'fork').slice(differing)]
        const found = await firstDifferingLeaf(a.load(honest), b.load(forked), size)
        assert.equal(found, differing, `size ${size}, differing ${differing}`)
      }
    }
  })

  test('a server that proves a prefix its checkpoint does not commit to is refused', async () => {
    const view = a.load(leaves(10, 'x'))
    const lying = { ...view, root: b.load(leaves(10, 'y')).root }
    await assert.rejects(
      prefixRoot(lying, 5),
      (error: Error) => error.name === 'VmError' && /cannot prove/.test(error.message),
    )
  })
})
