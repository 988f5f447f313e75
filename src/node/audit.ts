import type { Kysely } from 'kysely'
import { type BlockHeader, checkRawBlock, type RawBlock, validateRawBlock } from '../protocol/block.js'
import { fromBase64Url } from '../protocol/encoding.js'
import { Opener } from '../protocol/envelope.js'
import { verify } from '../protocol/keys.js'
import { decodeLeaf, type Leaf, leafSummary, leafTransaction } from '../protocol/leaf.js'
import type { Frontier } from '../protocol/merkle.js'
import { type SignedTransaction, transactionBytes } from '../protocol/transaction.js'
import { blockAt, latestBlock } from './chain/chain-store.js'
import { nodePrimitives } from './crypto/node-primitives.js'
import type { NodeIdentity } from './identity.js'
import { accountFromRow } from './ledger/ledger-store.js'
import type { AccountRecord } from './ledger/model.js'
import { resultCodes, resultName } from './ledger/result-codes.js'
import { Ledger } from './ledger/state-machine.js'
import type { Database } from './storage/schema.js'

export interface AuditFinding {
  readonly kind: 'block' | 'leaf' | 'account'
  readonly where: string
  readonly message: string
}

export interface AuditReport {
  readonly ok: boolean
  readonly blocks: number
  readonly leaves: number
  readonly accounts: number
  readonly findings: readonly AuditFinding[]
}

/** Findings listed before the audit stops reporting more. */
export const auditFindingsMax = 1_000

const balanceFields = ['debitsPending', 'debitsPosted', 'creditsPending', 'creditsPosted'] as const

/**
 * Rebuilds the ledger from the log alone (every block checked: chain link, signature, leaves bound to the
 * root; every transaction's signature checked and re-applied) and compares every account with the database.
 */
export async function audit(
  db: Kysely<Database>,
  identity: NodeIdentity,
  onProgress: (done: number, total: number) => void = () => {},
): Promise<AuditReport> {
  const findings: AuditFinding[] = []
  const find = (finding: AuditFinding) => {
    if (findings.length < auditFindingsMax) findings.push(finding)
  }
  const { nodeId } = identity
  const nodePublicKey = identity.signing.publicKey
  // The archive key opens every sealed leaf.
  const archive = new Opener(identity.encryption.secretKey, { primitives: nodePrimitives })
  const head = await latestBlock(db)
  const ledger = new Ledger(nodeId)
  let previous: { header: BlockHeader; frontier: Frontier } | null = null
  let leaves = 0
  const height = head?.header.height ?? -1
  for (let h = 0; h <= height; h++) {
    const block = await blockAt(db, h)
    if (block === null) {
      find({ kind: 'block', where: `block ${h}`, message: 'missing' })
      break
    }
    try {
      previous = {
        header: block.header,
        frontier: checkRawBlock(validateRawBlock(block), previous, nodePublicKey),
      }
    } catch (error) {
      find({ kind: 'block', where: `block ${h}`, message: (error as Error).message })
      break
    }
    reapplyBlock(ledger, block, archive, identity, (index, message) =>
      find({ kind: 'leaf', where: `block ${h} leaf ${index}`, message }),
    )
    leaves += block.leaves.length
    ledger.takeChanges()
    onProgress(h + 1, height + 1)
  }

  const rows = await db.selectFrom('ledger_accounts').selectAll().execute()
  const stored = new Map(rows.map((row) => [row.id, accountFromRow(row)]))
  let accounts = 0
  for (const rebuilt of ledger.accounts()) {
    accounts++
    const row = stored.get(rebuilt.id)
    stored.delete(rebuilt.id)
    if (row === undefined) {
      find({ kind: 'account', where: `account ${rebuilt.id}`, message: 'in the log but not in the database' })
      continue
    }
    for (const message of compareAccount(rebuilt, row))
      find({ kind: 'account', where: `account ${rebuilt.id}`, message })
  }
  for (const id of stored.keys())
    find({ kind: 'account', where: `account ${id}`, message: 'in the database but not in the log' })
  return { ok: findings.length === 0, blocks: height + 1, leaves, accounts, findings }
}

/** A transaction of a block, as the archive key opens it. */
export interface BlockTransaction {
  readonly index: number
  readonly time: string
  readonly signed: SignedTransaction
}

/**
 * Opens a block's leaves with the archive key and applies their transactions to `ledger`, linked chains
 * whole, as the funnel applied them: `find` hears of each leaf that cannot be read, is not sealed for the
 * archive key, has no valid signature or is not accepted again. Returns the block's transactions.
 */
export function reapplyBlock(
  ledger: Ledger,
  block: RawBlock,
  archive: Opener,
  identity: Pick<NodeIdentity, 'nodeId' | 'signing'>,
  find: (index: number, message: string) => void,
): BlockTransaction[] {
  const transactions: BlockTransaction[] = []
  block.leaves.forEach((bytes, i) => {
    const index = block.header.firstLeaf + i
    let leaf: Leaf
    let signed: SignedTransaction | null
    try {
      leaf = decodeLeaf(bytes)
      signed = leafTransaction(leaf, { opener: archive })
    } catch (error) {
      find(index, (error as Error).message)
      return
    }
    if (signed !== null) transactions.push({ index, time: leafSummary(leaf).time, signed })
    else if (leaf.v === 2 && leaf.type !== 'disclosure') find(index, 'not sealed for the archive key')
  })
  for (let start = 0; start < transactions.length; ) {
    let end = start
    while (transactions[end]!.signed.tx.linked === true && end + 1 < transactions.length) end++
    const chain = transactions.slice(start, end + 1)
    for (const { index, signed } of chain) {
      if (!signatureValid(ledger, signed, identity.nodeId, identity.signing.publicKey))
        find(index, `transaction ${signed.tx.id} has no valid signature`)
    }
    const codes = ledger.applyChain(
      chain.map(({ index, time, signed }) => ({ signed, context: { time: Date.parse(time), leaf: index } })),
    )
    codes.forEach((code, i) => {
      const { index, signed } = chain[i]!
      if (code !== resultCodes.ok)
        find(index, `transaction ${signed.tx.id} does not re-apply: ${resultName(code)}`)
    })
    start = end + 1
  }
  return transactions
}

function compareAccount(log: Readonly<AccountRecord>, database: AccountRecord): string[] {
  const out: string[] = []
  for (const field of balanceFields) {
    if (log[field] !== database[field])
      out.push(`${field}: log says ${log[field]}, database says ${database[field]}`)
  }
  if (log.owner !== database.owner) out.push(`owner: log says ${log.owner}, database says ${database.owner}`)
  if (log.asset !== database.asset) out.push(`asset: log says ${log.asset}, database says ${database.asset}`)
  if (log.closed !== database.closed)
    out.push(`closed: log says ${log.closed}, database says ${database.closed}`)
  return out
}

function signatureValid(
  ledger: Ledger,
  signed: SignedTransaction,
  nodeId: string,
  nodePublicKey: Uint8Array,
): boolean {
  const signer = signed.tx.signer
  const publicKey = signer === nodeId ? nodePublicKey : ledger.key(signer)?.key.signing.x
  if (publicKey === undefined) return false
  const key = typeof publicKey === 'string' ? fromBase64Url(publicKey) : publicKey
  return verify(fromBase64Url(signed.sig), transactionBytes(signed.tx), key)
}
