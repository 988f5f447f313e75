import { existsSync } from 'node:fs'
import { type Command, Option } from 'commander'
import { NodeClient, type Outcome } from '../client/client.js'
import { type DeviceKeys, newKeyFile, openKeyFile, readKeyFile, writeKeyFile } from '../client/key-file.js'
import { formatDecimal, parseDecimal } from '../protocol/amount.js'
import { openCheckpoint } from '../protocol/checkpoint.js'
import { fromBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import { leafHash, verifyInclusion } from '../protocol/merkle.js'
import {
  idPattern,
  newId,
  nowTimestamp,
  type Person,
  type SignedTransaction,
} from '../protocol/transaction.js'
import { CliExit, exitCodes, print } from './output.js'

const defaultNode = process.env.VMONEY_NODE_URL ?? 'http://127.0.0.1:8080'
const idRegExp = new RegExp(idPattern)

function id(value: string, what: string): string {
  if (!idRegExp.test(value))
    throw new VmError(
      'invalid_argument',
      `${what} must be 32 lowercase hex digits, got ${JSON.stringify(value)}`,
    )
  return value
}

/** A time as the ledger wants it (RFC 3339 UTC, ms), from anything `Date.parse` reads: "2025-01-31", ISO... */
function time(value: string, what: string): string {
  const ms = Date.parse(value)
  if (Number.isNaN(ms))
    throw new VmError('invalid_argument', `${what} must be a date or time, got ${JSON.stringify(value)}`)
  return nowTimestamp(ms)
}

interface ClientOptions {
  node: string
  key: string
  json?: boolean
}

function clientCommand(parent: Command, name: string, description: string, needsKey = true): Command {
  const command = parent.command(name).description(description)
  command.option('--node <url>', 'node URL (env VMONEY_NODE_URL)', defaultNode).option('--json', 'print JSON')
  if (needsKey) command.requiredOption('--key <file>', 'key file that signs (see vmoney keys new)')
  return command
}

async function personOf(client: NodeClient, keys: DeviceKeys): Promise<string> {
  if (keys.person !== undefined) return keys.person
  const info = (await client.get(keys, `/v1/keys/${keys.keyId}`)) as { person: string }
  return info.person
}

/** Submits, waits for finality, prints the outcome; a rejection exits 1. */
async function submit(
  options: ClientOptions,
  client: NodeClient,
  keys: DeviceKeys,
  signed: SignedTransaction[],
): Promise<Outcome[]> {
  const outcomes = await client.submitAndWait(keys, signed)
  print(options.json === true, outcomes.length === 1 ? outcomes[0] : outcomes, () =>
    outcomes
      .map((o) =>
        o.status === 'accepted'
          ? `accepted ${o.id} in block ${o.blockHeight} at leaf ${o.leafIndex}`
          : o.status === 'rejected'
            ? `rejected ${o.id}: ${o.code}`
            : `pending ${o.id} (not final yet)`,
      )
      .join('\n'),
  )
  if (outcomes.some((o) => o.status !== 'accepted'))
    throw new CliExit(exitCodes.checkFailed, 'not every transaction was accepted')
  return outcomes
}

async function assetScale(client: NodeClient, asset: string): Promise<number> {
  return ((await client.publicGet(`/v1/assets/${encodeURIComponent(asset)}`)) as { scale: number }).scale
}

export function registerClientCommands(program: Command): void {
  const keys = program.command('keys').description('device keys: create, register, revoke')
  keys
    .command('new')
    .description('create a key file (Ed25519 signing + X25519 encryption), readable by you only')
    .requiredOption('--out <file>', 'where to write the key file')
    .option('--person <id>', 'the person this key belongs to, if known')
    .option('--json', 'print JSON')
    .action((options: { out: string; person?: string; json?: boolean }) => {
      if (existsSync(options.out))
        throw new VmError('file_exists', `${options.out} exists; refusing to overwrite a key`)
      const file = newKeyFile(options.person === undefined ? undefined : id(options.person, '--person'))
      writeKeyFile(options.out, file)
      const opened = openKeyFile(file)
      print(
        options.json === true,
        { keyId: file.keyId, file: options.out, publicKey: opened.deviceKey },
        () => `created ${options.out}\nkey id ${file.keyId}`,
      )
    })
  clientCommand(
    keys,
    'add',
    "register another device key for the signing key's person (or, with --person, by an operator)",
  )
    .requiredOption('--new <file>', 'the key file to register')
    .option('--person <id>', 'the person (default: the signer)')
    .action(async (options: ClientOptions & { new: string; person?: string }) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      const added = readKeyFile(options.new)
      const person =
        options.person === undefined ? await personOf(client, signer) : id(options.person, '--person')
      await submit(options, client, signer, [
        await client.sign(signer, { type: 'add_key', person, key: added.deviceKey }),
      ])
      if (added.person === undefined) writeKeyFile(options.new, { ...added.file, person }, true)
    })
  clientCommand(keys, 'revoke', "revoke a device key (your own, or a customer's as an operator)")
    .requiredOption('--revoke <keyId>', 'the key id to revoke')
    .option('--person <id>', 'the person who owns it (default: the signer)')
    .action(async (options: ClientOptions & { revoke: string; person?: string }) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      const person =
        options.person === undefined ? await personOf(client, signer) : id(options.person, '--person')
      await submit(options, client, signer, [
        await client.sign(signer, { type: 'revoke_key', person, keyId: options.revoke }),
      ])
    })

  const person = program.command('person').description('operators: register persons and set KYC')
  clientCommand(person, 'register', 'register a person with a device key (operator)')
    .requiredOption('--name <name>', 'legal name; for natural persons "Given Family"')
    .requiredOption(
      '--device-key <file>',
      "the person's key file (vmoney keys new); the person id is written into it",
    )
    .addOption(
      new Option('--kind <kind>', 'natural or legal person').choices(['natural', 'legal']).default('natural'),
    )
    .option('--country <code>', 'ISO 3166 country of residence or registration')
    .addOption(
      new Option('--role <role>', 'staff role (admin only)').choices(['admin', 'operator', 'auditor']),
    )
    .option('--kyc <status>', 'KYC status to set right away (verified, pending, rejected)')
    .action(
      async (
        options: ClientOptions & {
          name: string
          deviceKey: string
          kind: 'natural' | 'legal'
          country?: string
          role?: 'admin' | 'operator' | 'auditor'
          kyc?: string
        },
      ) => {
        const client = new NodeClient(options.node)
        const operator = readKeyFile(options.key)
        const device = readKeyFile(options.deviceKey)
        const personId = newId()
        const words = options.name.trim().split(/\s+/)
        const record: Person =
          options.kind === 'legal'
            ? {
                id: personId,
                kind: 'legal',
                names: [{ legalPersonName: options.name, legalPersonNameIdentifierType: 'LEGL' }],
                ...(options.country ? { countryOfRegistration: options.country } : {}),
              }
            : {
                id: personId,
                kind: 'natural',
                names: [
                  {
                    primaryIdentifier: words.length > 1 ? words.slice(1).join(' ') : words[0]!,
                    ...(words.length > 1 ? { secondaryIdentifier: words[0]! } : {}),
                    nameIdentifierType: 'LEGL',
                  },
                ],
                ...(options.country ? { countryOfResidence: options.country } : {}),
              }
        const transactions = [
          await client.sign(operator, {
            type: 'register_person',
            person: record,
            keys: [device.deviceKey],
            ...(options.role ? { roles: [options.role] } : {}),
          }),
        ]
        if (options.kyc !== undefined) {
          transactions.push(
            await client.sign(operator, {
              type: 'set_kyc',
              person: personId,
              status: options.kyc as 'verified',
            }),
          )
        }
        writeKeyFile(options.deviceKey, { ...device.file, person: personId }, true)
        await submit(options, client, operator, transactions)
        if (options.json !== true) process.stdout.write(`person ${personId}\n`)
      },
    )
  clientCommand(person, 'kyc', "set a person's KYC status (operator)")
    .requiredOption('--person <id>', 'the person')
    .addOption(
      new Option('--status <status>', 'KYC status')
        .choices(['pending', 'verified', 'rejected'])
        .makeOptionMandatory(),
    )
    .action(
      async (options: ClientOptions & { person: string; status: 'pending' | 'verified' | 'rejected' }) => {
        const client = new NodeClient(options.node)
        const operator = readKeyFile(options.key)
        await submit(options, client, operator, [
          await client.sign(operator, {
            type: 'set_kyc',
            person: id(options.person, '--person'),
            status: options.status,
          }),
        ])
      },
    )
  clientCommand(person, 'show', 'show a person, their keys and accounts')
    .argument('[person]', 'person id (default: the signer)')
    .action(async (personId: string | undefined, options: ClientOptions) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      const target = personId === undefined ? await personOf(client, signer) : id(personId, 'person')
      const shown = await client.get(signer, `/v1/persons/${target}`)
      print(true, shown, () => '')
    })

  const asset = program.command('asset').description('assets issued on this node')
  clientCommand(asset, 'create', 'create an asset (operator)')
    .requiredOption('--asset <id>', 'asset id <org>:<CODE>, e.g. bank:EUR')
    .requiredOption('--issuer <person>', 'the issuing legal person')
    .requiredOption('--scale <digits>', 'decimal places of the minor unit (0-18)')
    .requiredOption('--name <name>', 'display name')
    .action(
      async (options: ClientOptions & { asset: string; issuer: string; scale: string; name: string }) => {
        const client = new NodeClient(options.node)
        const operator = readKeyFile(options.key)
        const scale = Number(options.scale)
        if (!Number.isInteger(scale)) throw new VmError('invalid_argument', '--scale must be an integer')
        await submit(options, client, operator, [
          await client.sign(operator, {
            type: 'create_asset',
            asset: options.asset,
            issuer: id(options.issuer, '--issuer'),
            scale,
            name: options.name,
          }),
        ])
      },
    )

  const account = program.command('account').description('accounts: open, show, statement')
  clientCommand(account, 'open', 'open an account (operator)')
    .requiredOption('--owner <person>', 'the owner')
    .requiredOption('--asset <id>', 'the asset')
    .option('--issuance-limit <amount>', "issuer account: how far it may go negative, in the asset's units")
    .action(async (options: ClientOptions & { owner: string; asset: string; issuanceLimit?: string }) => {
      const client = new NodeClient(options.node)
      const operator = readKeyFile(options.key)
      const accountId = newId()
      const issuer = options.issuanceLimit !== undefined
      const limit = issuer
        ? parseDecimal(options.issuanceLimit!, await assetScale(client, options.asset)).toString()
        : undefined
      await submit(options, client, operator, [
        await client.sign(operator, {
          type: 'open_account',
          account: accountId,
          owner: id(options.owner, '--owner'),
          asset: options.asset,
          flags: issuer ? [] : ['debits_must_not_exceed_credits'],
          ...(limit === undefined ? {} : { issuanceLimit: limit }),
        }),
      ])
      if (options.json !== true) process.stdout.write(`account ${accountId}\n`)
    })
  clientCommand(account, 'close', 'close an account with a zero balance (owner or operator)')
    .requiredOption('--account <id>', 'the account')
    .action(async (options: ClientOptions & { account: string }) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      await submit(options, client, signer, [
        await client.sign(signer, { type: 'close_account', account: id(options.account, '--account') }),
      ])
    })
  clientCommand(account, 'show', 'show an account and its balances (yours, or any as staff)')
    .argument('[account]', 'account id (default: every account of the signer)')
    .action(async (accountId: string | undefined, options: ClientOptions) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      // Through a view whose time range has passed, an account shows no balances.
      type View = {
        id: string
        asset: string
        balance?: string
        available?: string
        debitsPending?: string
        creditsPending?: string
        closed: boolean
      }
      const views: View[] =
        accountId === undefined
          ? (
              (await client.get(signer, `/v1/persons/${await personOf(client, signer)}/accounts`)) as {
                accounts: View[]
              }
            ).accounts
          : [(await client.get(signer, `/v1/accounts/${id(accountId, 'account')}`)) as View]
      const scales = new Map<string, number>()
      for (const view of views)
        if (!scales.has(view.asset)) scales.set(view.asset, await assetScale(client, view.asset))
      print(options.json === true, accountId === undefined ? { accounts: views } : views[0], () =>
        views
          .map((v) => {
            const scale = scales.get(v.asset)!
            const balances =
              v.balance === undefined || v.available === undefined
                ? 'balances outside the view'
                : `balance ${formatDecimal(BigInt(v.balance), scale)}  available ${formatDecimal(BigInt(v.available), scale)}`
            return `${v.id}  ${v.asset}  ${balances}${v.closed ? '  (closed)' : ''}`
          })
          .join('\n'),
      )
    })
  clientCommand(account, 'statement', "an account's entries, a page at a time")
    .argument('<account>', 'account id')
    .option('--cursor <n>', 'continue after this entry')
    .option('--limit <n>', 'entries per page', '100')
    .action(async (accountId: string, options: ClientOptions & { cursor?: string; limit: string }) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      const query = `?limit=${encodeURIComponent(options.limit)}${options.cursor === undefined ? '' : `&cursor=${encodeURIComponent(options.cursor)}`}`
      const page = (await client.get(
        signer,
        `/v1/accounts/${id(accountId, 'account')}/statement${query}`,
      )) as {
        entries: {
          leaf: number
          kind: string
          phase: string
          amount: string
          time: string
          transferId: string
        }[]
        nextCursor: number | null
      }
      print(options.json === true, page, () =>
        [
          ...page.entries.map(
            (e) =>
              `${e.time}  leaf ${e.leaf}  ${e.kind.padEnd(6)} ${e.phase.padEnd(7)} ${e.amount}  ${e.transferId}`,
          ),
          page.nextCursor === null ? '(end)' : `more: --cursor ${page.nextCursor}`,
        ].join('\n'),
      )
    })

  const view = program
    .command('view')
    .description('views: let another person, an auditor or everyone read some of your accounts')
  const yearMs = 365 * 24 * 3600 * 1000
  clientCommand(view, 'grant', 'grant a view of your accounts for a time range')
    .requiredOption('--accounts <ids>', 'your accounts, comma-separated: A[,B...]')
    .requiredOption('--to <grantee>', 'a person id (auditors are persons too), or "everyone"')
    .option('--from <time>', 'start of the covered activity (default: 1970-01-01T00:00:00.000Z, all history)')
    .option('--until <time>', 'end of the covered activity, excluded (default: one year from now)')
    .addHelpText(
      'after',
      '\nThe grantee reads the statement entries with time in [from, until), and the balances while now is in it.',
    )
    .action(
      async (options: ClientOptions & { accounts: string; to: string; from?: string; until?: string }) => {
        const client = new NodeClient(options.node)
        const signer = readKeyFile(options.key)
        const viewId = newId()
        await submit(options, client, signer, [
          await client.sign(signer, {
            type: 'grant_view',
            view: viewId,
            accounts: options.accounts.split(',').map((account) => id(account.trim(), '--accounts')),
            grantee: options.to === 'everyone' ? 'everyone' : id(options.to, '--to'),
            from: time(options.from ?? '1970-01-01T00:00:00.000Z', '--from'),
            until: time(options.until ?? nowTimestamp(Date.now() + yearMs), '--until'),
          }),
        ])
        if (options.json !== true) process.stdout.write(`view ${viewId}\n`)
      },
    )
  clientCommand(view, 'revoke', 'revoke a view you granted (or any, as an operator)')
    .requiredOption('--view <id>', 'the view')
    .action(async (options: ClientOptions & { view: string }) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      await submit(options, client, signer, [
        await client.sign(signer, { type: 'revoke_view', view: id(options.view, '--view') }),
      ])
    })
  clientCommand(view, 'list', 'the views a person granted or received')
    .argument('[person]', 'person id (default: the signer)')
    .action(async (personId: string | undefined, options: ClientOptions) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      const target = personId === undefined ? await personOf(client, signer) : id(personId, 'person')
      const page = (await client.get(signer, `/v1/persons/${target}/views`)) as {
        views: {
          id: string
          grantor: string
          grantee: string
          accounts: string[]
          from: string
          until: string
          revoked: boolean
        }[]
      }
      print(
        options.json === true,
        page,
        () =>
          page.views
            .map(
              (v) =>
                `${v.id}  ${v.grantor === target ? `to ${v.grantee}` : `from ${v.grantor}`}  ${v.from} .. ${v.until}  ${v.accounts.join(',')}${v.revoked ? '  (revoked)' : ''}`,
            )
            .join('\n') || '(no views)',
      )
    })

  const tx = program.command('tx').description('transactions: transfer, post, void, status')
  clientCommand(tx, 'transfer', 'sign, submit and wait for a transfer')
    .requiredOption('--from <account>', 'debit account (yours)')
    .requiredOption('--to <account>', 'credit account')
    .requiredOption('--amount <decimal>', "amount in the asset's units, e.g. 1.25")
    .requiredOption('--asset <id>', 'asset id')
    .option('--memo <text>', 'a note for the parties')
    .option('--pending-timeout <seconds>', 'two-phase: reserve now, post or void later, expire after this')
    .option('--id <id>', 'transaction id (default: random); reuse it to retry safely')
    .action(
      async (
        options: ClientOptions & {
          from: string
          to: string
          amount: string
          asset: string
          memo?: string
          pendingTimeout?: string
          id?: string
        },
      ) => {
        const client = new NodeClient(options.node)
        const signer = readKeyFile(options.key)
        const amount = parseDecimal(options.amount, await assetScale(client, options.asset))
        const timeout = options.pendingTimeout === undefined ? undefined : Number(options.pendingTimeout)
        if (timeout !== undefined && !Number.isInteger(timeout))
          throw new VmError('invalid_argument', '--pending-timeout must be whole seconds')
        const signed = await client.sign(
          signer,
          {
            type: 'transfer',
            debit: id(options.from, '--from'),
            credit: id(options.to, '--to'),
            amount: amount.toString(),
            asset: options.asset,
            ...(options.memo === undefined ? {} : { memo: options.memo }),
            ...(timeout === undefined ? {} : { pending: { timeoutSeconds: timeout } }),
          },
          options.id === undefined ? {} : { id: id(options.id, '--id') },
        )
        await submit(options, client, signer, [signed])
      },
    )
  clientCommand(tx, 'post', 'post a pending transfer, fully or partly')
    .requiredOption('--pending <id>', 'the pending transfer')
    .option('--amount <decimal>', 'post less than reserved')
    .option('--asset <id>', 'the asset, to read --amount in its units')
    .action(async (options: ClientOptions & { pending: string; amount?: string; asset?: string }) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      let amount: string | undefined
      if (options.amount !== undefined) {
        if (options.asset === undefined) throw new VmError('invalid_argument', '--amount needs --asset')
        amount = parseDecimal(options.amount, await assetScale(client, options.asset)).toString()
      }
      await submit(options, client, signer, [
        await client.sign(signer, {
          type: 'post_pending',
          pending: id(options.pending, '--pending'),
          ...(amount === undefined ? {} : { amount }),
        }),
      ])
    })
  clientCommand(tx, 'void', 'void a pending transfer')
    .requiredOption('--pending <id>', 'the pending transfer')
    .action(async (options: ClientOptions & { pending: string }) => {
      const client = new NodeClient(options.node)
      const signer = readKeyFile(options.key)
      await submit(options, client, signer, [
        await client.sign(signer, { type: 'void_pending', pending: id(options.pending, '--pending') }),
      ])
    })
  clientCommand(tx, 'status', 'the outcome of a transaction')
    .argument('<id>', 'transaction id')
    .option('--wait <ms>', 'long-poll up to this long', '0')
    .action(async (txId: string, options: ClientOptions & { wait: string }) => {
      const client = new NodeClient(options.node)
      const outcome = (await client.get(
        readKeyFile(options.key),
        `/v1/transactions/${id(txId, 'id')}?wait=${Number(options.wait) || 0}`,
      )) as Outcome
      print(
        options.json === true,
        outcome,
        () =>
          `${outcome.status} ${outcome.code ?? ''}${outcome.blockHeight === undefined ? '' : `block ${outcome.blockHeight} leaf ${outcome.leafIndex}`}`,
      )
    })

  const log = program.command('log').description('the public log: checkpoints and proofs')
  clientCommand(
    log,
    'checkpoint',
    "fetch the node's newest checkpoint and check its signature",
    false,
  ).action(async (options: ClientOptions) => {
    const client = new NodeClient(options.node)
    const node = await client.node()
    const note = await client.checkpoint()
    const checkpoint = openCheckpoint(note, node.noteVerifierKey, node.origin)
    print(
      options.json === true,
      {
        origin: checkpoint.origin,
        size: checkpoint.size,
        root: Buffer.from(checkpoint.root).toString('base64'),
        note,
      },
      () => note.trimEnd(),
    )
  })
  clientCommand(
    log,
    'prove',
    'prove that a leaf is in the log: fetch it, its inclusion proof and a signed checkpoint, and verify',
    false,
  )
    .requiredOption('--index <n>', 'leaf index')
    .action(async (options: ClientOptions & { index: string }) => {
      const index = Number(options.index)
      if (!Number.isSafeInteger(index) || index < 0)
        throw new VmError('invalid_argument', '--index must be a leaf index')
      const client = new NodeClient(options.node)
      const node = await client.node()
      const checkpoint = openCheckpoint(await client.checkpoint(), node.noteVerifierKey, node.origin)
      const leaf = (await client.publicGet(`/v1/log/leaves/${index}`)) as { leaf: string }
      const { proof } = (await client.publicGet(
        `/v1/log/proofs/inclusion?index=${index}&size=${checkpoint.size}`,
      )) as { proof: string[] }
      const hash = leafHash(fromBase64(leaf.leaf))
      verifyInclusion(hash, index, checkpoint.size, proof.map(fromBase64), checkpoint.root)
      print(
        options.json === true,
        {
          verified: true,
          index,
          size: checkpoint.size,
          leafHash: Buffer.from(hash).toString('base64'),
          proofLength: proof.length,
        },
        () =>
          `verified: leaf ${index} is in the log of size ${checkpoint.size} signed by ${node.origin} (${proof.length} proof hashes)`,
      )
    })
}
