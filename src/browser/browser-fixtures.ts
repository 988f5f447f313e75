/**
 * Test fixtures (not a test file): synthetic chains built with the protocol functions and a real
 * Ed25519 key, and fresh browser databases on SQLite and PostgreSQL.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { Kysely } from 'kysely'
import pg from 'pg'
import type { FollowedNode } from '../node/config.js'
import { createLogger } from '../node/logger.js'
import {
  type Block,
  type BlockHeader,
  genesisPrevious,
  headerHash,
  logOrigin,
  signHeader,
} from '../protocol/block.js'
import { signCheckpoint } from '../protocol/checkpoint.js'
import { toBase64, utf8 } from '../protocol/encoding.js'
import { type EncryptionRecipient, encryptionRecipient, Sealer } from '../protocol/envelope.js'
import {
  generateEncryptionKey,
  generateSigningKey,
  keyId,
  publicJwk,
  type SigningKeyPair,
} from '../protocol/keys.js'
import { encodeSealedLeafText } from '../protocol/leaf.js'
import { Frontier, leafHash } from '../protocol/merkle.js'
import { testDatabasePrefix, testDialect, testPostgresServer } from '../testing/databases.js'
import { buildBrowserApp } from './app.js'
import { type BrowserContext, createBrowserContext } from './context.js'
import type { BrowserSchema } from './schema.js'
import { type BrowserDatabase, openBrowserDatabase } from './storage.js'

export interface SyntheticNode {
  readonly key: SigningKeyPair
  readonly id: string
  readonly followed: FollowedNode
}

export interface ChainState {
  readonly header: BlockHeader
  readonly frontier: Frontier
}

export type HeaderChanges = { -readonly [K in keyof BlockHeader]?: unknown }

const startMs = Date.parse('2025-03-01T09:00:00.000Z')

/** A node with a fresh key; its URL points nowhere (synthetic chains are pushed, never pulled). */
export function syntheticNode(url = 'http://127.0.0.1:9'): SyntheticNode {
  const key = generateSigningKey()
  return { key, id: keyId(publicJwk('Ed25519', key.publicKey)), followed: { url, publicKey: key.publicKey } }
}

export function plainLeaves(height: number, count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => utf8(`{"leaf":"${height}.${i}"}`))
}

const sealer = new Sealer(generateEncryptionKey())

/** A recipient of sealed leaves with a fresh X25519 key; its `kid` is what the recipients index holds. */
export function newRecipient(): EncryptionRecipient {
  return encryptionRecipient(generateEncryptionKey().publicKey)
}

/** A sealed (v 2) leaf, really encrypted to these recipients. */
export function sealedLeaf(recipients: readonly EncryptionRecipient[]): Uint8Array {
  const { jwe } = sealer.seal(utf8('{"a sealed":"transaction"}'), recipients)
  return utf8(
    encodeSealedLeafText(randomBytes(16).toString('hex'), 'transfer', '2025-03-01T09:00:00.000Z', jwe),
  )
}

export interface BlockOptions {
  readonly changes?: HeaderChanges
  /** Signs the header (default: the node's key). */
  readonly signer?: Uint8Array
  /** Signs the checkpoint (default: the node's key). */
  readonly checkpointSigner?: Uint8Array
  /** The checkpoint's size (default: the block's log size). */
  readonly checkpointSize?: number
  /** Spreads block times; a different offset gives a different, equally valid block. */
  readonly timeOffsetMs?: number
}

/** A correct block after `previous`, then `changes` applied to the header before signing. */
export function makeBlock(
  node: SyntheticNode,
  previous: ChainState | null,
  leaves: readonly Uint8Array[],
  options: BlockOptions = {},
): Block {
  const frontier = previous === null ? new Frontier() : previous.frontier.clone()
  for (const leaf of leaves) frontier.append(leafHash(leaf))
  const height = previous === null ? 0 : previous.header.height + 1
  const correct: BlockHeader = {
    v: 1,
    node: node.id,
    height,
    previous: previous === null ? genesisPrevious : toBase64(headerHash(previous.header)),
    firstLeaf: previous === null ? 0 : previous.header.logSize,
    leafCount: leaves.length,
    logSize: frontier.size,
    logRoot: toBase64(frontier.root()),
    time: new Date(startMs + height * 1_000 + (options.timeOffsetMs ?? 0)).toISOString(),
  }
  const header = { ...correct, ...options.changes } as BlockHeader
  const origin = logOrigin(node.id)
  const checkpoint = signCheckpoint(
    { origin, size: options.checkpointSize ?? frontier.size, root: frontier.root(), extensions: [] },
    origin,
    options.checkpointSigner ?? node.key.secretKey,
  )
  const signature = signHeader(header, options.signer ?? node.key.secretKey)
  return { header, signature, checkpoint, leaves: leaves.map(toBase64) }
}

export function nextState(previous: ChainState | null, block: Block): ChainState {
  const frontier = previous === null ? new Frontier() : previous.frontier.clone()
  for (const leaf of block.leaves) frontier.append(leafHash(Buffer.from(leaf, 'base64')))
  return { header: block.header, frontier }
}

/** A valid chain with these leaf counts per block. */
export function makeChain(
  node: SyntheticNode,
  counts: readonly number[],
  leavesOf: (height: number, count: number) => Uint8Array[] = plainLeaves,
): { blocks: Block[]; states: ChainState[] } {
  const blocks: Block[] = []
  const states: ChainState[] = []
  counts.forEach((count, height) => {
    const previous = states.at(-1) ?? null
    const block = makeBlock(node, previous, leavesOf(height, count))
    blocks.push(block)
    states.push(nextState(previous, block))
  })
  return { blocks, states }
}

/** Where a test suite's browser database lives: a SQLite file, or a fresh PostgreSQL database. */
export interface DatabaseTarget {
  readonly name: string
  /** Why the target is skipped, or undefined when it runs. */
  readonly skip: string | undefined
  open(): Promise<BrowserDatabase>
  /** Removes everything the target created. */
  dispose(): Promise<void>
}

const postgresProbeTimeoutMs = 3_000

export function sqliteTarget(): DatabaseTarget {
  const dir = mkdtempSync(join(tmpdir(), 'vmoney-browser-'))
  return {
    name: 'SQLite',
    skip: undefined,
    open: () => openBrowserDatabase(`sqlite:${join(dir, 'browser.db')}`),
    async dispose() {
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** A fresh database on the suite's PostgreSQL server, or a skip saying why there is none. */
export async function postgresTarget(): Promise<DatabaseTarget> {
  const name = `${testDatabasePrefix}browser_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({
    connectionString: `${testPostgresServer}/postgres`,
    connectionTimeoutMillis: postgresProbeTimeoutMs,
  })
  try {
    await admin.connect()
    await admin.query(`create database ${name}`)
  } catch (error) {
    await admin.end().catch(() => {})
    const reason = `PostgreSQL at ${testPostgresServer} is unreachable: ${(error as Error).message}`
    return {
      name: 'PostgreSQL',
      skip: reason,
      open: () => Promise.reject(new Error(reason)),
      dispose: async () => {},
    }
  }
  await admin.end()
  return {
    name: 'PostgreSQL',
    skip: undefined,
    open: () => openBrowserDatabase(`${testPostgresServer}/${name}`),
    async dispose() {
      const client = new pg.Client({ connectionString: `${testPostgresServer}/postgres` })
      await client.connect()
      await client.query(`drop database if exists ${name} with (force)`)
      await client.end()
    },
  }
}

/** The browser's database in the suite's dialect (see src/testing/databases.ts). */
export async function databaseTargets(): Promise<DatabaseTarget[]> {
  return [testDialect === 'postgres' ? await postgresTarget() : sqliteTarget()]
}

export const silentLog = createLogger('silent')

/** A browser app (for inject) following `nodes`, on `database`. */
export async function browserApp(
  database: BrowserDatabase,
  nodes: readonly SyntheticNode[],
): Promise<{ app: FastifyInstance; context: BrowserContext }> {
  const context = await createBrowserContext({
    database,
    nodes: nodes.map((n) => n.followed),
    log: silentLog,
  })
  return { app: await buildBrowserApp(context, false), context }
}

/** What is stored for a node: any refusal must leave all of it unchanged. */
export async function storedState(db: Kysely<BrowserSchema>, node: string) {
  const count = async (table: keyof BrowserSchema) => {
    const row = await db
      .selectFrom(table)
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('node', '=', node)
      .executeTakeFirstOrThrow()
    return Number(row.n)
  }
  const head = await db
    .selectFrom('browser_blocks')
    .select(['height', 'header_hash', 'log_size'])
    .where('node', '=', node)
    .orderBy('height', 'desc')
    .limit(1)
    .executeTakeFirst()
  return {
    head: head ?? null,
    blocks: await count('browser_blocks'),
    leaves: Number(
      (
        await db
          .selectFrom('browser_leaf_pages')
          .select((eb) => eb.fn.sum<number | string | null>('leaf_count').as('n'))
          .where('node', '=', node)
          .executeTakeFirstOrThrow()
      ).n ?? 0,
    ),
    leafPages: await count('browser_leaf_pages'),
    treeNodes: await count('browser_tree_nodes'),
    recipients: await count('browser_recipients'),
    alarms: await count('browser_alarms'),
  }
}

/** POSTs a block (or any body) as JSON. */
export async function pushBlock(app: FastifyInstance, body: unknown) {
  const response = await app.inject({
    method: 'POST',
    url: '/v1/blocks',
    headers: { 'content-type': 'application/json' },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { status: response.statusCode, body: response.json() as Record<string, unknown>, response }
}
