import type { FastifyRequest } from 'fastify'
import { VmError } from '../../protocol/errors.js'
import { parseRequestSignature } from '../../protocol/http-signature.js'
import type { Role } from '../../protocol/transaction.js'
import type { ApiContext } from './context.js'

export interface Principal {
  readonly keyId: string
  readonly personId: string
  readonly roles: readonly Role[]
}

const staffRoles: ReadonlySet<Role> = new Set(['admin', 'operator', 'auditor'])

export function isStaff(principal: Principal): boolean {
  return principal.roles.some((role) => staffRoles.has(role))
}

/** Checks the RFC 9421 signature of a read: a registered, unrevoked key of some person. */
export async function authenticate(context: ApiContext, request: FastifyRequest): Promise<Principal> {
  const parsed = parseRequestSignature(
    { method: request.method, authority: request.host, url: request.url },
    {
      'signature-input': headerValue(request.headers['signature-input']),
      signature: headerValue(request.headers.signature),
    },
  )
  const key = await context.keys.get(parsed.keyId)
  if (key === null)
    throw new VmError('signer_key_not_found', 'the signing key is not registered', { status: 401 })
  if (key.revoked) throw new VmError('signer_key_revoked', 'the signing key is revoked', { status: 401 })
  if (!parsed.verifyWith(key.publicKey)) {
    throw new VmError('invalid_signature', 'the request signature does not verify', { status: 401 })
  }
  return { keyId: key.keyId, personId: key.personId, roles: key.roles }
}

/** A time range [from, until) in epoch ms. */
export type Range = readonly [from: number, until: number]

/** Views consulted for one read: a grantee rarely holds more than a few of the same account. */
export const viewsPerReadMax = 100

/**
 * What the principal may read of an account: null for all of it (its owner, staff), else the ranges of
 * the views that grant it (to this person, or to everyone who can sign a read). No view: 403.
 */
export async function accountAccess(
  context: ApiContext,
  principal: Principal,
  account: { readonly id: string; readonly owner: string },
): Promise<readonly Range[] | null> {
  if (isStaff(principal) || principal.personId === account.owner) return null
  const views = await context.db
    .selectFrom('ledger_view_accounts')
    .innerJoin('ledger_views', 'ledger_views.id', 'ledger_view_accounts.view_id')
    .select(['from_time', 'until_time'])
    .where('ledger_view_accounts.account', '=', account.id)
    .where('ledger_views.revoked', '=', 0)
    .where((eb) =>
      eb.or([eb('ledger_views.grantee', '=', principal.personId), eb('ledger_views.grantee', 'is', null)]),
    )
    .limit(viewsPerReadMax)
    .execute()
  if (views.length === 0) throw forbidden()
  return views.map((view): Range => [view.from_time, view.until_time])
}

/** A person reads their own data; staff read everything. */
export function requirePerson(principal: Principal, personIds: readonly string[]): void {
  if (isStaff(principal) || personIds.includes(principal.personId)) return
  throw forbidden()
}

function forbidden(): VmError {
  return new VmError('forbidden', 'this key may not read that resource', { status: 403 })
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value
}
