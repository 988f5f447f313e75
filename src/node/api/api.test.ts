import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type NodeClient, type Outcome, requestTarget } from '../../client/client.js'
import { type DeviceKeys, newKeyFile, openKeyFile, readKeyFile } from '../../client/key-file.js'
import { type Block, blockFromRaw } from '../../protocol/block.js'
import { openCheckpoint } from '../../protocol/checkpoint.js'
import { concatBytes, fromBase64, toBase64 } from '../../protocol/encoding.js'
import type { VmError } from '../../protocol/errors.js'
import { signRequest } from '../../protocol/http-signature.js'
import { binaryMediaType, decodeRawBlock } from '../../protocol/leaf-page.js'
import { leafHash, verifyConsistency, verifyInclusion } from '../../protocol/merkle.js'
import { newId, nowTimestamp, type SignedTransaction, signTransaction } from '../../protocol/transaction.js'
import { startTestNode } from '../../testing/node-harness.js'
import { audit } from '../audit.js'
import { type DemoWorld, seedDemo } from '../demo.js'

let harness: Awaited<ReturnType<typeof startTestNode>>
let client: NodeClient
let world: DemoWorld
let alice: DeviceKeys
let bob: DeviceKeys
let aliceAccount: string
let bobAccount: string
let issuerAccount: string
const asset = 'demo:EUR'

before(async () => {
  harness = await startTestNode()
  client = harness.client
  world = await seedDemo(harness.node.url, harness.node.adminKeyFile, harness.dataDir)
  const demoDir = join(harness.dataDir, 'demo')
  const person = (name: string) => world.persons.find((p) => p.name === name)!
  alice = readKeyFile(join(demoDir, person('Alice').keyFile))
  bob = readKeyFile(join(demoDir, person('Bob').keyFile))
  aliceAccount = person('Alice').accounts[0]!
  bobAccount = person('Bob').accounts[0]!
  issuerAccount = person('Issuer').accounts[0]!
})
after(async () => harness.close())

async function poolCount(): Promise<number> {
  const row = await harness.node.database.db
    .selectFrom('pool')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .executeTakeFirstOrThrow()
  return Number(row.n)
}

async function post(
  body: string,
  contentType = 'application/json',
): Promise<{ status: number; problem: Record<string, unknown> }> {
  const response = await fetch(`${harness.node.url}/v1/transactions`, {
    method: 'POST',
    headers: { 'content-type': contentType },
    body,
  })
  return { status: response.status, problem: (await response.json()) as Record<string, unknown> }
}

async function transfer(keys: DeviceKeys, fields: Record<string, unknown> = {}): Promise<SignedTransaction> {
  return client.sign(keys, {
    type: 'transfer',
    debit: aliceAccount,
    credit: bobAccount,
    amount: '100',
    asset,
    ...fields,
  } as never)
}

async function final(keys: DeviceKeys, signed: SignedTransaction): Promise<Outcome> {
  const [outcome] = await client.submitAndWait(keys, [signed])
  return outcome!
}

describe('the demo world', () => {
  test('is written to demo.json with key files and balances', async () => {
    const demo = JSON.parse(readFileSync(join(harness.dataDir, 'demo', 'demo.json'), 'utf8')) as DemoWorld
    assert.equal(demo.asset, asset)
    assert.equal(demo.persons[0]!.name, 'Alice')
    const account = (await client.get(alice, `/v1/accounts/${aliceAccount}`)) as {
      balance: string
      available: string
    }
    // 1000.00 issued, 25.00 to Bob, 5.50 back, 8.00 posted of a 10.00 hold.
    assert.equal(account.balance, String(100000 - 2500 + 550 - 800))
    assert.equal(account.available, account.balance)
  })
})

describe('bad input answers problem+json with a stable code and writes nothing', () => {
  const cases: [
    string,
    () => Promise<{ status: number; problem: Record<string, unknown> }>,
    number,
    string,
  ][] = [
    ['malformed JSON', () => post('{"tx": '), 400, 'malformed_json'],
    ['wrong content type', () => post('hello', 'text/plain'), 415, 'unsupported_media_type'],
    ['body over its limit', () => post(`{"x":"${'a'.repeat(5 * 1024 * 1024)}"}`), 413, 'body_too_large'],
    [
      'batch over its limit',
      async () => post(JSON.stringify({ transactions: Array.from({ length: 1001 }, () => ({})) })),
      413,
      'batch_too_large',
    ],
    ['empty batch', () => post('{"transactions": []}'), 400, 'batch_empty'],
    [
      'unknown field',
      async () => {
        const signed = await transfer(alice)
        return post(JSON.stringify({ ...signed, extra: 1 }))
      },
      400,
      'unknown_field',
    ],
    [
      'unknown field inside the transaction',
      async () => {
        const signed = await transfer(alice)
        return post(JSON.stringify({ ...signed, tx: { ...signed.tx, surprise: true } }))
      },
      400,
      'unknown_field',
    ],
    [
      'missing field',
      async () => {
        const signed = await transfer(alice)
        const { amount: _, ...tx } = signed.tx as unknown as Record<string, unknown>
        return post(JSON.stringify({ ...signed, tx }))
      },
      400,
      'invalid_schema',
    ],
    [
      'float amount',
      async () => post(JSON.stringify(await transfer(alice, { amount: '1.5' }))),
      400,
      'invalid_schema',
    ],
    [
      'number amount',
      async () => post(JSON.stringify(await transfer(alice, { amount: 100 }))),
      400,
      'invalid_schema',
    ],
    [
      'negative amount',
      async () => post(JSON.stringify(await transfer(alice, { amount: '-100' }))),
      400,
      'invalid_schema',
    ],
    [
      'exponent amount',
      async () => post(JSON.stringify(await transfer(alice, { amount: '1e3' }))),
      400,
      'invalid_schema',
    ],
    [
      'amount over 128 bits',
      async () => post(JSON.stringify(await transfer(alice, { amount: (1n << 128n).toString() }))),
      400,
      'invalid_amount',
    ],
    [
      'same account',
      async () => post(JSON.stringify(await transfer(alice, { credit: aliceAccount }))),
      422,
      'accounts_must_be_different',
    ],
    [
      'bad signature',
      async () => {
        const signed = await transfer(alice)
        const other = await transfer(alice)
        return post(JSON.stringify({ tx: signed.tx, sig: other.sig }))
      },
      401,
      'invalid_signature',
    ],
    [
      'unregistered key',
      async () => post(JSON.stringify(await transfer(openKeyFile(newKeyFile())))),
      401,
      'signer_key_not_found',
    ],
    [
      'transaction for another node',
      async () => {
        const signed = await transfer(alice)
        return post(
          JSON.stringify(signTransaction({ ...signed.tx, node: alice.keyId }, alice.signing.secretKey)),
        )
      },
      400,
      'node_mismatch',
    ],
    [
      'system transaction',
      async () => {
        const signed = await client.sign(alice, { type: 'expire_pending', pending: [newId()] })
        return post(JSON.stringify(signed))
      },
      400,
      'system_transaction_not_allowed',
    ],
    [
      'linked chain left open',
      async () => post(JSON.stringify({ transactions: [await transfer(alice, { linked: true })] })),
      400,
      'linked_chain_open',
    ],
  ]
  for (const [name, send, status, code] of cases) {
    test(name, async () => {
      const before = await poolCount()
      const { status: actual, problem } = await send()
      assert.equal(actual, status, JSON.stringify(problem))
      assert.equal(problem['code'], code)
      assert.equal(typeof problem['requestId'], 'string')
      assert.equal(await poolCount(), before)
    })
  }

  test('a revoked key is refused', async () => {
    const spare = openKeyFile(newKeyFile())
    assert.equal(
      (
        await final(
          alice,
          await client.sign(alice, { type: 'add_key', person: alice.person!, key: spare.deviceKey }),
        )
      ).status,
      'accepted',
    )
    const spareKeys = { ...spare, person: alice.person }
    assert.equal(
      (
        await final(
          alice,
          await client.sign(alice, { type: 'revoke_key', person: alice.person!, keyId: spare.keyId }),
        )
      ).status,
      'accepted',
    )
    const { status, problem } = await post(JSON.stringify(await transfer(spareKeys)))
    assert.equal(status, 403)
    assert.equal(problem['code'], 'signer_key_revoked')
  })

  test('a replayed id answers its first outcome and never executes twice', async () => {
    const signed = await transfer(alice)
    const first = await final(alice, signed)
    assert.equal(first.status, 'accepted')
    const before = (await client.get(alice, `/v1/accounts/${aliceAccount}`)) as { balance: string }
    const [replay] = await client.submit([signed])
    assert.deepEqual(replay, first)
    const afterReplay = (await client.get(alice, `/v1/accounts/${aliceAccount}`)) as { balance: string }
    assert.equal(afterReplay.balance, before.balance)
  })

  test('an id reused with other bytes is refused', async () => {
    const signed = await transfer(alice)
    await final(alice, signed)
    const reused = signTransaction({ ...signed.tx, amount: '101' } as never, alice.signing.secretKey)
    const { status, problem } = await post(JSON.stringify(reused))
    assert.equal(status, 409)
    assert.equal(problem['code'], 'exists_with_different_fields')
  })
})

describe('ledger rules give pooled transactions their result code', () => {
  const rejected = async (keys: DeviceKeys, signed: SignedTransaction, code: string) => {
    const outcome = await final(keys, signed)
    assert.equal(outcome.status, 'rejected')
    assert.equal(outcome.code, code)
  }
  test('unknown account', async () =>
    rejected(alice, await transfer(alice, { credit: newId() }), 'credit_account_not_found'))
  test('asset mismatch', async () =>
    rejected(
      alice,
      await transfer(alice, { asset: 'demo:USD' }),
      'transfer_must_have_the_same_asset_as_accounts',
    ))
  test('unknown asset', async () =>
    rejected(
      harness.admin,
      await client.sign(harness.admin, {
        type: 'open_account',
        account: newId(),
        owner: alice.person!,
        asset: 'demo:USD',
        flags: ['debits_must_not_exceed_credits'],
      }),
      'account_asset_not_found',
    ))
  test("a signature by another person's key", async () =>
    rejected(bob, await transfer(bob), 'signer_not_debit_account_owner'))
  test('overdraft', async () =>
    rejected(alice, await transfer(alice, { amount: '100000000' }), 'exceeds_credits'))
  test('post of a voided pending transfer', async () => {
    const hold = await transfer(alice, { pending: { timeoutSeconds: 60 } })
    assert.equal((await final(alice, hold)).status, 'accepted')
    assert.equal(
      (await final(alice, await client.sign(alice, { type: 'void_pending', pending: hold.tx.id }))).status,
      'accepted',
    )
    await rejected(
      alice,
      await client.sign(alice, { type: 'post_pending', pending: hold.tx.id }),
      'pending_transfer_already_voided',
    )
  })
  test('expired pending transfer', async () => {
    const hold = await transfer(alice, { pending: { timeoutSeconds: 1 } })
    assert.equal((await final(alice, hold)).status, 'accepted')
    await new Promise((resolve) => setTimeout(resolve, 1_100))
    const outcome = await final(
      alice,
      await client.sign(alice, { type: 'post_pending', pending: hold.tx.id }),
    )
    assert.equal(outcome.status, 'rejected')
    assert.match(outcome.code!, /^pending_transfer_(expired|already_expired)$/)
  })
  test("the node's own expiry id cannot be taken by a client", async () => {
    const hold = await transfer(alice, { pending: { timeoutSeconds: 1 } })
    assert.equal((await final(alice, hold)).status, 'accepted')
    const { db } = harness.node.database
    let expiry: { id: string } | undefined
    for (let tries = 0; tries < 50 && expiry === undefined; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      expiry = await db
        .selectFrom('pool')
        .select('id')
        .where('type', '=', 'expire_pending')
        .where('signed', 'like', `%${hold.tx.id}%`)
        .executeTakeFirst()
    }
    assert.ok(expiry !== undefined, 'the funnel expired the hold')
    const { status, problem } = await post(
      JSON.stringify(
        await client.sign(
          alice,
          { type: 'transfer', debit: aliceAccount, credit: bobAccount, amount: '1', asset },
          { id: expiry.id },
        ),
      ),
    )
    assert.equal(status, 409)
    assert.equal(problem['code'], 'exists_with_different_fields')
    assert.equal((await final(alice, await transfer(alice, { amount: '1' }))).status, 'accepted')
  })
  test('a linked chain fails whole', async () => {
    const ok = await transfer(alice, { linked: true })
    const overdraft = await transfer(alice, { amount: '100000000' })
    const outcomes = await client.submitAndWait(alice, [ok, overdraft])
    assert.deepEqual(
      outcomes.map((o) => o.code),
      ['linked_event_failed', 'exceeds_credits'],
    )
  })
})

describe('reads are authorized', () => {
  test('a customer reads their own account and not another', async () => {
    await client.get(alice, `/v1/accounts/${aliceAccount}`)
    await assert.rejects(
      client.get(alice, `/v1/accounts/${bobAccount}`),
      (e: VmError) => e.code === 'forbidden' && e.status === 403,
    )
    await assert.rejects(
      client.get(bob, `/v1/accounts/${aliceAccount}/statement`),
      (e: VmError) => e.code === 'forbidden',
    )
  })
  test("a transaction's outcome is read by its signer and staff only", async () => {
    const signed = await transfer(alice, { amount: '1' })
    await final(alice, signed)
    assert.equal(
      ((await client.get(alice, `/v1/transactions/${signed.tx.id}`)) as Outcome).status,
      'accepted',
    )
    assert.equal(
      ((await client.get(harness.admin, `/v1/transactions/${signed.tx.id}`)) as Outcome).status,
      'accepted',
    )
    await assert.rejects(
      client.get(bob, `/v1/transactions/${signed.tx.id}`),
      (e: VmError) => e.code === 'forbidden',
    )
    await assert.rejects(
      client.get(alice, `/v1/transactions/${newId()}`),
      (e: VmError) => e.code === 'not_found',
    )
  })
  test('staff read everything', async () => {
    await client.get(harness.admin, `/v1/accounts/${aliceAccount}`)
    await client.get(harness.admin, `/v1/accounts/${issuerAccount}/statement?limit=2`)
  })
  test('an unsigned or tampered read is refused', async () => {
    const unsigned = await fetch(`${harness.node.url}/v1/accounts/${aliceAccount}`)
    assert.equal(unsigned.status, 401)
    assert.equal(((await unsigned.json()) as { code: string }).code, 'unauthorized')
    const headers = signRequest(
      requestTarget('GET', `${harness.node.url}/v1/accounts/${aliceAccount}`),
      alice.keyId,
      alice.signing.secretKey,
    )
    const tampered = await fetch(`${harness.node.url}/v1/accounts/${bobAccount}`, { headers })
    assert.equal(tampered.status, 401)
    assert.equal(((await tampered.json()) as { code: string }).code, 'invalid_signature')
    // A signature made for another node (another authority) is worthless here.
    const elsewhere = signRequest(
      requestTarget('GET', `http://other.example:8080/v1/accounts/${aliceAccount}`),
      alice.keyId,
      alice.signing.secretKey,
    )
    const replayed = await fetch(`${harness.node.url}/v1/accounts/${aliceAccount}`, { headers: elsewhere })
    assert.equal(replayed.status, 401)
  })
  test('a statement pages with a cursor', async () => {
    const first = (await client.get(alice, `/v1/accounts/${aliceAccount}/statement?limit=2`)) as {
      entries: { seq: number }[]
      nextCursor: number
    }
    assert.equal(first.entries.length, 2)
    const second = (await client.get(
      alice,
      `/v1/accounts/${aliceAccount}/statement?limit=2&cursor=${first.nextCursor}`,
    )) as { entries: { seq: number }[] }
    assert.ok(second.entries[0]!.seq > first.entries[1]!.seq)
  })
  test('documents by hash are readable by their parties only', async () => {
    const signed = await transfer(alice, { amount: '1' })
    await final(alice, signed)
    const row = await harness.node.database.db
      .selectFrom('pool')
      .select('content_hash')
      .where('id', '=', signed.tx.id)
      .executeTakeFirstOrThrow()
    assert.deepEqual(await client.get(bob, `/v1/documents/${row.content_hash}`), signed)
    const stranger = readKeyFile(join(harness.dataDir, 'demo', 'issuer.key.json'))
    await assert.rejects(
      client.get(stranger, `/v1/documents/${row.content_hash}`),
      (e: VmError) => e.code === 'forbidden',
    )
  })
})

describe('views let other persons read an account, within their range, until revoked', () => {
  interface Statement {
    entries: { seq: number; time: string }[]
  }
  const stranger = () => readKeyFile(join(harness.dataDir, 'demo', 'issuer.key.json'))
  const forbidden = (e: VmError) => e.code === 'forbidden' && e.status === 403
  const accepted = async (keys: DeviceKeys, signed: SignedTransaction) => {
    const outcome = await final(keys, signed)
    assert.equal(outcome.status, 'accepted', outcome.code)
  }
  /** Alice grants a view of her account; by default of all its history and the next hour. */
  const grant = async (grantee: string, from = '1970-01-01T00:00:00.000Z', until?: string) => {
    const view = newId()
    await accepted(
      alice,
      await client.sign(alice, {
        type: 'grant_view',
        view,
        accounts: [aliceAccount],
        grantee,
        from,
        until: until ?? nowTimestamp(Date.now() + 3_600_000),
      }),
    )
    return view
  }
  const revoke = async (view: string) =>
    accepted(alice, await client.sign(alice, { type: 'revoke_view', view }))
  const statement = async (keys: DeviceKeys) =>
    ((await client.get(keys, `/v1/accounts/${aliceAccount}/statement?limit=1000`)) as Statement).entries

  test('the grantee reads the account and its statement, a third person does not, and after revocation nobody', async () => {
    const view = await grant(bob.person!)
    const own = (await client.get(alice, `/v1/accounts/${aliceAccount}`)) as { balance: string }
    const seen = (await client.get(bob, `/v1/accounts/${aliceAccount}`)) as { balance: string }
    assert.equal(seen.balance, own.balance)
    assert.deepEqual(await statement(bob), await statement(alice))
    await assert.rejects(client.get(stranger(), `/v1/accounts/${aliceAccount}`), forbidden)
    await assert.rejects(client.get(stranger(), `/v1/accounts/${aliceAccount}/statement`), forbidden)
    // A view of an account opens nothing else of its owner.
    await assert.rejects(client.get(bob, `/v1/persons/${alice.person}/accounts`), forbidden)
    await assert.rejects(client.get(bob, `/v1/persons/${alice.person}`), forbidden)
    const received = (await client.get(bob, `/v1/persons/${bob.person}/views`)) as {
      views: { id: string; grantor: string; grantee: string; revoked: boolean }[]
    }
    assert.deepEqual(
      received.views.filter((v) => v.id === view).map((v) => [v.grantor, v.grantee, v.revoked]),
      [[alice.person, bob.person, false]],
    )
    await assert.rejects(client.get(stranger(), `/v1/persons/${bob.person}/views`), forbidden)
    await revoke(view)
    await assert.rejects(client.get(bob, `/v1/accounts/${aliceAccount}`), forbidden)
    await assert.rejects(client.get(bob, `/v1/accounts/${aliceAccount}/statement`), forbidden)
    const granted = (await client.get(alice, `/v1/persons/${alice.person}/views`)) as {
      views: { id: string; revoked: boolean }[]
    }
    assert.equal(granted.views.find((v) => v.id === view)?.revoked, true)
  })

  test('a view to everyone is read by any person who signs with a registered key', async () => {
    const view = await grant('everyone')
    await client.get(stranger(), `/v1/accounts/${aliceAccount}`)
    assert.deepEqual(await statement(bob), await statement(alice))
    const unsigned = await fetch(`${harness.node.url}/v1/accounts/${aliceAccount}`)
    assert.equal(unsigned.status, 401)
    await assert.rejects(
      client.get(openKeyFile(newKeyFile()), `/v1/accounts/${aliceAccount}`),
      (e: VmError) => e.code === 'signer_key_not_found',
    )
    await revoke(view)
    await assert.rejects(client.get(stranger(), `/v1/accounts/${aliceAccount}`), forbidden)
  })

  test('through a view the statement holds only its range, and balances only while now is in it', async () => {
    const all = await statement(alice)
    const times = [...new Set(all.map((e) => e.time))]
    assert.ok(times.length >= 3, 'the demo spreads entries over several blocks')
    const from = times[1]!
    const until = nowTimestamp(Date.parse(from) + 1)
    const view = await grant(bob.person!, from, until)
    const seen = await statement(bob)
    assert.deepEqual(
      seen,
      all.filter((e) => e.time === from),
    )
    assert.ok(seen.length > 0 && seen.length < all.length)
    const account = (await client.get(bob, `/v1/accounts/${aliceAccount}`)) as Record<string, unknown>
    assert.deepEqual(
      [account['id'], account['balance'], account['available']],
      [aliceAccount, undefined, undefined],
    )
    await revoke(view)
  })

  test('a read-only key reads but never submits, and nothing is pooled', async () => {
    const reader = openKeyFile(newKeyFile())
    await accepted(
      alice,
      await client.sign(alice, {
        type: 'add_key',
        person: alice.person!,
        key: { ...reader.deviceKey, use: 'read' },
      }),
    )
    const readerKeys = { ...reader, person: alice.person }
    await client.get(readerKeys, `/v1/accounts/${aliceAccount}`)
    const before = await poolCount()
    const { status, problem } = await post(JSON.stringify(await transfer(readerKeys)))
    assert.equal(status, 403)
    assert.equal(problem['code'], 'key_read_only')
    assert.equal(await poolCount(), before)
  })
})

describe('the public log', () => {
  test('the checkpoint is signed and every leaf proves into it', async () => {
    const node = await client.node()
    const checkpoint = openCheckpoint(await client.checkpoint(), node.noteVerifierKey, node.origin)
    assert.match(node.noteVerifierKey, /^vmoney\/[A-Za-z0-9_-]{43}\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$/)
    for (let index = 0; index < checkpoint.size; index++) {
      const leaf = (await client.publicGet(`/v1/log/leaves/${index}`)) as { leaf: string }
      const { proof } = (await client.publicGet(
        `/v1/log/proofs/inclusion?index=${index}&size=${checkpoint.size}`,
      )) as { proof: string[] }
      verifyInclusion(
        leafHash(fromBase64(leaf.leaf)),
        index,
        checkpoint.size,
        proof.map(fromBase64),
        checkpoint.root,
      )
    }
  })
  test('consistency proofs link blocks', async () => {
    const first = (await client.publicGet('/v1/blocks/1')) as { header: { logSize: number; logRoot: string } }
    const head = (await client.publicGet('/v1/blocks')) as { header: { logSize: number; logRoot: string } }
    const { proof } = (await client.publicGet(
      `/v1/log/proofs/consistency?from=${first.header.logSize}&to=${head.header.logSize}`,
    )) as { proof: string[] }
    verifyConsistency(
      first.header.logSize,
      head.header.logSize,
      proof.map(fromBase64),
      fromBase64(first.header.logRoot),
      fromBase64(head.header.logRoot),
    )
  })
  test('blocks and leaf hashes in the binary form are what the JSON says', async () => {
    const binary = async (path: string) => {
      const response = await fetch(harness.node.url + path, { headers: { accept: binaryMediaType } })
      assert.equal(response.status, 200, path)
      assert.equal(response.headers.get('content-type'), binaryMediaType)
      return new Uint8Array(await response.arrayBuffer())
    }
    const block = (await client.publicGet('/v1/blocks/1')) as Block
    assert.deepEqual(blockFromRaw(decodeRawBlock(await binary('/v1/blocks/1'))), block)
    const { start, end } = { start: block.header.firstLeaf, end: block.header.logSize }
    const hashes = block.leaves.map((leaf) => leafHash(fromBase64(leaf)))
    assert.deepEqual(await binary(`/v1/log/leaf-hashes?start=${start}&end=${end}`), concatBytes(...hashes))
    assert.deepEqual(await client.publicGet(`/v1/log/leaf-hashes?start=${start}&end=${end}`), {
      start,
      hashes: hashes.map((hash) => toBase64(hash)),
    })
  })
  test('out-of-range proofs and missing leaves answer 4xx with a code', async () => {
    for (const [path, status, code] of [
      ['/v1/log/proofs/inclusion?index=5&size=999999', 400, 'proof_out_of_range'],
      ['/v1/log/proofs/inclusion?index=9&size=3', 400, 'proof_out_of_range'],
      ['/v1/log/proofs/consistency?from=9&to=3', 400, 'proof_out_of_range'],
      ['/v1/log/leaves/999999', 404, 'leaf_not_found'],
      ['/v1/blocks/999999', 404, 'block_not_found'],
      ['/v1/log/proofs/inclusion?index=x&size=3', 400, 'invalid_request'],
    ] as const) {
      const response = await fetch(harness.node.url + path)
      assert.equal(response.status, status, path)
      assert.equal(((await response.json()) as { code: string }).code, code, path)
    }
  })
  test('operations endpoints answer', async () => {
    const openapi = (await client.publicGet('/openapi.json')) as {
      openapi: string
      paths: Record<string, unknown>
    }
    assert.equal(openapi.openapi, '3.1.0')
    assert.ok(openapi.paths['/v1/transactions'] !== undefined)
    assert.equal((await fetch(`${harness.node.url}/docs`)).status, 200)
    assert.equal((await fetch(`${harness.node.url}/healthz`)).status, 200)
    assert.equal((await fetch(`${harness.node.url}/readyz`)).status, 200)
    assert.match(await (await fetch(`${harness.node.url}/metrics`)).text(), /vmoney_blocks_total \d+/)
  })
})

describe('audit', () => {
  test('passes on an honest node and names a tampered account', async () => {
    const { db } = harness.node.database
    const honest = await audit(db, harness.node.identity)
    assert.deepEqual(honest.findings, [])
    assert.ok(honest.ok)
    await db
      .updateTable('ledger_accounts')
      .set({ credits_posted: '999999999' })
      .where('id', '=', bobAccount)
      .execute()
    const tampered = await audit(db, harness.node.identity)
    assert.equal(tampered.ok, false)
    assert.ok(
      tampered.findings.some(
        (f) => f.where === `account ${bobAccount}` && f.message.startsWith('creditsPosted'),
      ),
    )
  })
})

describe('limits against abuse', () => {
  // Last in this file: it spends the window of 127.0.0.1.
  test('a client past its request budget gets 429 with Retry-After', async () => {
    // A small budget, so that the whole burst surely falls in one window even on a busy machine.
    const budget = 50
    const limitedNode = await startTestNode({ rateLimit: String(budget) })
    try {
      const responses = await Promise.all(
        Array.from({ length: budget + 10 }, () => fetch(`${limitedNode.node.url}/healthz`)),
      )
      const limited = responses.find((r) => r.status === 429)
      assert.ok(limited !== undefined, 'no request was limited')
      assert.equal(((await limited.json()) as { code: string }).code, 'rate_limited')
      assert.ok(Number(limited.headers.get('retry-after')) > 0)
      assert.equal(responses.filter((r) => r.status === 200).length, budget)
    } finally {
      await limitedNode.close()
    }
  })
})
