import { type TSchema, Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { Value } from '@sinclair/typebox/value'
import type { FastifyInstance } from 'fastify'
import { parseAmount } from '../../../protocol/amount.js'
import { VmError } from '../../../protocol/errors.js'
import { jwkPublicKey, type OkpJwk } from '../../../protocol/keys.js'
import {
  encodeSignedTransaction,
  Id,
  SignedTransaction,
  type SignedTransaction as SignedTransactionValue,
  signatureBytes,
  systemTransactionTypes,
  validateSignedTransaction,
} from '../../../protocol/transaction.js'
import { type Outcome, type PoolRow, poolRow, waitMsMax } from '../../pool/pool.js'
import { authenticate, requirePerson } from '../authorize.js'
import type { ApiContext } from '../context.js'

/** Transactions per request; a linked chain must fit in one request. */
export const transactionsPerRequestMax = 1_000

const OutcomeSchema = Type.Object({
  id: Type.String(),
  status: Type.Union([Type.Literal('pending'), Type.Literal('accepted'), Type.Literal('rejected')]),
  code: Type.Optional(Type.String({ description: 'the ledger result code, when rejected' })),
  codeNumber: Type.Optional(Type.Integer()),
  blockHeight: Type.Optional(Type.Integer()),
  leafIndex: Type.Optional(Type.Integer()),
})
const Submission = Type.Union([
  SignedTransaction,
  Type.Object(
    { transactions: Type.Array(SignedTransaction, { minItems: 1, maxItems: transactionsPerRequestMax }) },
    { additionalProperties: false },
  ),
])
const WaitQuery = Type.Object(
  {
    wait: Type.Optional(
      Type.Integer({ minimum: 0, maximum: waitMsMax, description: 'long-poll up to this many ms' }),
    ),
  },
  { additionalProperties: false },
)

/** Parses a submission: one signed transaction or `{transactions: [...]}`. The whole batch passes or fails. */
export function parseSubmission(body: unknown): SignedTransactionValue[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new VmError('invalid_schema', 'body must be a signed transaction or {"transactions": [...]}')
  }
  const items = 'transactions' in body ? (body as { transactions: unknown }).transactions : [body]
  if ('transactions' in body && Object.keys(body).length !== 1) {
    throw new VmError('unknown_field', 'a batch has only the field "transactions"')
  }
  if (!Array.isArray(items) || items.length === 0)
    throw new VmError('batch_empty', 'transactions must be a non-empty array')
  if (items.length > transactionsPerRequestMax) {
    throw new VmError('batch_too_large', `at most ${transactionsPerRequestMax} transactions per request`, {
      status: 413,
    })
  }
  return items.map((item, index) => {
    try {
      return validateSignedTransaction(item)
    } catch (error) {
      throw withIndex(error, index)
    }
  })
}

function withIndex(error: unknown, index: number): unknown {
  if (!(error instanceof VmError)) return error
  return new VmError(
    error.code,
    `transactions[${index}]${error.message.startsWith('/') ? '' : ': '}${error.message}`,
    {
      status: error.status,
      detail: { ...error.detail, index },
    },
  )
}

/** The checks the api makes before pooling (F3): static rules, known active key, valid signature. */
export async function admit(
  context: ApiContext,
  batch: readonly SignedTransactionValue[],
): Promise<PoolRow[]> {
  const nodeId = context.identity.nodeId
  batch.forEach((signed, index) => {
    const { tx } = signed
    const fail = (code: string, message: string, status = 400) => {
      throw new VmError(code, `transactions[${index}]: ${message}`, { status, detail: { index, id: tx.id } })
    }
    if (systemTransactionTypes.has(tx.type))
      fail('system_transaction_not_allowed', `only the node signs ${tx.type}`)
    if (tx.node !== nodeId) fail('node_mismatch', `transaction is for node ${tx.node}, this is ${nodeId}`)
    if (tx.type === 'transfer') {
      parseAmount(tx.amount)
      if (tx.debit === tx.credit)
        fail('accounts_must_be_different', 'debit and credit accounts are the same', 422)
    }
    if (tx.type === 'post_pending' && tx.amount !== undefined) parseAmount(tx.amount)
    const deviceKeys = tx.type === 'register_person' ? tx.keys : tx.type === 'add_key' ? [tx.key] : []
    for (const key of deviceKeys) {
      try {
        jwkPublicKey(key.signing as OkpJwk, 'Ed25519')
        if (key.encryption !== undefined) jwkPublicKey(key.encryption as OkpJwk, 'X25519')
      } catch (error) {
        fail('invalid_key', (error as Error).message)
      }
    }
    if (tx.type === 'open_account' && tx.issuanceLimit !== undefined) parseAmount(tx.issuanceLimit)
  })
  if (batch.at(-1)!.tx.linked === true) {
    throw new VmError(
      'linked_chain_open',
      'the last transaction of a batch must not be linked: the chain never closes',
    )
  }
  const ids = new Set<string>()
  batch.forEach((signed, index) => {
    if (ids.has(signed.tx.id)) {
      throw new VmError('duplicate_id_in_batch', `transactions[${index}]: id ${signed.tx.id} appears twice`, {
        detail: { index },
      })
    }
    ids.add(signed.tx.id)
  })
  const encoded = batch.map(encodeSignedTransaction)
  const keys = await context.keys.lookup(batch.map((s) => s.tx.signer))
  const checks = batch.map((signed, index) => {
    const key = keys.get(signed.tx.signer)
    if (key === null || key === undefined) {
      throw new VmError(
        'signer_key_not_found',
        `transactions[${index}]: key ${signed.tx.signer} is not registered`,
        {
          status: 401,
          detail: { index },
        },
      )
    }
    if (key.revoked) {
      throw new VmError('signer_key_revoked', `transactions[${index}]: key ${signed.tx.signer} is revoked`, {
        status: 403,
        detail: { index },
      })
    }
    // A password-derived key reads only: a guessed password must never move money (the ledger says so too).
    if (key.readOnly) {
      throw new VmError('key_read_only', `transactions[${index}]: key ${signed.tx.signer} signs reads only`, {
        status: 403,
        detail: { index },
      })
    }
    return {
      message: encoded[index]!.txBytes,
      signature: signatureBytes(signed),
      publicKey: key.publicKey,
    }
  })
  const valid = await context.verifier.verify(checks)
  const invalid = valid.indexOf(false)
  if (invalid !== -1) {
    throw new VmError('invalid_signature', `transactions[${invalid}]: the signature does not verify`, {
      status: 401,
      detail: { index: invalid },
    })
  }
  return batch.map((signed, index) => poolRow(signed, encoded[index]))
}

export function transactionRoutes(app: FastifyInstance, context: ApiContext): void {
  app.post(
    '/v1/transactions',
    {
      schema: {
        tags: ['transactions'],
        summary: 'Submit one signed transaction or a batch',
        description:
          'Answers 202 once every transaction is durable in the pool. A known id with the same bytes answers its first outcome; with other bytes, 409 exists_with_different_fields. With ?wait=ms the answer waits for the outcomes.',
        body: Submission,
        querystring: WaitQuery,
        response: {
          200: Type.Object({ transactions: Type.Array(OutcomeSchema) }),
          202: Type.Object({ transactions: Type.Array(OutcomeSchema) }),
        },
      },
      validatorCompiler: ({ httpPart, schema }) => {
        if (httpPart === 'body') {
          return (data: unknown) => {
            try {
              return { value: parseSubmission(data) }
            } catch (error) {
              return { error: error as Error }
            }
          }
        }
        const check = TypeCompiler.Compile(schema as unknown as TSchema)
        return (data: unknown) => {
          const value = Value.Convert(schema as unknown as TSchema, data)
          if (check.Check(value)) return { value }
          const error = check.Errors(value).First()
          return {
            error: new VmError(
              'invalid_request',
              `${httpPart} ${error?.path ?? ''}: ${error?.message ?? 'invalid'}`,
            ),
          }
        }
      },
    },
    async (request, reply) => {
      const batch = request.body as unknown as SignedTransactionValue[]
      const rows = await admit(context, batch)
      let outcomes: Outcome[] = await context.pool.submit(rows)
      const wait = (request.query as { wait?: number }).wait ?? 0
      if (wait > 0 && outcomes.some((o) => o.status === 'pending')) {
        const final = await context.pool.waitForAll(
          outcomes.map((o) => o.id),
          wait,
        )
        outcomes = outcomes.map((outcome, i) => final[i] ?? outcome)
      }
      const anyPending = outcomes.some((o) => o.status === 'pending')
      return reply.status(anyPending ? 202 : 200).send({ transactions: outcomes })
    },
  )

  app.get(
    '/v1/transactions/:id',
    {
      schema: {
        tags: ['transactions'],
        summary: 'The outcome of a transaction (long-poll with ?wait=ms)',
        description: 'Readable by the person who signed it and by staff. Signed request (RFC 9421).',
        params: Type.Object({ id: Id }),
        querystring: WaitQuery,
        response: { 200: OutcomeSchema },
      },
    },
    async (request) => {
      const principal = await authenticate(context, request)
      const { id } = request.params as { id: string }
      const found = await context.pool.outcome(id)
      if (found === null) throw new VmError('not_found', `no transaction ${id}`, { status: 404 })
      const signer = await context.keys.get((JSON.parse(found.signed) as SignedTransactionValue).tx.signer)
      requirePerson(principal, signer === null ? [] : [signer.personId])
      const wait = (request.query as { wait?: number }).wait ?? 0
      if (found.outcome.status !== 'pending' || wait === 0) return found.outcome
      const [outcome] = await context.pool.waitForAll([id], wait)
      return outcome ?? found.outcome
    },
  )
}
