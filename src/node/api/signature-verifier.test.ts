import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import fc from 'fast-check'
import { generateSigningKey, portableVerifier, type SignatureCheck, sign } from '../../protocol/keys.js'
import { SignatureVerifier, signaturesPerJobMax } from './signature-verifier.js'

const native = new SignatureVerifier(2)
after(() => native.close())

test('the libsodium worker pool and the portable verifier agree, in order, across jobs', async () => {
  const key = generateSigningKey()
  const other = generateSigningKey()
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 3 })), {
        minLength: 1,
        maxLength: signaturesPerJobMax * 2 + 3,
      }),
      async (cases) => {
        const checks: SignatureCheck[] = cases.map(([message, mutation]) => {
          const signature = sign(message, key.secretKey)
          if (mutation === 1) signature[0] = signature[0]! ^ 1
          return {
            message,
            signature: mutation === 3 ? signature.slice(0, 63) : signature,
            publicKey: mutation === 2 ? other.publicKey : key.publicKey,
          }
        })
        const expected = cases.map(([, mutation]) => mutation === 0)
        assert.deepEqual(await native.verify(checks), expected)
        assert.deepEqual(await portableVerifier.verify(checks), expected)
      },
    ),
    { numRuns: 20 },
  )
})

test('a worker that dies is replaced and verification goes on', async () => {
  const key = generateSigningKey()
  const message = new Uint8Array([1, 2, 3])
  const check = { message, signature: sign(message, key.secretKey), publicKey: key.publicKey }
  await native.crashOneWorker()
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(
    await native.verify(Array.from({ length: signaturesPerJobMax * 3 }, () => check)),
    Array(signaturesPerJobMax * 3).fill(true),
  )
})
