import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Kysely } from 'kysely'
import { writeSecretFile } from '../client/key-file.js'
import { logOrigin } from '../protocol/block.js'
import { fromBase64, toBase64 } from '../protocol/encoding.js'
import { VmError } from '../protocol/errors.js'
import {
  generateEncryptionKey,
  generateSigningKey,
  keyId,
  type OkpJwk,
  publicJwk,
  type SigningKeyPair,
} from '../protocol/keys.js'
import type { Database } from './storage/schema.js'

/** AES-256-GCM: 32-byte key, 12-byte nonce, 16-byte tag. */
const masterKeySize = 32
const nonceSize = 12
const tagSize = 16

export interface MasterKey {
  readonly key: Uint8Array
  readonly source: 'environment' | 'file'
  readonly file?: string
}

/**
 * The master key encrypts the node's private keys at rest. It comes from VMONEY_MASTER_KEY (base64,
 * 32 bytes) or, when that is unset, from a key file created once with mode 0600.
 */
export function loadMasterKey(
  fromEnvironment: string | undefined,
  dataDir: string,
  mayCreate: boolean,
): MasterKey {
  if (fromEnvironment !== undefined && fromEnvironment !== '') {
    let key: Uint8Array
    try {
      key = fromBase64(fromEnvironment)
    } catch {
      throw new VmError('config_invalid', 'VMONEY_MASTER_KEY must be base64 of 32 bytes')
    }
    if (key.length !== masterKeySize)
      throw new VmError('config_invalid', 'VMONEY_MASTER_KEY must be base64 of 32 bytes')
    return { key, source: 'environment' }
  }
  const file = join(dataDir, 'master.key')
  if (!existsSync(file)) {
    // A new master key for a database that already holds sealed keys would only hide the real loss.
    if (!mayCreate) {
      throw new VmError(
        'master_key_missing',
        `${file} is missing and VMONEY_MASTER_KEY is unset: the node keys cannot be opened`,
      )
    }
    mkdirSync(dirname(file), { recursive: true })
    writeSecretFile(file, `${toBase64(randomBytes(masterKeySize))}\n`, false)
  }
  const key = fromBase64(readFileSync(file, 'utf8').trim())
  if (key.length !== masterKeySize)
    throw new VmError('config_invalid', `${file} does not hold a 32-byte base64 key`)
  return { key, source: 'file', file }
}

export function sealSecret(masterKey: Uint8Array, plaintext: Uint8Array, label: string): string {
  const nonce = randomBytes(nonceSize)
  const cipher = createCipheriv('aes-256-gcm', masterKey, nonce)
  cipher.setAAD(Buffer.from(label))
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return toBase64(Buffer.concat([nonce, body, cipher.getAuthTag()]))
}

export function openSecret(masterKey: Uint8Array, sealed: string, label: string): Uint8Array {
  const bytes = fromBase64(sealed)
  const decipher = createDecipheriv('aes-256-gcm', masterKey, bytes.subarray(0, nonceSize))
  decipher.setAAD(Buffer.from(label))
  decipher.setAuthTag(bytes.subarray(bytes.length - tagSize))
  try {
    return Buffer.concat([
      decipher.update(bytes.subarray(nonceSize, bytes.length - tagSize)),
      decipher.final(),
    ])
  } catch (error) {
    throw new VmError(
      'master_key_mismatch',
      'cannot decrypt the node keys: wrong master key for this database',
      {
        status: 500,
        cause: error,
      },
    )
  }
}

export interface NodeIdentity {
  readonly nodeId: string
  readonly origin: string
  readonly signing: SigningKeyPair
  readonly signingJwk: OkpJwk
  /**
   * X25519: the sender key of every sealed leaf and the archive key, a recipient of every leaf, so that the
   * node can read its own log (audit, disclosure of old leaves to a new view's grantee).
   */
  readonly encryption: SigningKeyPair
  readonly encryptionJwk: OkpJwk
}

const signingKeySetting = 'node_signing_key'
const encryptionKeySetting = 'node_encryption_key'

/** Whether this database already holds the node's sealed keys (then the master key must already exist). */
export async function hasIdentity(db: Kysely<Database>): Promise<boolean> {
  return (
    (await db
      .selectFrom('node_settings')
      .select('name')
      .where('name', '=', signingKeySetting)
      .executeTakeFirst()) !== undefined
  )
}

/** Loads one of the node's key pairs, sealed under the master key, creating it on first use. */
async function loadOrCreateKey(
  db: Kysely<Database>,
  masterKey: MasterKey,
  name: string,
  generate: () => SigningKeyPair,
): Promise<{ pair: SigningKeyPair; created: boolean }> {
  const row = await db.selectFrom('node_settings').select('value').where('name', '=', name).executeTakeFirst()
  if (row !== undefined) {
    const stored = JSON.parse(row.value) as { publicKey: string; secretKey: string }
    return {
      pair: {
        publicKey: fromBase64(stored.publicKey),
        secretKey: openSecret(masterKey.key, stored.secretKey, name),
      },
      created: false,
    }
  }
  const pair = generate()
  const stored = JSON.stringify({
    publicKey: toBase64(pair.publicKey),
    secretKey: sealSecret(masterKey.key, pair.secretKey, name),
  })
  await db.insertInto('node_settings').values({ name, value: stored, updated_at: Date.now() }).execute()
  return { pair, created: true }
}

/** Loads the node's keys, creating them on first start. Returns whether the signing key was created. */
export async function loadOrCreateIdentity(
  db: Kysely<Database>,
  masterKey: MasterKey,
): Promise<{ identity: NodeIdentity; created: boolean }> {
  const { pair: signing, created } = await loadOrCreateKey(
    db,
    masterKey,
    signingKeySetting,
    generateSigningKey,
  )
  const { pair: encryption } = await loadOrCreateKey(
    db,
    masterKey,
    encryptionKeySetting,
    generateEncryptionKey,
  )
  const signingJwk = publicJwk('Ed25519', signing.publicKey)
  const nodeId = keyId(signingJwk)
  return {
    identity: {
      nodeId,
      origin: logOrigin(nodeId),
      signing,
      signingJwk,
      encryption,
      encryptionJwk: publicJwk('X25519', encryption.publicKey),
    },
    created,
  }
}
