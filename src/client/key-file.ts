import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { VmError } from '../protocol/errors.js'
import {
  generateEncryptionKey,
  generateSigningKey,
  jwkKeyPair,
  keyId,
  type OkpJwk,
  privateJwk,
  publicJwk,
  type SigningKeyPair,
} from '../protocol/keys.js'
import type { DeviceKey } from '../protocol/transaction.js'

/** A device key as a file: Ed25519 signing and X25519 encryption private JWKs, and the person once known. */
export interface KeyFile {
  readonly v: 1
  readonly keyId: string
  readonly person?: string
  readonly signing: OkpJwk
  readonly encryption: OkpJwk
}

export interface DeviceKeys {
  readonly keyId: string
  readonly person: string | undefined
  readonly signing: SigningKeyPair
  /** X25519: opens the leaves sealed for this device. */
  readonly encryption: SigningKeyPair
  readonly file: KeyFile
  /** The public part, as registered in the ledger. */
  readonly deviceKey: DeviceKey
}

export function newKeyFile(person?: string): KeyFile {
  const signing = privateJwk('Ed25519', generateSigningKey())
  const encryption = privateJwk('X25519', generateEncryptionKey())
  return { v: 1, keyId: keyId(signing), ...(person === undefined ? {} : { person }), signing, encryption }
}

export function openKeyFile(file: KeyFile): DeviceKeys {
  if (file.v !== 1 || typeof file.signing !== 'object' || typeof file.encryption !== 'object') {
    throw new VmError('key_file_invalid', 'not a vmoney key file (expected v: 1, signing, encryption)')
  }
  const signing = jwkKeyPair(file.signing, 'Ed25519')
  const encryption = jwkKeyPair(file.encryption, 'X25519')
  if (keyId(file.signing) !== file.keyId)
    throw new VmError('key_file_invalid', 'keyId does not match the signing key')
  const signingPublic = publicJwk('Ed25519', signing.publicKey)
  return {
    keyId: file.keyId,
    person: file.person,
    signing,
    encryption,
    file,
    deviceKey: {
      signing: signingPublic as DeviceKey['signing'],
      encryption: publicJwk('X25519', encryption.publicKey) as NonNullable<DeviceKey['encryption']>,
    },
  }
}

export function readKeyFile(path: string): DeviceKeys {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    throw new VmError('key_file_unreadable', `cannot read key file ${path}: ${(error as Error).message}`, {
      cause: error,
    })
  }
  try {
    return openKeyFile(JSON.parse(text) as KeyFile)
  } catch (error) {
    if (error instanceof VmError) throw new VmError(error.code, `${path}: ${error.message}`)
    throw new VmError('key_file_invalid', `${path} is not a JSON key file`)
  }
}

/** Private keys: readable by the owner only, and on disk (synced) before anything refers to them. */
export function writeKeyFile(path: string, file: KeyFile, overwrite = false): void {
  writeSecretFile(path, `${JSON.stringify(file, null, 2)}\n`, overwrite)
}

/**
 * Writes a secret atomically and durably: a 0600 temporary file, synced, renamed over the target, and the
 * folder synced, so that a power loss leaves either the old file or the whole new one.
 */
export function writeSecretFile(path: string, text: string, overwrite: boolean): void {
  if (!overwrite && existsSync(path))
    throw new VmError('file_exists', `${path} exists; refusing to overwrite a key`)
  const temporary = `${path}.${process.pid}.tmp`
  const fd = openSync(temporary, 'wx', 0o600)
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(temporary, path)
  const folder = openSync(dirname(path), 'r')
  try {
    fsyncSync(folder)
  } finally {
    closeSync(folder)
  }
}
