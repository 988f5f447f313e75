import type { Insertable, Kysely, Selectable, Transaction } from 'kysely'
import type { AccountFlag, DeviceKey, KycStatus, Person, Role } from '../../protocol/transaction.js'
import { insertRows } from '../storage/batch-insert.js'
import type {
  AccountTable,
  Database,
  EntryTable,
  KeyTable,
  PersonTable,
  TransferTable,
  ViewTable,
} from '../storage/schema.js'
import type {
  AccountRecord,
  EntryRecord,
  KeyRecord,
  PersonRecord,
  TransferRecord,
  TransferState,
  ViewRecord,
} from './model.js'
import type { LedgerChanges, LedgerState } from './state-machine.js'

type Executor = Kysely<Database> | Transaction<Database>

export function personFromRow(row: Selectable<PersonTable>): PersonRecord {
  return {
    id: row.id,
    person: JSON.parse(row.person) as Person,
    roles: JSON.parse(row.roles) as Role[],
    kyc: row.kyc as KycStatus,
    createdLeaf: row.created_leaf,
  }
}

export function keyFromRow(row: Selectable<KeyTable>): KeyRecord {
  return {
    keyId: row.key_id,
    personId: row.person_id,
    key: JSON.parse(row.device_key) as DeviceKey,
    revoked: row.revoked === 1,
    addedLeaf: row.added_leaf,
    revokedLeaf: row.revoked_leaf,
  }
}

export function accountFromRow(row: Selectable<AccountTable>): AccountRecord {
  return {
    id: row.id,
    owner: row.owner,
    asset: row.asset,
    flags: JSON.parse(row.flags) as AccountFlag[],
    issuanceLimit: row.issuance_limit === null ? null : BigInt(row.issuance_limit),
    debitsPending: BigInt(row.debits_pending),
    debitsPosted: BigInt(row.debits_posted),
    creditsPending: BigInt(row.credits_pending),
    creditsPosted: BigInt(row.credits_posted),
    closed: row.closed === 1,
    createdLeaf: row.created_leaf,
  }
}

export function transferFromRow(row: Selectable<TransferTable>): TransferRecord {
  return {
    id: row.id,
    debit: row.debit,
    credit: row.credit,
    asset: row.asset,
    amount: BigInt(row.amount),
    state: row.state as TransferState,
    expiresAt: row.expires_at,
    postedAmount: row.posted_amount === null ? null : BigInt(row.posted_amount),
    memo: row.memo,
    leaf: row.leaf,
    time: row.time,
  }
}

export function entryFromRow(row: Selectable<EntryTable>): EntryRecord & { readonly seq: number } {
  return {
    seq: row.seq,
    account: row.account,
    leaf: row.leaf,
    transactionId: row.transaction_id,
    transferId: row.transfer_id,
    kind: row.kind as EntryRecord['kind'],
    phase: row.phase as EntryRecord['phase'],
    amount: BigInt(row.amount),
    time: row.time,
  }
}

export function viewFromRow(row: Selectable<ViewTable>): ViewRecord {
  return {
    id: row.id,
    grantor: row.grantor,
    grantee: row.grantee,
    accounts: JSON.parse(row.accounts) as string[],
    from: row.from_time,
    until: row.until_time,
    revoked: row.revoked === 1,
    createdLeaf: row.created_leaf,
    revokedLeaf: row.revoked_leaf,
  }
}

/** Loads the funnel's hot state. */
export async function loadLedgerSnapshot(db: Executor): Promise<LedgerState> {
  const [persons, keys, assets, accounts, transfers, views] = await Promise.all([
    db.selectFrom('ledger_persons').selectAll().execute(),
    db.selectFrom('ledger_keys').selectAll().execute(),
    db.selectFrom('ledger_assets').selectAll().execute(),
    db.selectFrom('ledger_accounts').selectAll().execute(),
    db.selectFrom('ledger_transfers').selectAll().where('expires_at', 'is not', null).execute(),
    db.selectFrom('ledger_views').selectAll().execute(),
  ])
  return {
    persons: persons.map(personFromRow),
    keys: keys.map(keyFromRow),
    assets: assets.map((row) => ({
      id: row.id,
      issuer: row.issuer,
      scale: row.scale,
      name: row.name,
      createdLeaf: row.created_leaf,
    })),
    accounts: accounts.map(accountFromRow),
    transfers: transfers.map(transferFromRow),
    views: views.map(viewFromRow),
  }
}

/** Writes one batch of ledger effects; called inside the funnel's block transaction. */
export async function writeLedgerChanges(trx: Executor, changes: LedgerChanges): Promise<void> {
  await insertRows(
    trx,
    'ledger_persons',
    changes.persons.map(
      (p): Insertable<PersonTable> => ({
        id: p.id,
        kind: p.person.kind,
        person: JSON.stringify(p.person),
        roles: JSON.stringify(p.roles),
        kyc: p.kyc,
        created_leaf: p.createdLeaf,
      }),
    ),
    ['id'],
  )
  await insertRows(
    trx,
    'ledger_keys',
    changes.keys.map(
      (k): Insertable<KeyTable> => ({
        key_id: k.keyId,
        person_id: k.personId,
        device_key: JSON.stringify(k.key),
        revoked: k.revoked ? 1 : 0,
        added_leaf: k.addedLeaf,
        revoked_leaf: k.revokedLeaf,
      }),
    ),
    ['key_id'],
  )
  await insertRows(
    trx,
    'ledger_assets',
    changes.assets.map((a) => ({
      id: a.id,
      issuer: a.issuer,
      scale: a.scale,
      name: a.name,
      created_leaf: a.createdLeaf,
    })),
    ['id'],
  )
  await insertRows(
    trx,
    'ledger_accounts',
    changes.accounts.map(
      (a): Insertable<AccountTable> => ({
        id: a.id,
        owner: a.owner,
        asset: a.asset,
        flags: JSON.stringify(a.flags),
        issuance_limit: a.issuanceLimit === null ? null : a.issuanceLimit.toString(),
        debits_pending: a.debitsPending.toString(),
        debits_posted: a.debitsPosted.toString(),
        credits_pending: a.creditsPending.toString(),
        credits_posted: a.creditsPosted.toString(),
        closed: a.closed ? 1 : 0,
        created_leaf: a.createdLeaf,
      }),
    ),
    ['id'],
  )
  await insertRows(
    trx,
    'ledger_transfers',
    changes.transfers.map(
      (t): Insertable<TransferTable> => ({
        id: t.id,
        debit: t.debit,
        credit: t.credit,
        asset: t.asset,
        amount: t.amount.toString(),
        state: t.state,
        expires_at: t.expiresAt,
        posted_amount: t.postedAmount === null ? null : t.postedAmount.toString(),
        memo: t.memo,
        leaf: t.leaf,
        time: t.time,
      }),
    ),
    ['id'],
  )
  await insertRows(
    trx,
    'ledger_views',
    changes.views.map(
      (v): Insertable<ViewTable> => ({
        id: v.id,
        grantor: v.grantor,
        grantee: v.grantee,
        accounts: JSON.stringify(v.accounts),
        from_time: v.from,
        until_time: v.until,
        revoked: v.revoked ? 1 : 0,
        created_leaf: v.createdLeaf,
        revoked_leaf: v.revokedLeaf,
      }),
    ),
    ['id'],
  )
  // A view's accounts never change; a revoked view comes again and finds its rows already there.
  const viewAccounts = changes.views.flatMap((v) => v.accounts.map((account) => ({ account, view_id: v.id })))
  await insertRows(trx, 'ledger_view_accounts', viewAccounts, ['account', 'view_id'])
  await insertRows(
    trx,
    'ledger_entries',
    changes.entries.map((e) => ({
      account: e.account,
      leaf: e.leaf,
      transaction_id: e.transactionId,
      transfer_id: e.transferId,
      kind: e.kind,
      phase: e.phase,
      amount: e.amount.toString(),
      time: e.time,
    })),
  )
}
