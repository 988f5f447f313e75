import { type Static, type TObject, type TSchema, Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { amountPattern, scaleMax } from './amount.js'
import { canonicalBytes, canonicalize } from './canonical.js'
import { fromBase64Url, toBase64Url, utf8 } from './encoding.js'
import { assert, VmError } from './errors.js'
import { sha256 } from './hash.js'
import { keyId, type OkpJwk, sign } from './keys.js'

/**
 * Every change of state is a transaction signed by a key (RFC 8785 bytes, Ed25519).
 * Ids are chosen by the client before it submits, so a retry can never execute twice.
 */
export const idPattern = '^(?!0{32})[0-9a-f]{32}$'
export const Id = Type.String({
  pattern: idPattern,
  description: '128-bit id, 32 lowercase hex digits, not zero',
})
export const KeyId = Type.String({ pattern: '^[A-Za-z0-9_-]{43}$', description: 'RFC 7638 JWK thumbprint' })
export const AssetId = Type.String({
  pattern: '^[a-z0-9][a-z0-9.-]{0,62}:[A-Z0-9]{1,12}$',
  description: '<org>:<code>',
})
export const Amount = Type.String({
  pattern: amountPattern,
  description: 'unsigned integer of minor units, up to 128 bits',
})
export const Timestamp = Type.String({
  pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,3})?Z$',
  description: 'RFC 3339 UTC time',
})
const strict = { additionalProperties: false } as const
const Text = (maxLength: number) => Type.String({ minLength: 1, maxLength })

export const SigningJwk = Type.Object(
  {
    kty: Type.Literal('OKP'),
    crv: Type.Literal('Ed25519'),
    x: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }),
  },
  strict,
)
export const EncryptionJwk = Type.Object(
  {
    kty: Type.Literal('OKP'),
    crv: Type.Literal('X25519'),
    x: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }),
  },
  strict,
)
/**
 * A device key. With `use: 'read'` it signs reads only, never a transaction: that is how a key derived
 * from a person's password is registered, so that a guessed password can read but never move money.
 */
export const DeviceKey = Type.Object(
  {
    signing: SigningJwk,
    encryption: Type.Optional(EncryptionJwk),
    use: Type.Optional(Type.Literal('read', { description: 'signs reads only' })),
    label: Type.Optional(Text(64)),
  },
  strict,
)
export type DeviceKey = Static<typeof DeviceKey>

/** IVMS101 name and identification shapes (naturalPersonName / legalPersonName, nationalIdentification). */
export const NaturalPersonName = Type.Object(
  {
    primaryIdentifier: Text(100),
    secondaryIdentifier: Type.Optional(Text(100)),
    nameIdentifierType: Type.Union([
      Type.Literal('LEGL'),
      Type.Literal('ALIA'),
      Type.Literal('BIRT'),
      Type.Literal('MAID'),
      Type.Literal('MISC'),
    ]),
  },
  strict,
)
export const LegalPersonName = Type.Object(
  {
    legalPersonName: Text(100),
    legalPersonNameIdentifierType: Type.Union([
      Type.Literal('LEGL'),
      Type.Literal('SHRT'),
      Type.Literal('TRAD'),
    ]),
  },
  strict,
)
export const NationalIdentification = Type.Object(
  {
    nationalIdentifier: Text(35),
    nationalIdentifierType: Type.Union(
      ['ARNU', 'CCPT', 'RAID', 'DRLC', 'FIIN', 'TXID', 'SOCS', 'IDCD', 'LEIX', 'MISC'].map((t) =>
        Type.Literal(t),
      ),
    ),
    countryOfIssue: Type.Optional(Type.String({ pattern: '^[A-Z]{2}$' })),
    registrationAuthority: Type.Optional(Type.String({ pattern: '^RA[0-9]{6}$' })),
  },
  strict,
)
export const Role = Type.Union([Type.Literal('admin'), Type.Literal('operator'), Type.Literal('auditor')])
export type Role = Static<typeof Role>
export const KycStatus = Type.Union([
  Type.Literal('pending'),
  Type.Literal('verified'),
  Type.Literal('rejected'),
])
export type KycStatus = Static<typeof KycStatus>

export const Person = Type.Union([
  Type.Object(
    {
      id: Id,
      kind: Type.Literal('natural'),
      names: Type.Array(NaturalPersonName, { minItems: 1, maxItems: 4 }),
      nationalIdentification: Type.Optional(NationalIdentification),
      countryOfResidence: Type.Optional(Type.String({ pattern: '^[A-Z]{2}$' })),
      dateOfBirth: Type.Optional(Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}$' })),
    },
    strict,
  ),
  Type.Object(
    {
      id: Id,
      kind: Type.Literal('legal'),
      names: Type.Array(LegalPersonName, { minItems: 1, maxItems: 4 }),
      nationalIdentification: Type.Optional(NationalIdentification),
      countryOfRegistration: Type.Optional(Type.String({ pattern: '^[A-Z]{2}$' })),
    },
    strict,
  ),
])
export type Person = Static<typeof Person>

export const AccountFlag = Type.Union([
  Type.Literal('debits_must_not_exceed_credits'),
  Type.Literal('credits_must_not_exceed_debits'),
])
export type AccountFlag = Static<typeof AccountFlag>

/** Fields every transaction carries. `node` binds it to one node, so it cannot be replayed elsewhere. */
const common = {
  v: Type.Literal(1),
  id: Id,
  node: KeyId,
  created: Timestamp,
  signer: KeyId,
  linked: Type.Optional(
    Type.Literal(true, { description: 'succeeds or fails together with the next transaction of the batch' }),
  ),
}

function kind<T extends string, P extends Record<string, TSchema>>(type: T, properties: P) {
  return Type.Object({ ...common, type: Type.Literal(type), ...properties }, strict)
}

export const transactionSchemas = {
  genesis: kind('genesis', {
    origin: Text(128),
    nodeKey: SigningJwk,
    admin: Person,
    adminKey: DeviceKey,
  }),
  register_person: kind('register_person', {
    person: Person,
    keys: Type.Array(DeviceKey, { minItems: 0, maxItems: 8 }),
    roles: Type.Optional(Type.Array(Role, { minItems: 1, maxItems: 3, uniqueItems: true })),
  }),
  add_key: kind('add_key', { person: Id, key: DeviceKey }),
  revoke_key: kind('revoke_key', { person: Id, keyId: KeyId }),
  set_kyc: kind('set_kyc', { person: Id, status: KycStatus }),
  create_asset: kind('create_asset', {
    asset: AssetId,
    issuer: Id,
    scale: Type.Integer({ minimum: 0, maximum: scaleMax }),
    name: Text(64),
  }),
  open_account: kind('open_account', {
    account: Id,
    owner: Id,
    asset: AssetId,
    flags: Type.Array(AccountFlag, { maxItems: 2, uniqueItems: true }),
    issuanceLimit: Type.Optional(Amount),
  }),
  close_account: kind('close_account', { account: Id }),
  transfer: kind('transfer', {
    debit: Id,
    credit: Id,
    amount: Amount,
    asset: AssetId,
    pending: Type.Optional(
      Type.Object({ timeoutSeconds: Type.Integer({ minimum: 1, maximum: 31_536_000 }) }, strict),
    ),
    memo: Type.Optional(Type.String({ maxLength: 256 })),
  }),
  post_pending: kind('post_pending', { pending: Id, amount: Type.Optional(Amount) }),
  void_pending: kind('void_pending', { pending: Id }),
  expire_pending: kind('expire_pending', { pending: Type.Array(Id, { minItems: 1, maxItems: 8190 }) }),
  /**
   * A person lets a grantee (a person, an auditor, or everyone) see some of their own accounts: the
   * activity with block time in [from, until), and the balances while the present is in that range.
   */
  grant_view: kind('grant_view', {
    view: Id,
    accounts: Type.Array(Id, { minItems: 1, maxItems: 64, uniqueItems: true }),
    grantee: Type.Union([Id, Type.Literal('everyone')]),
    from: Timestamp,
    until: Timestamp,
  }),
  revoke_view: kind('revoke_view', { view: Id }),
} as const

export type TransactionType = keyof typeof transactionSchemas
export type TransactionOf<T extends TransactionType> = Static<(typeof transactionSchemas)[T]>
export type Transaction = { [T in TransactionType]: TransactionOf<T> }[TransactionType]
/** Types only the node itself signs; clients may not submit them. */
export const systemTransactionTypes: ReadonlySet<TransactionType> = new Set(['genesis', 'expire_pending'])

export const Signature = Type.String({
  pattern: '^[A-Za-z0-9_-]{86}$',
  description: 'Ed25519 signature, base64url',
})
export const SignedTransaction = Type.Object(
  { tx: Type.Union(Object.values(transactionSchemas) as TObject[]), sig: Signature },
  { ...strict, description: 'A transaction and the Ed25519 signature over its RFC 8785 bytes' },
)
export interface SignedTransaction {
  readonly tx: Transaction
  readonly sig: string
}

const envelopeCheck = TypeCompiler.Compile(Type.Object({ tx: Type.Object({}), sig: Signature }, strict))
const typeChecks = Object.fromEntries(
  Object.entries(transactionSchemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)]),
) as unknown as { [T in TransactionType]: ReturnType<typeof TypeCompiler.Compile> }

function firstError(check: ReturnType<typeof TypeCompiler.Compile>, value: unknown, prefix: string): VmError {
  const error = check.Errors(value).First()
  const where = error === undefined ? prefix : `${prefix}${error.path}`
  const message = error === undefined ? 'invalid value' : error.message
  const unknownField = error !== undefined && /additional properties|Unexpected property/i.test(message)
  return new VmError(unknownField ? 'unknown_field' : 'invalid_schema', `${where}: ${message}`, {
    status: 400,
    detail: { path: where },
  })
}

/** Checks shape, field formats and unknown fields; ledger rules are the funnel's. */
export function validateSignedTransaction(value: unknown): SignedTransaction {
  if (!envelopeCheck.Check(value)) throw firstError(envelopeCheck, value, '')
  const tx = (value as { tx: { type?: unknown } }).tx
  const type = tx.type
  if (typeof type !== 'string' || !Object.hasOwn(transactionSchemas, type)) {
    throw new VmError('invalid_schema', `/tx/type: unknown transaction type ${JSON.stringify(type)}`, {
      detail: { path: '/tx/type' },
    })
  }
  const check = typeChecks[type as TransactionType]
  if (!check.Check(tx)) throw firstError(check, tx, '/tx')
  if (hasLoneSurrogate(tx)) {
    // RFC 8785 (I-JSON) has no form for them: verifiers in other languages could not rebuild the signed bytes.
    throw new VmError('invalid_schema', '/tx: strings must be well-formed Unicode (no lone surrogates)')
  }
  return value as SignedTransaction
}

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

function hasLoneSurrogate(value: unknown): boolean {
  if (typeof value === 'string') return loneSurrogate.test(value)
  if (Array.isArray(value)) return value.some(hasLoneSurrogate)
  if (typeof value === 'object' && value !== null) return Object.values(value).some(hasLoneSurrogate)
  return false
}

export function transactionBytes(tx: Transaction): Uint8Array {
  return canonicalBytes(tx)
}

/** The RFC 8785 encodings of a signed transaction, computed once: the signed bytes, the stored text, its address. */
export interface EncodedTransaction {
  readonly txBytes: Uint8Array
  readonly signedText: string
  /** SHA-256 of `signedText`: the content address of seed 001's Hashtable. */
  readonly contentHash: Uint8Array
}

export function encodeSignedTransaction(signed: SignedTransaction): EncodedTransaction {
  const txText = canonicalize(signed.tx)
  // RFC 8785 orders "sig" before "tx", and a base64url signature needs no escaping: this is the canonical form.
  const signedText = `{"sig":"${signed.sig}","tx":${txText}}`
  return { txBytes: utf8(txText), signedText, contentHash: sha256(utf8(signedText)) }
}

export function signTransaction(tx: Transaction, secretKey: Uint8Array): SignedTransaction {
  return { tx, sig: toBase64Url(sign(transactionBytes(tx), secretKey)) }
}

export function signatureBytes(signed: SignedTransaction): Uint8Array {
  return fromBase64Url(signed.sig)
}

export function deviceKeyId(key: DeviceKey): string {
  return keyId(key.signing as OkpJwk)
}

/**
 * A new 128-bit id: the time in ms (48 bits), then 80 random bits (as UUIDv7 and TigerBeetle's ids do).
 * Ids made close in time sort close together, so the indexes on them grow at their right edge: a random
 * id would land on a random page of each index, and once the indexes outgrow the cache every insert
 * would read and write a page of its own. Any id matching the pattern is accepted all the same.
 */
export function newId(now = Date.now()): string {
  assert(
    Number.isSafeInteger(now) && now > 0 && now < 2 ** 48,
    "an id's time is a positive 48-bit count of ms",
  )
  const random = new Uint8Array(10)
  globalThis.crypto.getRandomValues(random)
  let out = now.toString(16).padStart(12, '0')
  for (const byte of random) out += byte.toString(16).padStart(2, '0')
  return out
}

export function nowTimestamp(now = Date.now()): string {
  return new Date(now).toISOString()
}
