import { mkdirSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { NodeClient, type Outcome } from '../client/client.js'
import { type DeviceKeys, newKeyFile, openKeyFile, readKeyFile, writeKeyFile } from '../client/key-file.js'
import { VmError } from '../protocol/errors.js'
import { newId, type Person, type SignedTransaction } from '../protocol/transaction.js'

export interface DemoWorld {
  readonly asset: string
  readonly persons: readonly { name: string; keyFile: string; accounts: readonly string[] }[]
}

export const demoAsset = 'demo:EUR'

/**
 * Seeds a small world on a new node through its public api, exactly as an operator and customers would:
 * an issuer, an asset, two customers with device keys and accounts, an issuance and some transfers.
 */
export async function seedDemo(url: string, adminKeyFile: string, dataDir: string): Promise<DemoWorld> {
  const client = new NodeClient(url)
  const admin = readKeyFile(adminKeyFile)
  const demoDir = join(dataDir, 'demo')
  mkdirSync(demoDir, { recursive: true, mode: 0o700 })

  const run = async (keys: DeviceKeys, transactions: SignedTransaction[]) => {
    const outcomes: Outcome[] = await client.submitAndWait(keys, transactions)
    const refused = outcomes.find((o) => o.status !== 'accepted')
    if (refused !== undefined)
      throw new VmError(
        'demo_failed',
        `demo transaction ${refused.id} ended ${refused.status} ${refused.code ?? ''}`,
      )
  }
  const persona = (name: string, person: Person) => {
    const keys = openKeyFile(newKeyFile(person.id))
    const keyFile = join(demoDir, `${name.toLowerCase()}.key.json`)
    writeKeyFile(keyFile, keys.file, true)
    return { name, person, keys, keyFile }
  }
  const natural = (given: string, family: string): Person => ({
    id: newId(),
    kind: 'natural',
    names: [{ primaryIdentifier: family, secondaryIdentifier: given, nameIdentifierType: 'LEGL' }],
    countryOfResidence: 'DE',
  })
  const issuer = persona('Issuer', {
    id: newId(),
    kind: 'legal',
    names: [{ legalPersonName: 'Demo Issuer AG', legalPersonNameIdentifierType: 'LEGL' }],
    countryOfRegistration: 'DE',
  })
  const alice = persona('Alice', natural('Alice', 'Example'))
  const bob = persona('Bob', natural('Bob', 'Example'))
  const everyone = [alice, bob, issuer]

  const operatorTransactions: SignedTransaction[] = []
  for (const p of everyone) {
    operatorTransactions.push(
      await client.sign(admin, { type: 'register_person', person: p.person, keys: [p.keys.deviceKey] }),
    )
    operatorTransactions.push(
      await client.sign(admin, { type: 'set_kyc', person: p.person.id, status: 'verified' }),
    )
  }
  operatorTransactions.push(
    await client.sign(admin, {
      type: 'create_asset',
      asset: demoAsset,
      issuer: issuer.person.id,
      scale: 2,
      name: 'Demo euro',
    }),
  )
  const accounts = new Map(everyone.map((p) => [p.name, newId()]))
  for (const p of everyone) {
    const isIssuer = p === issuer
    operatorTransactions.push(
      await client.sign(admin, {
        type: 'open_account',
        account: accounts.get(p.name)!,
        owner: p.person.id,
        asset: demoAsset,
        flags: isIssuer ? [] : ['debits_must_not_exceed_credits'],
        ...(isIssuer ? { issuanceLimit: '100000000000' } : {}),
      }),
    )
  }
  await run(admin, operatorTransactions)

  const account = (name: string) => accounts.get(name)!
  const transfer = (from: string, to: string, amount: string, memo: string) =>
    ({ type: 'transfer', debit: account(from), credit: account(to), amount, asset: demoAsset, memo }) as const
  await run(issuer.keys, [await client.sign(issuer.keys, transfer('Issuer', 'Alice', '100000', 'issuance'))])
  await run(alice.keys, [await client.sign(alice.keys, transfer('Alice', 'Bob', '2500', 'lunch'))])
  await run(bob.keys, [await client.sign(bob.keys, transfer('Bob', 'Alice', '550', 'coffee'))])
  const hold = await client.sign(alice.keys, {
    ...transfer('Alice', 'Bob', '1000', 'deposit'),
    pending: { timeoutSeconds: 3600 },
  })
  await run(alice.keys, [hold])
  await run(alice.keys, [
    await client.sign(alice.keys, { type: 'post_pending', pending: hold.tx.id, amount: '800' }),
  ])

  const world: DemoWorld = {
    asset: demoAsset,
    persons: everyone.map((p) => ({
      name: p.name,
      keyFile: relative(demoDir, p.keyFile),
      accounts: [account(p.name)],
    })),
  }
  writeFileSync(join(demoDir, 'demo.json'), `${JSON.stringify(world, null, 2)}\n`)
  return world
}
