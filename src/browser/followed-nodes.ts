import type { FollowedNode } from '../node/config.js'
import { logOrigin } from '../protocol/block.js'
import { noteVerifierKey } from '../protocol/checkpoint.js'
import { VmError } from '../protocol/errors.js'
import { keyId, type OkpJwk, publicJwk } from '../protocol/keys.js'

/** A followed node as the browser knows it: everything is derived from the configured key. */
export interface FollowedNodeInfo {
  /** keyId of the node's Ed25519 key: what its block headers carry in `header.node`. */
  readonly id: string
  readonly url: string
  readonly publicKey: Uint8Array
  readonly signingJwk: OkpJwk
  readonly origin: string
  readonly noteVerifierKey: string
}

export function followedNodeInfo(node: FollowedNode): FollowedNodeInfo {
  const signingJwk = publicJwk('Ed25519', node.publicKey)
  const id = keyId(signingJwk)
  const origin = logOrigin(id)
  return {
    id,
    url: node.url,
    publicKey: node.publicKey,
    signingJwk,
    origin,
    noteVerifierKey: noteVerifierKey(origin, node.publicKey),
  }
}

/** The followed nodes by id, in configured order (the first is the default served at the root). */
export class FollowedNodes {
  readonly list: readonly FollowedNodeInfo[]
  readonly #byId: ReadonlyMap<string, FollowedNodeInfo>

  constructor(nodes: readonly FollowedNode[]) {
    if (nodes.length === 0)
      throw new VmError('config_invalid', 'the block browser follows no node: set VMONEY_BROWSER_NODES')
    this.list = nodes.map(followedNodeInfo)
    this.#byId = new Map(this.list.map((node) => [node.id, node]))
    if (this.#byId.size !== this.list.length)
      throw new VmError('config_invalid', 'the same node key is followed twice')
  }

  get default(): FollowedNodeInfo {
    return this.list[0]!
  }

  find(id: string): FollowedNodeInfo | undefined {
    return this.#byId.get(id)
  }

  /** The node or 404 `node_not_followed`. */
  get(id: string): FollowedNodeInfo {
    const node = this.#byId.get(id)
    if (node === undefined)
      throw new VmError('node_not_followed', `this browser does not follow node ${id}`, { status: 404 })
    return node
  }
}
