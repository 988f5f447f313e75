/**
 * One verification run (seed 000 BCVC, flows F12 and F13; DESIGN §5): the node and a block browser are
 * asked for their newest signed checkpoints; each must extend the checkpoint verified before, and the
 * two must agree where they overlap. Where they do not, the run names the first leaf that differs (a
 * split view). With `full` every block is checked and the node's leaves compared with the browser's;
 * with a key, the key's transactions are decrypted and compared with what the node reports.
 */
import { logOrigin, verifyHeaderSignature } from '../protocol/block.js'
import { type Checkpoint, noteVerifierKey, openCheckpoint } from '../protocol/checkpoint.js'
import { bytesEqual, fromBase64, toBase64, toBase64Url } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { jwkPublicKey, keyId } from '../protocol/keys.js'
import { leafHash, verifyConsistency } from '../protocol/merkle.js'
import { type BlockHasher, openBlockHasher } from './block-hashing.js'
import { checkFull } from './full.js'
import { LogServer } from './http.js'
import { checkReader, type ReaderKeys, readNodeSnapshot } from './reader.js'
import { type Check, type Finding, Findings } from './report.js'
import { blockHolding, firstDifferingLeaf, type LogView, ProofRefused } from './split-view.js'
import type { FullState, NodeState, VerifiedCheckpoint, VerifierState } from './state.js'

export interface VerifyOptions {
  readonly nodeUrl: string
  readonly browserUrl: string
  /** What earlier runs verified (emptyState() the first time). */
  readonly state: VerifierState
  /** Check every block and compare every new leaf of the node with the browser's. */
  readonly full?: boolean
  /** Read, decrypt and compare what this key may read. */
  readonly reader?: ReaderKeys
  /** Progress of long work (the full run's leaves). */
  readonly onProgress?: (done: number, total: number) => void
}

export interface VerifyReport {
  readonly ok: boolean
  readonly node: { readonly url: string; readonly nodeId: string | null }
  readonly browser: { readonly url: string }
  /** The checkpoint node and browser were shown to agree on (the smaller of the two). */
  readonly checkpoint: { readonly size: number; readonly root: string } | null
  readonly checks: readonly Check[]
  readonly findings: readonly Finding[]
  /** Leaves re-hashed per second in a full run. */
  readonly leavesPerSecond?: number
  /** The state to keep for the next run; null unless every check passed. */
  readonly state: VerifierState | null
}

interface Side {
  readonly server: LogServer
  readonly checkpoint: Checkpoint
  readonly note: string
}

function view(side: Side): LogView {
  return { server: side.server, size: side.checkpoint.size, root: side.checkpoint.root }
}

/** Runs `work`; any failure but an unreachable server fails the named check. */
async function attempt<T>(out: Findings, name: string, work: () => Promise<T>): Promise<T | null> {
  try {
    return await work()
  } catch (error) {
    if (error instanceof VmError && error.code === 'server_unreachable') throw error
    out.check(name, false, (error as Error).message)
    return null
  }
}

/**
 * Verifies node and browser. Throws VmError 'server_unreachable' when a server cannot be reached and
 * 'key_refused' when the node does not accept the reader's key; everything else is in the report.
 */
export async function verify(options: VerifyOptions): Promise<VerifyReport> {
  // A full check hashes on a thread of its own: opened first, it starts while the checkpoints are read.
  const hasher = options.full === true ? openBlockHasher() : null
  try {
    return await verifyWith(options, hasher)
  } finally {
    await hasher?.close()
  }
}

async function verifyWith(options: VerifyOptions, hasher: BlockHasher | null): Promise<VerifyReport> {
  const out = new Findings()
  const node = new LogServer('node', options.nodeUrl)
  const report = (
    nodeId: string | null,
    checkpoint: Side | null,
    extra: { state?: VerifierState; leavesPerSecond?: number } = {},
  ): VerifyReport => ({
    ok: out.ok,
    node: { url: node.baseUrl, nodeId },
    browser: { url: options.browserUrl },
    checkpoint:
      checkpoint === null
        ? null
        : { size: checkpoint.checkpoint.size, root: toBase64(checkpoint.checkpoint.root) },
    checks: out.checks,
    findings: out.findings,
    ...(extra.leavesPerSecond === undefined ? {} : { leavesPerSecond: extra.leavesPerSecond }),
    state: out.ok && extra.state !== undefined ? extra.state : null,
  })

  // The node's view of the person is read first, so that everything it shows is in the checkpoints after.
  const snapshot =
    options.reader === undefined ? null : await readNodeSnapshot(options.nodeUrl, options.reader)

  const browserRoot = new LogServer('browser', options.browserUrl)
  const browserAtRoot = prefetch(() => browserRoot.node())
  const description = await attempt(out, 'node key', () => node.node())
  if (description === null) return report(null, null)
  const { nodeId } = description
  const stored: NodeState | undefined = options.state.nodes[nodeId]
  const nodeKey = await attempt(out, 'node key', async () => {
    const key = jwkPublicKey(description.signingKey, 'Ed25519')
    if (keyId(description.signingKey) !== nodeId)
      throw new Error(`the node's key is not the one its id ${nodeId} names`)
    return key
  })
  if (nodeKey === null) return report(nodeId, null)
  // A node id is its key's thumbprint: another key at the same URL shows as another node id there.
  const pinned = Object.entries(options.state.nodes).find(
    ([id, entry]) => entry.url === node.baseUrl && id !== nodeId,
  )
  if (pinned !== undefined || (stored !== undefined && stored.publicKey !== toBase64Url(nodeKey))) {
    const before = pinned?.[1].publicKey ?? stored?.publicKey
    out.check(
      'node key',
      false,
      `the node at ${node.baseUrl} signs with another key than the one pinned before`,
    )
    out.add({
      kind: 'key_changed',
      severity: 'failure',
      message: `the node at ${node.baseUrl} now shows key ${toBase64Url(nodeKey)} (node ${nodeId}); pinned before: ${before}. If the node's key was really replaced, start a new state file`,
    })
    return report(nodeId, null)
  }
  out.check('node key', true, stored === undefined ? `${nodeId} (pinned now)` : `${nodeId} (as pinned)`)

  // A browser serves its first followed node at its root, every followed node under /n/<node id>.
  const browser = await attempt(out, 'browser follows node', async () => {
    const root = browserRoot
    const atRoot = await browserAtRoot
    const server = atRoot.nodeId === nodeId ? root : root.scoped(nodeId)
    const followed = atRoot.nodeId === nodeId ? atRoot : await server.node()
    if (followed.signingKey.x !== description.signingKey.x)
      throw new Error('the browser follows another key for this node')
    out.check('browser follows node', true, server.baseUrl)
    return server
  })
  if (browser === null) return report(nodeId, null)

  const origin = logOrigin(nodeId)
  const verifierKey = noteVerifierKey(origin, nodeKey)
  // Node and browser are asked the same things at the same time; the checks then run in a fixed order.
  const notes = [prefetch(() => node.checkpoint()), prefetch(() => browser.checkpoint())] as const
  const openSide = (server: LogServer, fetched: Promise<string>) =>
    attempt(out, `${server.role} checkpoint`, async (): Promise<Side> => {
      const note = await fetched
      const checkpoint = openCheckpoint(note, verifierKey, origin)
      out.check(`${server.role} checkpoint`, true, `size ${checkpoint.size}, signed by ${origin}`)
      return { server, checkpoint, note }
    })
  const [nodeSide, browserSide] = [await openSide(node, notes[0]), await openSide(browser, notes[1])]
  if (nodeSide === null || browserSide === null) return report(nodeId, null)

  const previous = stored?.checkpoint ?? null
  const proofs = [nodeSide, browserSide].map((side) => prefetch(() => proofFromStored(side, previous)))
  const extendsNode = await extendsStored(nodeSide, previous, proofs[0]!, out)
  const extendsBrowser = await extendsStored(browserSide, previous, proofs[1]!, out)
  const agree = await agreement(nodeSide, browserSide, out)
  const common = nodeSide.checkpoint.size <= browserSide.checkpoint.size ? nodeSide : browserSide
  if (!extendsNode || !extendsBrowser || !agree) return report(nodeId, common)

  let full: FullState | null = stored?.full ?? null
  let leavesPerSecond: number | undefined
  if (hasher !== null) {
    const result = await attempt(out, 'blocks', () =>
      checkFull(
        {
          browser,
          node,
          hasher,
          nodeId,
          nodeKey,
          target: browserSide.checkpoint,
          nodeSize: nodeSide.checkpoint.size,
          stored: full,
          onProgress: options.onProgress ?? (() => {}),
        },
        out,
      ),
    )
    full = result?.state ?? null
    leavesPerSecond = result?.leavesPerSecond ?? undefined
  } else {
    const heads = [prefetch(() => node.head()), prefetch(() => browser.head())] as const
    await headBinds(nodeSide, heads[0], nodeId, nodeKey, out)
    await headBinds(browserSide, heads[1], nodeId, nodeKey, out)
  }

  if (options.reader !== undefined && snapshot !== null) {
    const reader = options.reader
    await attempt(out, 'key checks', () =>
      checkReader(
        { browser: view(browserSide), node: view(nodeSide), nodeId, nodeKey, nodeUrl: options.nodeUrl },
        reader,
        snapshot,
        out,
      ),
    )
  }

  const kept: NodeState = {
    url: node.baseUrl,
    publicKey: toBase64Url(nodeKey),
    checkpoint: { size: common.checkpoint.size, root: toBase64(common.checkpoint.root), note: common.note },
    full,
  }
  const state: VerifierState = { ...options.state, nodes: { ...options.state.nodes, [nodeId]: kept } }
  return report(nodeId, common, { state, ...(leavesPerSecond === undefined ? {} : { leavesPerSecond }) })
}

/** Starts a request now and lets its failure surface only where it is awaited. */
function prefetch<T>(request: () => Promise<T>): Promise<T> {
  const promise = request()
  promise.catch(() => {})
  return promise
}

/** The consistency proof from the stored checkpoint to the side's; empty when there is nothing to prove. */
async function proofFromStored(side: Side, stored: VerifiedCheckpoint | null): Promise<Uint8Array[]> {
  const { size } = side.checkpoint
  if (stored === null || size <= stored.size) return []
  return side.server.consistencyProof(stored.size, size)
}

/** The side's checkpoint extends the one verified before: never smaller, and consistent. */
async function extendsStored(
  side: Side,
  stored: VerifiedCheckpoint | null,
  fetchedProof: Promise<Uint8Array[]>,
  out: Findings,
): Promise<boolean> {
  const name = `${side.server.role} consistency`
  const { size, root } = side.checkpoint
  if (stored === null) return out.check(name, true, 'first run: nothing verified before')
  const storedRoot = fromBase64(stored.root)
  if (size < stored.size) {
    out.add({
      kind: 'rollback',
      severity: 'failure',
      message: `ROLLBACK: the ${side.server.role} shows ${size} leaves; ${stored.size} were verified before`,
    })
    return out.check(name, false, `size ${size} is smaller than the verified ${stored.size}`)
  }
  const proven = await attempt(out, name, async () => {
    const proof = await fetchedProof
    verifyConsistency(stored.size, size, proof, storedRoot, root)
    return true
  })
  if (proven === null) {
    out.add({
      kind: 'checkpoint',
      severity: 'failure',
      message: `the ${side.server.role}'s log of ${size} leaves does not extend the ${stored.size} verified before`,
    })
    return false
  }
  return out.check(name, true, `extends the verified size ${stored.size} to ${size}`)
}

/** Node and browser agree at their common size; if not, the first differing leaf is found and named. */
async function agreement(nodeSide: Side, browserSide: Side, out: Findings): Promise<boolean> {
  const name = 'node and browser agree'
  const [smaller, larger] =
    nodeSide.checkpoint.size <= browserSide.checkpoint.size
      ? [nodeSide, browserSide]
      : [browserSide, nodeSide]
  const size = smaller.checkpoint.size
  try {
    const proof =
      size === larger.checkpoint.size
        ? []
        : await larger.server.consistencyProof(size, larger.checkpoint.size)
    verifyConsistency(size, larger.checkpoint.size, proof, smaller.checkpoint.root, larger.checkpoint.root)
    return out.check(
      name,
      true,
      `the ${larger.server.role}'s log of ${larger.checkpoint.size} extends the ${smaller.server.role}'s ${size}`,
    )
  } catch (error) {
    if (error instanceof VmError && error.code === 'server_unreachable') throw error
  }
  out.check(name, false, `they differ within the first ${size} leaves`)
  try {
    const index = await firstDifferingLeaf(view(nodeSide), view(browserSide), size)
    out.add(await splitView(nodeSide, browserSide, index))
  } catch (error) {
    if (!(error instanceof ProofRefused)) throw error
    out.add({ kind: 'split_view', severity: 'failure', message: `SPLIT VIEW, not located: ${error.message}` })
  }
  return false
}

async function splitView(nodeSide: Side, browserSide: Side, index: number): Promise<Finding> {
  const located = async (side: Side) => {
    const [height, hash] = await Promise.all([
      blockHolding(side.server, index).then(
        (block) => block?.header.height,
        () => undefined,
      ),
      side.server.leaf(index).then(
        (leaf) => toBase64(leafHash(leaf)),
        () => undefined,
      ),
    ])
    return { height, hash }
  }
  const [atNode, atBrowser] = [await located(nodeSide), await located(browserSide)]
  const where = (role: string, at: { height: number | undefined }) =>
    `${role} block ${at.height === undefined ? 'unknown' : at.height}`
  return {
    kind: 'split_view',
    severity: 'failure',
    message: `SPLIT VIEW: node and browser differ first at leaf ${index} (${where('node', atNode)}, ${where('browser', atBrowser)})`,
    leafIndex: index,
    block: {
      ...(atNode.height === undefined ? {} : { node: atNode.height }),
      ...(atBrowser.height === undefined ? {} : { browser: atBrowser.height }),
    },
    leafHash: {
      ...(atNode.hash === undefined ? {} : { node: atNode.hash }),
      ...(atBrowser.hash === undefined ? {} : { browser: atBrowser.hash }),
    },
  }
}

/**
 * Without the full run, the side's newest block header must be the node's, and commit to the same log
 * its checkpoint does: the header chain and the tree bind the same leaves (DESIGN §12).
 */
async function headBinds(
  side: Side,
  fetchedHead: ReturnType<LogServer['head']>,
  nodeId: string,
  nodeKey: Uint8Array,
  out: Findings,
): Promise<void> {
  const name = `${side.server.role} head block`
  await attempt(out, name, async () => {
    const { header, signature } = await fetchedHead
    verifyHeaderSignature(header, signature, nodeKey)
    if (header.node !== nodeId) throw new Error(`the head block is by node ${header.node}`)
    const { size, root } = side.checkpoint
    if (header.logSize < size)
      throw new Error(
        `the head block ${header.height} ends at ${header.logSize}, before the checkpoint's ${size}`,
      )
    if (header.logSize === size && !bytesEqual(fromBase64(header.logRoot), root))
      throw new Error(`the head block ${header.height} commits to another root than the checkpoint`)
    out.check(name, true, `block ${header.height} signed by the node, log size ${header.logSize}`)
  })
}
