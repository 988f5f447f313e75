import assert from 'node:assert/strict'
import { test } from 'node:test'
import { type BlockHeader, genesisPrevious, signHeader } from '../protocol/block.js'
import { toBase64, toBase64Url, utf8 } from '../protocol/encoding.js'
import { generateSigningKey, keyId, publicJwk } from '../protocol/keys.js'
import { Frontier, leafHash } from '../protocol/merkle.js'
import { emptyState, formatState, parseState, type VerifierState } from './state.js'

function sampleState(): VerifierState {
  const key = generateSigningKey()
  const nodeId = keyId(publicJwk('Ed25519', key.publicKey))
  const frontier = new Frontier()
  for (const leaf of ['a', 'b', 'c']) frontier.append(leafHash(utf8(leaf)))
  const header: BlockHeader = {
    v: 1,
    node: nodeId,
    height: 0,
    previous: genesisPrevious,
    firstLeaf: 0,
    leafCount: 3,
    logSize: 3,
    logRoot: toBase64(frontier.root()),
    time: '2025-01-31T12:00:00.000Z',
  }
  return {
    v: 1,
    nodes: {
      [nodeId]: {
        url: 'http://127.0.0.1:8080',
        publicKey: toBase64Url(key.publicKey),
        checkpoint: { size: 3, root: toBase64(frontier.root()), note: 'a note\n' },
        full: {
          headers: [{ header, signature: signHeader(header, key.secretKey) }],
          frontier: { size: 3, hashes: frontier.hashes().map(toBase64) },
        },
      },
    },
  }
}

test('a state survives formatting and parsing unchanged', () => {
  const state = sampleState()
  assert.deepEqual(parseState(formatState(state)), state)
  assert.deepEqual(parseState(formatState(emptyState())), emptyState())
})

test('anything unexpected in a state file is refused, naming where', () => {
  const state = sampleState()
  const [nodeId, node] = Object.entries(state.nodes)[0]!
  const mutations: [string, unknown][] = [
    ['is not JSON', '{"v": 1,'],
    ['state.v', { ...state, v: 2 }],
    ['unknown field "extra"', { ...state, extra: 1 }],
    ['is not a node id', { v: 1, nodes: { 'not-an-id': node } }],
    ['publicKey', { v: 1, nodes: { [nodeId]: { ...node, publicKey: 'short' } } }],
    [
      'is not the key the node id names',
      { v: 1, nodes: { [nodeId]: { ...node, publicKey: toBase64Url(generateSigningKey().publicKey) } } },
    ],
    ['url', { v: 1, nodes: { [nodeId]: { ...node, url: 'ftp://example' } } }],
    [
      'checkpoint.size',
      { v: 1, nodes: { [nodeId]: { ...node, checkpoint: { ...node.checkpoint, size: -1 } } } },
    ],
    [
      'checkpoint.root',
      { v: 1, nodes: { [nodeId]: { ...node, checkpoint: { ...node.checkpoint, root: 'AAAA' } } } },
    ],
    [
      'missing field "full"',
      { v: 1, nodes: { [nodeId]: { url: node.url, publicKey: node.publicKey, checkpoint: null } } },
    ],
    [
      'frontier',
      {
        v: 1,
        nodes: {
          [nodeId]: {
            ...node,
            full: { ...node.full!, frontier: { size: 4, hashes: node.full!.frontier.hashes } },
          },
        },
      },
    ],
    [
      'headers[0]',
      {
        v: 1,
        nodes: {
          [nodeId]: {
            ...node,
            full: {
              ...node.full!,
              headers: [{ ...node.full!.headers[0]!, header: { ...node.full!.headers[0]!.header, v: 2 } }],
            },
          },
        },
      },
    ],
  ]
  for (const [where, value] of mutations) {
    assert.throws(
      () => parseState(typeof value === 'string' ? value : JSON.stringify(value)),
      (error: Error & { code?: string }) => error.code === 'state_invalid' && error.message.includes(where),
      where,
    )
  }
})
