import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { VmError } from '../../../protocol/errors.js'
import { AssetId, Id, KeyId, type SignedTransaction } from '../../../protocol/transaction.js'
import {
  accountFromRow,
  entryFromRow,
  keyFromRow,
  personFromRow,
  viewFromRow,
} from '../../ledger/ledger-store.js'
import type { AccountRecord, ViewRecord } from '../../ledger/model.js'
import { accountAccess, authenticate, isStaff, requirePerson } from '../authorize.js'
import type { ApiContext } from '../context.js'

/** Page sizes of list reads. */
export const pageSizeMax = 1_000
export const pageSizeDefault = 100

const PageQuery = Type.Object(
  {
    cursor: Type.Optional(Type.Integer({ minimum: 0, description: 'the nextCursor of the previous page' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: pageSizeMax, default: pageSizeDefault })),
  },
  { additionalProperties: false },
)
const signed = 'Signed request (RFC 9421): readable by the owner and by staff.'
const viewed =
  'Signed request (RFC 9421): readable by the owner, by staff, and through a view (to the grantee, or to anyone who signs with a registered key) that is not revoked.'

/** An account without its balances: balances are of the present, which a view of a past range does not cover. */
function accountIdentity(account: AccountRecord) {
  return {
    id: account.id,
    owner: account.owner,
    asset: account.asset,
    flags: account.flags,
    issuanceLimit: account.issuanceLimit?.toString() ?? null,
    closed: account.closed,
  }
}

export function accountView(account: AccountRecord) {
  const balance = account.creditsPosted - account.debitsPosted
  return {
    ...accountIdentity(account),
    balance: balance.toString(),
    available: (balance - account.debitsPending).toString(),
    debitsPending: account.debitsPending.toString(),
    debitsPosted: account.debitsPosted.toString(),
    creditsPending: account.creditsPending.toString(),
    creditsPosted: account.creditsPosted.toString(),
  }
}

export function viewJson(view: ViewRecord) {
  return {
    id: view.id,
    grantor: view.grantor,
    grantee: view.grantee ?? 'everyone',
    accounts: view.accounts,
    from: new Date(view.from).toISOString(),
    until: new Date(view.until).toISOString(),
    revoked: view.revoked,
    createdLeaf: view.createdLeaf,
    revokedLeaf: view.revokedLeaf,
  }
}

export function readRoutes(app: FastifyInstance, context: ApiContext): void {
  const { db } = context

  async function loadAccount(id: string): Promise<AccountRecord> {
    const row = await db.selectFrom('ledger_accounts').selectAll().where('id', '=', id).executeTakeFirst()
    if (row === undefined) throw new VmError('not_found', `no account ${id}`, { status: 404 })
    return accountFromRow(row)
  }

  app.get(
    '/v1/keys/:keyId',
    {
      schema: {
        tags: ['persons'],
        summary: 'A registered key and its person',
        description: signed,
        params: Type.Object({ keyId: KeyId }),
      },
    },
    async (request) => {
      const principal = await authenticate(context, request)
      const { keyId } = request.params as { keyId: string }
      const row = await db
        .selectFrom('ledger_keys')
        .selectAll()
        .where('key_id', '=', keyId)
        .executeTakeFirst()
      if (row === undefined) throw new VmError('not_found', `no key ${keyId}`, { status: 404 })
      requirePerson(principal, [row.person_id])
      const key = keyFromRow(row)
      return {
        keyId: key.keyId,
        person: key.personId,
        key: key.key,
        revoked: key.revoked,
        addedLeaf: key.addedLeaf,
        revokedLeaf: key.revokedLeaf,
      }
    },
  )

  app.get(
    '/v1/persons/:id',
    {
      schema: {
        tags: ['persons'],
        summary: 'A person, their roles, KYC status and keys',
        description: signed,
        params: Type.Object({ id: Id }),
      },
    },
    async (request) => {
      const principal = await authenticate(context, request)
      const { id } = request.params as { id: string }
      requirePerson(principal, [id])
      const row = await db.selectFrom('ledger_persons').selectAll().where('id', '=', id).executeTakeFirst()
      if (row === undefined) throw new VmError('not_found', `no person ${id}`, { status: 404 })
      const person = personFromRow(row)
      const keys = await db.selectFrom('ledger_keys').selectAll().where('person_id', '=', id).execute()
      return {
        ...person.person,
        roles: person.roles,
        kyc: person.kyc,
        keys: keys.map(keyFromRow).map((k) => ({ keyId: k.keyId, key: k.key, revoked: k.revoked })),
      }
    },
  )

  app.get(
    '/v1/persons/:id/accounts',
    {
      schema: {
        tags: ['accounts'],
        summary: "A person's accounts with balances",
        description: signed,
        params: Type.Object({ id: Id }),
      },
    },
    async (request) => {
      const principal = await authenticate(context, request)
      const { id } = request.params as { id: string }
      requirePerson(principal, [id])
      const rows = await db
        .selectFrom('ledger_accounts')
        .selectAll()
        .where('owner', '=', id)
        .orderBy('id')
        .limit(pageSizeMax)
        .execute()
      return { accounts: rows.map(accountFromRow).map(accountView) }
    },
  )

  app.get(
    '/v1/persons/:id/views',
    {
      schema: {
        tags: ['persons'],
        summary: 'The views a person granted or received (views to everyone are not listed here)',
        description: signed,
        params: Type.Object({ id: Id }),
      },
    },
    async (request) => {
      const principal = await authenticate(context, request)
      const { id } = request.params as { id: string }
      requirePerson(principal, [id])
      const rows = await db
        .selectFrom('ledger_views')
        .selectAll()
        .where((eb) => eb.or([eb('grantor', '=', id), eb('grantee', '=', id)]))
        .orderBy('created_leaf')
        .limit(pageSizeMax)
        .execute()
      return { views: rows.map(viewFromRow).map(viewJson) }
    },
  )

  app.get(
    '/v1/accounts/:id',
    {
      schema: {
        tags: ['accounts'],
        summary: 'An account and its balances',
        description: `${viewed} Through a view, balances are shown only while the present is in its range.`,
        params: Type.Object({ id: Id }),
      },
    },
    async (request) => {
      const principal = await authenticate(context, request)
      const account = await loadAccount((request.params as { id: string }).id)
      const ranges = await accountAccess(context, principal, account)
      const now = Date.now()
      if (ranges === null || ranges.some(([from, until]) => from <= now && now < until))
        return accountView(account)
      return accountIdentity(account)
    },
  )

  app.get(
    '/v1/accounts/:id/statement',
    {
      schema: {
        tags: ['accounts'],
        summary: "An account's entries in log order, a page at a time",
        description: `${viewed} Through a view, only the entries whose time is in its range.`,
        params: Type.Object({ id: Id }),
        querystring: PageQuery,
      },
    },
    async (request) => {
      const principal = await authenticate(context, request)
      const account = await loadAccount((request.params as { id: string }).id)
      const ranges = await accountAccess(context, principal, account)
      const { cursor = 0, limit = pageSizeDefault } = request.query as { cursor?: number; limit?: number }
      let query = db
        .selectFrom('ledger_entries')
        .selectAll()
        .where('account', '=', account.id)
        .where('seq', '>', cursor)
      if (ranges !== null) {
        query = query.where((eb) =>
          eb.or(ranges.map(([from, until]) => eb.and([eb('time', '>=', from), eb('time', '<', until)]))),
        )
      }
      const rows = await query.orderBy('seq').limit(limit).execute()
      const entries = rows.map(entryFromRow)
      return {
        account: account.id,
        entries: entries.map((e) => ({
          ...e,
          amount: e.amount.toString(),
          time: new Date(e.time).toISOString(),
        })),
        nextCursor: entries.length === limit ? entries.at(-1)!.seq : null,
      }
    },
  )

  app.get(
    '/v1/assets',
    { schema: { tags: ['assets'], summary: 'Assets issued on this node (public)' } },
    async () => {
      const rows = await db.selectFrom('ledger_assets').selectAll().orderBy('id').limit(pageSizeMax).execute()
      return {
        assets: rows.map((row) => ({ id: row.id, issuer: row.issuer, scale: row.scale, name: row.name })),
      }
    },
  )

  app.get(
    '/v1/assets/:id',
    { schema: { tags: ['assets'], summary: 'One asset (public)', params: Type.Object({ id: AssetId }) } },
    async (request) => {
      const { id } = request.params as { id: string }
      const row = await db.selectFrom('ledger_assets').selectAll().where('id', '=', id).executeTakeFirst()
      if (row === undefined) throw new VmError('not_found', `no asset ${id}`, { status: 404 })
      return { id: row.id, issuer: row.issuer, scale: row.scale, name: row.name }
    },
  )

  app.get(
    '/v1/documents/:hash',
    {
      schema: {
        tags: ['transactions'],
        summary: 'A signed transaction by the SHA-256 of its RFC 8785 bytes',
        description:
          'Readable by its signer, the owners of the accounts it moves, and staff. Signed request (RFC 9421).',
        params: Type.Object({ hash: Type.String({ pattern: '^[0-9a-f]{64}$' }) }),
      },
    },
    async (request) => {
      const principal = await authenticate(context, request)
      const { hash } = request.params as { hash: string }
      const row = await db
        .selectFrom('pool')
        .select('signed')
        .where('content_hash', '=', hash)
        .executeTakeFirst()
      if (row === undefined)
        throw new VmError('not_found', `no transaction with hash ${hash}`, { status: 404 })
      const document = JSON.parse(row.signed) as SignedTransaction
      if (!isStaff(principal)) requirePerson(principal, await parties(document))
      return document
    },
  )

  /** The persons a transaction concerns: its signer and the owners of the accounts it moves. */
  async function parties(document: SignedTransaction): Promise<string[]> {
    const signer = await context.keys.get(document.tx.signer)
    const out = signer === null ? [] : [signer.personId]
    const { tx } = document
    let accountIds: string[] = []
    if (tx.type === 'transfer') accountIds = [tx.debit, tx.credit]
    if (tx.type === 'post_pending' || tx.type === 'void_pending') {
      const pending = await db
        .selectFrom('ledger_transfers')
        .select(['debit', 'credit'])
        .where('id', '=', tx.pending)
        .executeTakeFirst()
      if (pending !== undefined) accountIds = [pending.debit, pending.credit]
    }
    if (accountIds.length > 0) {
      const owners = await db
        .selectFrom('ledger_accounts')
        .select('owner')
        .where('id', 'in', accountIds)
        .execute()
      for (const owner of owners) out.push(owner.owner)
    }
    return out
  }
}
