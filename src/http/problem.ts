import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { VmError } from '../protocol/errors.js'
import { isDatabaseUnavailable } from '../storage/connect.js'

/** What a 503 for a database away asks clients to wait before they retry. */
export const storageRetryAfterSeconds = 1

/** Fastify's own failures, mapped to our stable codes. */
const fastifyCodes: Record<string, { code: string; status: number }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: 'unsupported_media_type', status: 415 },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'malformed_request', status: 400 },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'malformed_json', status: 400 },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'malformed_json', status: 400 },
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'body_too_large', status: 413 },
  FST_ERR_VALIDATION: { code: 'invalid_request', status: 400 },
}

export function toVmError(error: FastifyError | Error): VmError {
  if (error instanceof VmError) return error
  const fastifyError = error as FastifyError
  const known = fastifyCodes[fastifyError.code ?? '']
  if (known !== undefined) return new VmError(known.code, error.message, { status: known.status })
  if (error instanceof SyntaxError)
    return new VmError('malformed_json', 'request body is not valid JSON', { status: 400 })
  if (fastifyError.validation !== undefined)
    return new VmError('invalid_request', error.message, { status: 400 })
  if (typeof fastifyError.statusCode === 'number' && fastifyError.statusCode < 500) {
    return new VmError('bad_request', error.message, { status: fastifyError.statusCode })
  }
  // The database is away (a restart, a failover): the client retries, nothing was written.
  if (isDatabaseUnavailable(error))
    return new VmError('storage_unavailable', 'the database does not answer; retry later', {
      status: 503,
      detail: { retryAfterSeconds: storageRetryAfterSeconds },
      cause: error,
    })
  return new VmError('internal', 'internal error', { status: 500, cause: error })
}

/** RFC 9457 problem details with the stable code and the request id. */
export function sendProblem(
  error: FastifyError | Error,
  request: FastifyRequest,
  reply: FastifyReply,
): FastifyReply {
  const problem = toVmError(error)
  if (problem.status >= 500) request.log.error({ err: error }, 'request failed')
  const retryAfter = problem.detail?.['retryAfterSeconds']
  if (typeof retryAfter === 'number') reply.header('retry-after', String(retryAfter))
  return reply
    .status(problem.status)
    .type('application/problem+json')
    .send({
      type: `urn:vmoney:problem:${problem.code}`,
      title: problem.code.replaceAll('_', ' '),
      status: problem.status,
      detail: problem.message,
      code: problem.code,
      requestId: request.id,
      instance: request.url,
      ...(problem.detail ?? {}),
    })
}
