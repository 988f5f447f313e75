/**
 * With a key (a device key, or one derived from a password) the verifier reads what the key may read
 * (seed 000: "decrypt content of that specific transaction and verify that transaction content
 * corresponds to reality"): it finds the key's leaves through the browser's recipients index, proves
 * each in a verified checkpoint, decrypts it, checks the client's signature inside, and compares the
 * transactions with what the node reports for the person: accounts, statement entries and balances.
 */
import { NodeClient } from '../client/client.js'
import type { DeviceKeys } from '../client/key-file.js'
import { fromBase64, fromBase64Url } from '../protocol/encoding.js'
import { Opener } from '../protocol/envelope.js'
import { VmError } from '../protocol/errors.js'
import {
  jwkPublicKey,
  keyId,
  type OkpJwk,
  privateJwk,
  publicJwk,
  type SigningKeyPair,
  verify,
} from '../protocol/keys.js'
import { decodeLeaf, type Leaf, leafRecipients, leafTransaction } from '../protocol/leaf.js'
import { leafHash, verifyInclusion } from '../protocol/merkle.js'
import { type DeviceKey, type SignedTransaction, transactionBytes } from '../protocol/transaction.js'
import type { Finding, Findings } from './report.js'
import type { LogView } from './split-view.js'

/** Leaves one run reads with a key; past it the rest is reported unchecked. */
export const readableLeavesMax = 100_000
/** Leaves the browser lags behind the node that are scanned on the node for the key's leaves. */
export const gapLeavesMax = 16_384
/** Statement entries read per account. */
export const statementEntriesMax = 100_000
export const statementPageSize = 1_000
/** Leaf reads (leaf and proof) at once. */
export const leafReadsInFlightMax = 8
/** The node's data is read again when it changed while it was read, this many times at most. */
export const snapshotAttemptsMax = 3

/** A key that reads: who it belongs to (when known), its Ed25519 signing pair and its X25519 pair. */
export interface ReaderKeys {
  readonly person?: string
  readonly signing: SigningKeyPair
  readonly encryption: SigningKeyPair
}

interface NodeAccount {
  readonly id: string
  readonly owner: string
  readonly asset: string
  readonly closed: boolean
  readonly debitsPending: string
  readonly debitsPosted: string
  readonly creditsPending: string
  readonly creditsPosted: string
}

interface NodeEntry {
  readonly leaf: number
  readonly transactionId: string
  readonly transferId: string
  readonly kind: 'debit' | 'credit'
  readonly phase: string
  readonly amount: string
  readonly time: string
}

/** What the node says about the person, read (signed) before the checkpoints are fetched. */
export interface NodeSnapshot {
  readonly keyId: string
  readonly encryptionKeyId: string
  readonly person: string
  /** The leaf that registered the reading key: leaves before it were not sealed for it. */
  readonly addedLeaf: number
  readonly accounts: readonly NodeAccount[]
  readonly entries: ReadonlyMap<
    string,
    { readonly entries: readonly NodeEntry[]; readonly complete: boolean }
  >
}

const balanceFields = ['debitsPending', 'debitsPosted', 'creditsPending', 'creditsPosted'] as const
type Balances = Record<(typeof balanceFields)[number], bigint>

function deviceKeys(keys: ReaderKeys, person: string | undefined): DeviceKeys {
  const signingJwk = publicJwk('Ed25519', keys.signing.publicKey)
  const id = keyId(signingJwk)
  const signing = privateJwk('Ed25519', keys.signing)
  const encryption = privateJwk('X25519', keys.encryption)
  return {
    keyId: id,
    person,
    signing: keys.signing,
    encryption: keys.encryption,
    file: { v: 1, keyId: id, ...(person === undefined ? {} : { person }), signing, encryption },
    deviceKey: {
      signing: signingJwk as DeviceKey['signing'],
      encryption: publicJwk('X25519', keys.encryption.publicKey) as NonNullable<DeviceKey['encryption']>,
    },
  }
}

function malformed(path: string): VmError {
  return new VmError('answer_malformed', `the node answered GET ${path} with something else than it should`, {
    status: 502,
  })
}

/** Signed reads as the reader's key. A node that cannot be reached is 'server_unreachable'. */
class SignedReads {
  readonly #client: NodeClient
  readonly keys: DeviceKeys

  constructor(nodeUrl: string, keys: DeviceKeys) {
    this.#client = new NodeClient(nodeUrl)
    this.keys = keys
  }

  async get(path: string): Promise<unknown> {
    try {
      return await this.#client.get(this.keys, path)
    } catch (error) {
      if (error instanceof VmError && error.code === 'node_unreachable') {
        throw new VmError('server_unreachable', error.message, {
          status: 503,
          detail: { server: 'node' },
          cause: error,
        })
      }
      throw error
    }
  }
}

/**
 * Reads the person's accounts and statements as the reader's key. A key the node does not know (or
 * has revoked) is a VmError 'key_refused'. Read twice until the accounts did not change in between.
 */
export async function readNodeSnapshot(nodeUrl: string, keys: ReaderKeys): Promise<NodeSnapshot> {
  const reads = new SignedReads(nodeUrl, deviceKeys(keys, keys.person))
  const { keyId: id } = reads.keys
  let record: { person: string; addedLeaf: number; revoked: boolean }
  try {
    record = (await reads.get(`/v1/keys/${id}`)) as typeof record
  } catch (error) {
    if (error instanceof VmError && error.status === 401) {
      throw new VmError(
        'key_refused',
        `the node does not accept key ${id} (${error.code}): ${error.message}`,
        {
          status: 401,
          cause: error,
        },
      )
    }
    throw error
  }
  if (typeof record?.person !== 'string' || !Number.isSafeInteger(record.addedLeaf))
    throw malformed(`/v1/keys/${id}`)
  if (keys.person !== undefined && record.person !== keys.person) {
    throw new VmError('key_refused', `key ${id} belongs to person ${record.person}, not ${keys.person}`, {
      status: 401,
    })
  }
  const person = record.person
  const readAccounts = async () => {
    const path = `/v1/persons/${person}/accounts`
    const { accounts } = (await reads.get(path)) as { accounts: NodeAccount[] }
    if (!Array.isArray(accounts) || !accounts.every((account) => typeof account?.id === 'string'))
      throw malformed(path)
    return accounts
  }
  for (let attempt = 1; ; attempt++) {
    const accounts = await readAccounts()
    const entries = new Map<string, { entries: NodeEntry[]; complete: boolean }>()
    for (const account of accounts) entries.set(account.id, await readStatement(reads, account.id))
    const again = await readAccounts()
    if (JSON.stringify(again) === JSON.stringify(accounts) || attempt >= snapshotAttemptsMax) {
      if (JSON.stringify(again) !== JSON.stringify(accounts)) {
        throw new VmError(
          'node_busy',
          `the accounts changed while they were read, ${attempt} times: run again`,
        )
      }
      return {
        keyId: id,
        encryptionKeyId: keyId(publicJwk('X25519', keys.encryption.publicKey)),
        person,
        addedLeaf: record.addedLeaf,
        accounts,
        entries,
      }
    }
  }
}

async function readStatement(
  reads: SignedReads,
  account: string,
): Promise<{ entries: NodeEntry[]; complete: boolean }> {
  const entries: NodeEntry[] = []
  let cursor: number | null = 0
  while (cursor !== null && entries.length < statementEntriesMax) {
    const path = `/v1/accounts/${account}/statement?cursor=${cursor}&limit=${statementPageSize}`
    const page = (await reads.get(path)) as { entries: NodeEntry[]; nextCursor: number | null }
    if (
      !Array.isArray(page?.entries) ||
      page.entries.length > statementPageSize ||
      !(page.nextCursor === null || (Number.isSafeInteger(page.nextCursor) && page.nextCursor > cursor))
    )
      // A page past its size, or a cursor that does not move on, would make this loop unbounded.
      throw malformed(path)
    entries.push(...page.entries)
    cursor = page.nextCursor
  }
  return { entries, complete: cursor === null }
}

/** A transaction the key opened, and where it is. */
interface OpenedTransaction {
  readonly index: number
  readonly time: string
  readonly signed: SignedTransaction
  /** Opened with a content key that a view disclosed, not as a recipient. */
  readonly disclosed: boolean
}

export interface ReaderViews {
  readonly browser: LogView
  readonly node: LogView
  readonly nodeId: string
  readonly nodeKey: Uint8Array
  readonly nodeUrl: string
}

/** Runs `work` over `items`, at most `inFlight` at once, results in order. */
async function mapBounded<T, R>(
  items: readonly T[],
  inFlight: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const position = next++
      results[position] = await work(items[position]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(inFlight, items.length) }, worker))
  return results
}

function isUnreachable(error: unknown): boolean {
  return error instanceof VmError && error.code === 'server_unreachable'
}

/** A leaf, proven in the checkpoint of the view that holds it: the browser's, or the node's beyond it. */
async function provenLeaf(views: ReaderViews, index: number): Promise<Leaf> {
  const view = index < views.browser.size ? views.browser : views.node
  const bytes = await view.server.leaf(index)
  verifyInclusion(
    leafHash(bytes),
    index,
    view.size,
    await view.server.inclusionProof(index, view.size),
    view.root,
  )
  return decodeLeaf(bytes)
}

/** The leaf indexes that name the key: the browser's index, and a scan of the node's leaves it lacks. */
async function readableLeaves(views: ReaderViews, kid: string, out: Findings): Promise<number[]> {
  const found: number[] = []
  let after: number | null = null
  pages: for (;;) {
    const page: { leaves: number[]; next: number | null } = await views.browser.server.recipientLeaves(
      kid,
      after,
    )
    for (const index of page.leaves) {
      if (index >= views.browser.size) break pages
      if (found.length >= readableLeavesMax) {
        out.add({
          kind: 'unchecked',
          severity: 'note',
          message: `more than ${readableLeavesMax} leaves name this key: the leaves from ${index} on were not read`,
        })
        return found
      }
      found.push(index)
    }
    if (page.next === null) break
    // A cursor that does not move on would make this loop endless.
    if (after !== null && page.next <= after) throw malformed(`/v1/log/recipients/${kid}`)
    after = page.next
  }
  const gapEnd = Math.min(views.node.size, views.browser.size + gapLeavesMax)
  for (let start = views.browser.size; start < gapEnd; ) {
    const page = await views.node.server.leaves(start, gapEnd)
    if (page.length === 0) break
    page.forEach((text, i) => {
      try {
        if (leafRecipients(decodeLeaf(fromBase64(text))).includes(kid)) found.push(start + i)
      } catch {
        // A leaf that does not decode is proven and reported when it is read, if it names the key.
      }
    })
    start += page.length
  }
  if (views.node.size > gapEnd) {
    out.add({
      kind: 'unchecked',
      severity: 'note',
      message: `the browser lags ${views.node.size - views.browser.size} leaves behind the node: leaves from ${gapEnd} on were not read`,
    })
  }
  return found
}

/** Opens every readable leaf: sealed leaves with the key, disclosure leaves' disclosed leaves with their content keys. */
async function openLeaves(views: ReaderViews, opener: Opener, out: Findings): Promise<OpenedTransaction[]> {
  const indexes = await readableLeaves(views, opener.kid, out)
  const failure = (index: number, message: string) =>
    out.add({ kind: 'leaf', severity: 'failure', message: `leaf ${index}: ${message}`, leafIndex: index })
  const opened = await mapBounded(
    indexes,
    leafReadsInFlightMax,
    async (index): Promise<OpenedTransaction[]> => {
      try {
        const leaf = await provenLeaf(views, index)
        if (leaf.v === 1) return [{ index, time: leaf.time, signed: leaf.signed, disclosed: false }]
        if (leaf.type !== 'disclosure') {
          const signed = leafTransaction(leaf, { opener })
          if (signed === null) {
            failure(index, `the browser lists it for key ${opener.kid}, which it is not sealed for`)
            return []
          }
          return [{ index, time: leaf.time, signed, disclosed: false }]
        }
        const disclosed: OpenedTransaction[] = []
        for (const key of leaf.keys) {
          if (!('recipients' in key)) continue
          const cek = opener.unwrap({ recipients: key.recipients })
          if (cek === null) continue
          const target = await provenLeaf(views, key.leaf)
          const signed = target.v === 2 ? leafTransaction(target, { cek }) : null
          if (signed === null || target.v !== 2) {
            failure(key.leaf, `disclosed by leaf ${index}, but it is not a sealed transaction`)
            continue
          }
          disclosed.push({ index: key.leaf, time: target.time, signed, disclosed: true })
        }
        return disclosed
      } catch (error) {
        if (isUnreachable(error)) throw error
        failure(index, (error as Error).message)
        return []
      }
    },
  )
  return opened.flat().sort((a, b) => a.index - b.index)
}

/** Checks each opened transaction's client signature with the signer's key as the node shows it. */
async function checkSignatures(
  views: ReaderViews,
  reads: SignedReads,
  opened: readonly OpenedTransaction[],
  out: Findings,
): Promise<{ verified: number; unchecked: number; failed: number }> {
  const keys = new Map<string, Promise<Uint8Array | 'forbidden'>>()
  const signerKey = (signer: string) => {
    let key = keys.get(signer)
    if (key === undefined) {
      key = (async () => {
        try {
          const shown = (await reads.get(`/v1/keys/${signer}`)) as { key: { signing: OkpJwk } }
          // The key id is the key's thumbprint: a key the node shows for it certifies itself.
          if (keyId(shown.key.signing) !== signer) throw new Error(`the node shows another key for ${signer}`)
          return jwkPublicKey(shown.key.signing, 'Ed25519')
        } catch (error) {
          if (error instanceof VmError && error.status === 403) return 'forbidden'
          throw error
        }
      })()
      keys.set(signer, key)
    }
    return key
  }
  const counts = { verified: 0, unchecked: 0, failed: 0 }
  const fail = (entry: OpenedTransaction, message: string) => {
    counts.failed++
    out.add({
      kind: 'signature',
      severity: 'failure',
      message: `leaf ${entry.index}: ${message}`,
      leafIndex: entry.index,
    })
  }
  await mapBounded(opened, leafReadsInFlightMax, async (entry) => {
    const { tx, sig } = entry.signed
    if (tx.node !== views.nodeId) return fail(entry, `transaction ${tx.id} is bound to node ${tx.node}`)
    let publicKey: Uint8Array | 'forbidden'
    try {
      publicKey = tx.signer === views.nodeId ? views.nodeKey : await signerKey(tx.signer)
    } catch (error) {
      if (isUnreachable(error)) throw error
      return fail(
        entry,
        `the key ${tx.signer} that signed transaction ${tx.id} cannot be shown: ${(error as Error).message}`,
      )
    }
    if (publicKey === 'forbidden') {
      counts.unchecked++
      return
    }
    if (verify(fromBase64Url(sig), transactionBytes(tx), publicKey)) counts.verified++
    else fail(entry, `the signature of transaction ${tx.id} by key ${tx.signer} does not verify`)
  })
  return counts
}

interface ExpectedEntry {
  readonly account: string
  readonly leaf: number
  readonly transactionId: string
  readonly transferId: string
  readonly kind: 'debit' | 'credit'
  readonly phase: string
  readonly amount: bigint
  readonly time: string
}

interface Replay {
  /** Accounts of the person that the log shows opened: id → leaf, asset, closed. */
  readonly accounts: Map<string, { leaf: number; asset: string; closed: boolean }>
  readonly entries: Map<string, ExpectedEntry>
  readonly balances: Map<string, Balances>
  /** Accounts whose balances the log cannot give: a post, void or expiry of a transfer not readable. */
  readonly incomplete: Set<string>
  /** The person's registration is readable: the key reads the person's whole history. */
  registered: boolean
}

const entryKey = (account: string, leaf: number, transferId: string, kind: string) =>
  `${account}/${leaf}/${transferId}/${kind}`

/** Replays the person's own transactions into the entries and balances they imply (the funnel's rules). */
function replay(person: string, owned: ReadonlySet<string>, opened: readonly OpenedTransaction[]): Replay {
  const result: Replay = {
    accounts: new Map(),
    entries: new Map(),
    balances: new Map(),
    incomplete: new Set(),
    registered: false,
  }
  const transfers = new Map<string, { debit: string; credit: string; amount: bigint }>()
  const mine = (account: string) => owned.has(account) || result.accounts.has(account)
  const balance = (account: string) => {
    let value = result.balances.get(account)
    if (value === undefined) {
      value = { debitsPending: 0n, debitsPosted: 0n, creditsPending: 0n, creditsPosted: 0n }
      result.balances.set(account, value)
    }
    return value
  }
  const entry = (
    at: OpenedTransaction,
    transfer: { debit: string; credit: string },
    transferId: string,
    phase: string,
    amount: bigint,
  ) => {
    for (const [account, kind] of [
      [transfer.debit, 'debit'],
      [transfer.credit, 'credit'],
    ] as const) {
      if (!mine(account)) continue
      const expected = {
        account,
        leaf: at.index,
        transactionId: at.signed.tx.id,
        transferId,
        kind,
        phase,
        amount,
        time: at.time,
      }
      result.entries.set(entryKey(account, at.index, transferId, kind), expected)
    }
  }
  const resolve = (id: string) => {
    const transfer = transfers.get(id)
    if (transfer === undefined) {
      // The transfer is older than what this key reads: its accounts' balances cannot be replayed.
      for (const account of owned) result.incomplete.add(account)
      return null
    }
    return transfer
  }
  for (const at of opened) {
    if (at.disclosed) continue
    const { tx } = at.signed
    switch (tx.type) {
      case 'register_person':
        if (tx.person.id === person) result.registered = true
        break
      case 'open_account':
        if (tx.owner === person)
          result.accounts.set(tx.account, { leaf: at.index, asset: tx.asset, closed: false })
        break
      case 'close_account': {
        const account = result.accounts.get(tx.account)
        if (account !== undefined) account.closed = true
        break
      }
      case 'transfer': {
        const amount = BigInt(tx.amount)
        transfers.set(tx.id, { debit: tx.debit, credit: tx.credit, amount })
        const pending = tx.pending !== undefined
        if (mine(tx.debit)) balance(tx.debit)[pending ? 'debitsPending' : 'debitsPosted'] += amount
        if (mine(tx.credit)) balance(tx.credit)[pending ? 'creditsPending' : 'creditsPosted'] += amount
        entry(at, tx, tx.id, pending ? 'pending' : 'posted', amount)
        break
      }
      case 'post_pending': {
        const transfer = resolve(tx.pending)
        if (transfer === null) break
        const posted = tx.amount === undefined ? transfer.amount : BigInt(tx.amount)
        if (mine(transfer.debit)) {
          balance(transfer.debit).debitsPending -= transfer.amount
          balance(transfer.debit).debitsPosted += posted
        }
        if (mine(transfer.credit)) {
          balance(transfer.credit).creditsPending -= transfer.amount
          balance(transfer.credit).creditsPosted += posted
        }
        entry(at, transfer, tx.pending, 'post', posted)
        break
      }
      case 'void_pending':
      case 'expire_pending': {
        const ids = tx.type === 'void_pending' ? [tx.pending] : tx.pending
        for (const id of ids) {
          const transfer = resolve(id)
          if (transfer === null) continue
          if (mine(transfer.debit)) balance(transfer.debit).debitsPending -= transfer.amount
          if (mine(transfer.credit)) balance(transfer.credit).creditsPending -= transfer.amount
          entry(at, transfer, id, tx.type === 'void_pending' ? 'void' : 'expire', transfer.amount)
        }
        break
      }
      default:
        break
    }
  }
  return result
}

/**
 * The key checks: every readable leaf proven and opened, every client signature checked, and the
 * node's accounts, statements and balances for the person compared with what the leaves say.
 */
export async function checkReader(
  views: ReaderViews,
  keys: ReaderKeys,
  snapshot: NodeSnapshot,
  out: Findings,
): Promise<void> {
  const opener = new Opener(keys.encryption.secretKey)
  const reads = new SignedReads(views.nodeUrl, deviceKeys(keys, snapshot.person))
  const { person } = snapshot
  out.check(
    'key',
    true,
    `key ${snapshot.keyId} of person ${person}, registered at leaf ${snapshot.addedLeaf}`,
  )

  const failuresBefore = out.findings.length
  const opened = await openLeaves(views, opener, out)
  const disclosed = opened.filter((entry) => entry.disclosed).length
  out.check(
    'readable leaves',
    out.findings.slice(failuresBefore).every((finding) => finding.severity !== 'failure'),
    `${opened.length} transactions (${disclosed} disclosed by views) proven in the verified checkpoints and decrypted with ${opener.kid}`,
  )
  const signatures = await checkSignatures(views, reads, opened, out)
  if (signatures.unchecked > 0) {
    out.add({
      kind: 'unchecked',
      severity: 'note',
      message: `${signatures.unchecked} client signatures unchecked, not failed: the node does not show their signers' keys to this person`,
    })
  }
  out.check(
    'client signatures',
    signatures.failed === 0,
    `${signatures.verified} verified, ${signatures.failed} failed, ${signatures.unchecked} unchecked (signer key not shown)`,
  )
  compareWithNode(snapshot, opened, out)
}

/** What the node says and what the readable leaves say, and where failures go. */
interface Comparison {
  readonly snapshot: NodeSnapshot
  readonly log: Replay
  readonly owned: ReadonlySet<string>
  readonly out: Findings
  failure(finding: Omit<Finding, 'severity'>): void
}

function compareWithNode(snapshot: NodeSnapshot, opened: readonly OpenedTransaction[], out: Findings): void {
  const owned = new Set(snapshot.accounts.map((account) => account.id))
  const comparison: Comparison = {
    snapshot,
    log: replay(snapshot.person, owned, opened),
    owned,
    out,
    failure: (finding) => out.add({ ...finding, severity: 'failure' }),
  }
  compareAccounts(comparison)
  compareStatements(comparison)
  compareBalances(comparison)
}

/** The person's accounts: those the node lists and those the leaves opened, with asset and state. */
function compareAccounts({ snapshot, log, owned, out, failure }: Comparison): void {
  const { person } = snapshot
  let accountFailures = 0
  for (const account of snapshot.accounts) {
    const opening = log.accounts.get(account.id)
    if (opening === undefined) {
      if (log.registered) {
        accountFailures++
        failure({
          kind: 'account',
          message: `the node lists account ${account.id}, which no readable leaf opened for person ${person}`,
          account: account.id,
        })
      }
      continue
    }
    for (const [field, nodeSays, logSays] of [
      ['asset', account.asset, opening.asset],
      ['closed', String(account.closed), String(opening.closed)],
    ] as const) {
      if (nodeSays === logSays) continue
      accountFailures++
      failure({
        kind: 'account',
        message: `account ${account.id} ${field}: node says ${nodeSays}, log says ${logSays} (leaf ${opening.leaf})`,
        account: account.id,
        field,
        nodeSays,
        logSays,
        leafIndex: opening.leaf,
      })
    }
  }
  for (const [id, opening] of log.accounts) {
    if (owned.has(id)) continue
    accountFailures++
    failure({
      kind: 'account',
      message: `leaf ${opening.leaf} opened account ${id} for person ${person}; the node does not list it`,
      account: id,
      leafIndex: opening.leaf,
    })
  }
  out.check(
    'accounts',
    accountFailures === 0,
    `${snapshot.accounts.length} accounts, ${log.accounts.size} opened in readable leaves`,
  )
}

/** Every statement entry against the leaf it names, and every entry the leaves imply against the statements. */
function compareStatements({ snapshot, log, out, failure }: Comparison): void {
  const { addedLeaf } = snapshot
  // A key registered with the person reads the person's whole history; one added later, from then on.
  const fromLeaf = log.registered ? 0 : addedLeaf
  let entryFailures = 0
  let compared = 0
  let unchecked = 0
  for (const account of snapshot.accounts) {
    const statement = snapshot.entries.get(account.id)!
    for (const entry of statement.entries) {
      if (entry.leaf < fromLeaf) {
        unchecked++
        continue
      }
      const key = entryKey(account.id, entry.leaf, entry.transferId, entry.kind)
      const expected = log.entries.get(key)
      log.entries.delete(key)
      if (expected === undefined) {
        entryFailures++
        failure({
          kind: 'entry',
          message: `account ${account.id}: the node's ${entry.kind} entry of ${entry.amount} for transfer ${entry.transferId} at leaf ${entry.leaf} is backed by no readable leaf`,
          account: account.id,
          leafIndex: entry.leaf,
          nodeSays: `${entry.kind} ${entry.phase} ${entry.amount}`,
          logSays: 'no such entry',
        })
        continue
      }
      compared++
      for (const [field, nodeSays, logSays] of [
        ['transactionId', entry.transactionId, expected.transactionId],
        ['phase', entry.phase, expected.phase],
        ['amount', entry.amount, expected.amount.toString()],
        ['time', String(Date.parse(entry.time)), String(Date.parse(expected.time))],
      ] as const) {
        if (nodeSays === logSays) continue
        entryFailures++
        failure({
          kind: 'entry',
          message: `account ${account.id} entry at leaf ${entry.leaf} (${entry.kind}, transfer ${entry.transferId}) ${field}: node says ${nodeSays}, log says ${logSays}`,
          account: account.id,
          field,
          nodeSays,
          logSays,
          leafIndex: entry.leaf,
        })
      }
    }
    if (!statement.complete) {
      out.add({
        kind: 'unchecked',
        severity: 'note',
        message: `account ${account.id}: only the first ${statementEntriesMax} statement entries were compared`,
        account: account.id,
      })
    }
  }
  for (const expected of log.entries.values()) {
    if (!snapshot.entries.get(expected.account)?.complete) continue
    entryFailures++
    failure({
      kind: 'entry',
      message: `leaf ${expected.leaf} moves account ${expected.account} (${expected.kind} ${expected.phase} ${expected.amount}); the node's statement has no such entry`,
      account: expected.account,
      leafIndex: expected.leaf,
      nodeSays: 'no such entry',
      logSays: `${expected.kind} ${expected.phase} ${expected.amount}`,
    })
  }
  if (unchecked > 0) {
    out.add({
      kind: 'unchecked',
      severity: 'note',
      message: `${unchecked} statement entries are older than this key (added at leaf ${addedLeaf}): not sealed for it, unchecked`,
    })
  }
  out.check(
    'statements',
    entryFailures === 0,
    `${compared} entries match their leaves, ${unchecked} older than the key`,
  )
}

/** Balances replayed from the leaves, for the accounts whose whole history the key reads. */
function compareBalances({ snapshot, log, out, failure }: Comparison): void {
  let balanceFailures = 0
  let balancesCompared = 0
  for (const account of snapshot.accounts) {
    const opening = log.accounts.get(account.id)
    const complete = snapshot.entries.get(account.id)!.complete
    if (opening === undefined || log.incomplete.has(account.id) || !complete) {
      out.add({
        kind: 'unchecked',
        severity: 'note',
        message: `account ${account.id}: balances unchecked, its history is not all readable with this key`,
        account: account.id,
      })
      continue
    }
    balancesCompared++
    const replayed = log.balances.get(account.id) ?? {
      debitsPending: 0n,
      debitsPosted: 0n,
      creditsPending: 0n,
      creditsPosted: 0n,
    }
    for (const field of balanceFields) {
      const nodeSays = account[field]
      const logSays = replayed[field].toString()
      if (nodeSays === logSays) continue
      balanceFailures++
      failure({
        kind: 'balance',
        message: `account ${account.id} ${field}: node says ${nodeSays}, log says ${logSays}`,
        account: account.id,
        field,
        nodeSays,
        logSays,
      })
    }
  }
  out.check(
    'balances',
    balanceFailures === 0,
    `${balancesCompared} accounts' balances replayed from their leaves`,
  )
}
