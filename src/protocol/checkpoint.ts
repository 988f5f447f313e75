/**
 * Checkpoints (C2SP tlog-checkpoint) in signed notes (C2SP signed-note), byte-compatible with Go's
 * golang.org/x/mod/sumdb/note, so that witnesses and other tooling of the transparency ecosystem can
 * read and co-sign what this log publishes.
 *
 * A note is its text (ending in a newline), a blank line, then signature lines
 * `— <key name> <base64(4-byte key id ‖ signature)>`. Only Ed25519 keys (signature type 0x01) are
 * produced and verified here; signatures by other keys are ignored, as the specification says.
 */
import { ed25519 } from '@noble/curves/ed25519.js'
import { bytesEqual, concatBytes, fromBase64, fromUtf8, toBase64, toHex, utf8 } from './encoding.js'
import { VmError } from './errors.js'
import { hashSize, sha256 } from './hash.js'
import { ed25519PublicKeySize, ed25519SignatureSize, sign, verify } from './keys.js'

/** Notes larger than this are refused before anything else is looked at. */
export const noteBytesMax = 1024 * 1024
/** Signature lines per note, as Go's note.Open allows. */
export const noteSignaturesMax = 100

const signatureTypeEd25519 = 0x01
const keyIdSize = 4
const signatureLinePrefix = '\u2014 '

export interface Checkpoint {
  /** The log's identity, conventionally a schema-less URL. */
  readonly origin: string
  readonly size: number
  /** RFC 9162 root of the first `size` leaves. */
  readonly root: Uint8Array
  /** Optional further body lines, each non-empty. */
  readonly extensions: readonly string[]
}

/** A parsed verifier key `<name>+<8 hex key id>+<base64(0x01 ‖ public key)>`. */
export interface NoteVerifier {
  readonly name: string
  readonly keyId: Uint8Array
  readonly publicKey: Uint8Array
}

type NoteKind = 'note' | 'checkpoint'

function malformed(kind: NoteKind, message: string): VmError {
  return new VmError(`${kind}_malformed`, message, { status: 400 })
}

function signatureInvalid(kind: NoteKind, message: string): VmError {
  return new VmError(`${kind}_signature_invalid`, message, { status: 400 })
}

function invalidKey(message: string): VmError {
  return new VmError('invalid_key', message, { status: 400 })
}

// Unicode White_Space, which Go's unicode.IsSpace tests for.
const whiteSpace = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u

/** A key name is non-empty and has no white space and no '+' (which separates the verifier key's fields). */
export function isValidKeyName(name: string): boolean {
  return (
    name.length > 0 &&
    !whiteSpace.test(name) &&
    !name.includes('+') &&
    isWellFormed(name) &&
    !hasControl(name)
  )
}

function isWellFormed(text: string): boolean {
  // Lone surrogates would be silently replaced when encoded, so the signed bytes would not be the text.
  return fromUtf8(utf8(text)) === text
}

/** ASCII control characters other than newline are not allowed anywhere in a note. */
function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x20 && code !== 0x0a) return true
  }
  return false
}

/** The 4-byte key id: the first bytes of SHA-256(name ‖ '\n' ‖ 0x01 ‖ public key). */
export function noteKeyId(keyName: string, publicKey: Uint8Array): Uint8Array {
  return sha256(utf8(keyName), new Uint8Array([0x0a, signatureTypeEd25519]), publicKey).slice(0, keyIdSize)
}

/** The verifier key in the form Go's note.NewVerifier reads. */
export function noteVerifierKey(keyName: string, publicKey: Uint8Array): string {
  if (!isValidKeyName(keyName)) throw invalidKey(`invalid note key name ${JSON.stringify(keyName)}`)
  if (publicKey.length !== ed25519PublicKeySize) throw invalidKey('an Ed25519 public key is 32 bytes')
  const typedKey = concatBytes(new Uint8Array([signatureTypeEd25519]), publicKey)
  return `${keyName}+${toHex(noteKeyId(keyName, publicKey))}+${toBase64(typedKey)}`
}

export function parseNoteVerifierKey(text: string): NoteVerifier {
  const parts = text.split('+')
  // The base64 key may itself contain '+': the name and key id are the first two fields.
  const [name, keyIdHex] = parts
  const encodedKey = parts.slice(2).join('+')
  if (name === undefined || keyIdHex === undefined || !isValidKeyName(name)) {
    throw invalidKey('a verifier key is <name>+<key id>+<key>, with a name free of spaces and "+"')
  }
  if (!/^[0-9a-fA-F]{8}$/.test(keyIdHex)) throw invalidKey('the key id of a verifier key is 8 hex digits')
  let typedKey: Uint8Array
  try {
    typedKey = fromBase64(encodedKey)
  } catch (error) {
    throw new VmError('invalid_key', 'the key of a verifier key is not base64', { status: 400, cause: error })
  }
  if (typedKey[0] !== signatureTypeEd25519)
    throw invalidKey('only Ed25519 verifier keys (type 0x01) are supported')
  const publicKey = typedKey.slice(1)
  if (publicKey.length !== ed25519PublicKeySize) throw invalidKey('an Ed25519 verifier key holds 32 bytes')
  const keyId = noteKeyId(name, publicKey)
  if (toHex(keyId) !== keyIdHex.toLowerCase())
    throw invalidKey('the key id does not match the key name and key')
  return { name, keyId, publicKey }
}

/** Signs `text` (one or more lines, each ending in '\n') into a note with one signature. */
export function signNote(text: string, keyName: string, secretKey: Uint8Array): string {
  return signText('note', text, keyName, secretKey)
}

function signText(kind: NoteKind, text: string, keyName: string, secretKey: Uint8Array): string {
  if (text.length === 0 || !text.endsWith('\n')) throw malformed(kind, 'note text must end with a newline')
  if (hasControl(text) || !isWellFormed(text))
    throw malformed(kind, 'note text must be UTF-8 without control characters')
  if (!isValidKeyName(keyName)) throw invalidKey(`invalid note key name ${JSON.stringify(keyName)}`)
  const publicKey = ed25519.getPublicKey(secretKey)
  const signature = sign(utf8(text), secretKey)
  const note = `${text}\n${signatureLinePrefix}${keyName} ${toBase64(concatBytes(noteKeyId(keyName, publicKey), signature))}\n`
  if (utf8(note).length > noteBytesMax) throw malformed(kind, `a note is at most ${noteBytesMax} bytes`)
  return note
}

/**
 * Opens a signed note: checks its syntax strictly (as Go's note.Open does) and requires a valid
 * signature by `verifier`. Signatures by other keys are ignored; a bad signature by this key is fatal.
 * Returns the signed text.
 */
export function openNote(note: string | Uint8Array, verifier: NoteVerifier | string): string {
  return openText('note', note, verifier)
}

function openText(kind: NoteKind, note: string | Uint8Array, verifierOrKey: NoteVerifier | string): string {
  const verifier = typeof verifierOrKey === 'string' ? parseNoteVerifierKey(verifierOrKey) : verifierOrKey
  let message: string
  if (typeof note === 'string') {
    if (note.length > noteBytesMax || utf8(note).length > noteBytesMax) {
      throw malformed(kind, `a note is at most ${noteBytesMax} bytes`)
    }
    if (!isWellFormed(note)) throw malformed(kind, 'the note is not valid UTF-8')
    message = note
  } else {
    if (note.length > noteBytesMax) throw malformed(kind, `a note is at most ${noteBytesMax} bytes`)
    try {
      message = fromUtf8(note)
    } catch (error) {
      throw new VmError(`${kind}_malformed`, 'the note is not valid UTF-8', { status: 400, cause: error })
    }
  }
  if (hasControl(message)) throw malformed(kind, 'the note contains control characters')

  // The signature block follows the last blank line; the text keeps its final newline.
  const split = message.lastIndexOf('\n\n')
  if (split < 0) throw malformed(kind, 'the note has no blank line before its signatures')
  const text = message.slice(0, split + 1)
  const block = message.slice(split + 2)
  if (block.length === 0 || !block.endsWith('\n'))
    throw malformed(kind, 'the signature block must end with a newline')
  const lines = block.slice(0, -1).split('\n')
  if (lines.length > noteSignaturesMax)
    throw malformed(kind, `a note carries at most ${noteSignaturesMax} signatures`)

  const textBytes = utf8(text)
  let verified = false
  for (const line of lines) {
    if (!line.startsWith(signatureLinePrefix)) throw malformed(kind, 'a signature line must start with "— "')
    const rest = line.slice(signatureLinePrefix.length)
    const space = rest.indexOf(' ')
    const name = space < 0 ? rest : rest.slice(0, space)
    const encoded = space < 0 ? '' : rest.slice(space + 1)
    if (!isValidKeyName(name) || encoded.length === 0)
      throw malformed(kind, 'a signature line is "— <name> <base64>"')
    let blob: Uint8Array
    try {
      blob = fromBase64(encoded)
    } catch (error) {
      throw new VmError(`${kind}_malformed`, 'a signature is not base64', { status: 400, cause: error })
    }
    if (blob.length <= keyIdSize) throw malformed(kind, 'a signature holds a key id and signature bytes')
    // Someone else's signature, or a repeat of one already checked (Go skips repeats too).
    if (verified || name !== verifier.name || !bytesEqual(blob.subarray(0, keyIdSize), verifier.keyId))
      continue
    const signature = blob.subarray(keyIdSize)
    if (signature.length !== ed25519SignatureSize || !verify(signature, textBytes, verifier.publicKey)) {
      throw signatureInvalid(kind, `the signature by ${verifier.name} does not verify`)
    }
    verified = true
  }
  if (!verified) throw signatureInvalid(kind, `the note carries no signature by ${verifier.name}`)
  return text
}

function checkBodyLine(line: string, what: string): void {
  if (line.length === 0 || line.includes('\n')) {
    throw malformed('checkpoint', `the ${what} must be one non-empty line`)
  }
}

/** The checkpoint body: origin, size, base64 root, extension lines, each ending in '\n'. */
export function formatCheckpoint(checkpoint: Checkpoint): string {
  checkBodyLine(checkpoint.origin, 'origin')
  if (!Number.isSafeInteger(checkpoint.size) || checkpoint.size < 0) {
    throw malformed('checkpoint', 'the checkpoint size must be a non-negative safe integer')
  }
  if (checkpoint.root.length !== hashSize)
    throw malformed('checkpoint', `the checkpoint root must be ${hashSize} bytes`)
  for (const extension of checkpoint.extensions) checkBodyLine(extension, 'extension line')
  const lines = [
    checkpoint.origin,
    String(checkpoint.size),
    toBase64(checkpoint.root),
    ...checkpoint.extensions,
  ]
  return lines.map((line) => `${line}\n`).join('')
}

/** Parses a checkpoint body strictly: canonical decimal size, 32-byte root, no empty lines. */
export function parseCheckpoint(text: string): Checkpoint {
  if (!text.endsWith('\n')) throw malformed('checkpoint', 'the checkpoint must end with a newline')
  const [origin, sizeText, rootText, ...extensions] = text.slice(0, -1).split('\n')
  if (origin === undefined || sizeText === undefined || rootText === undefined) {
    throw malformed('checkpoint', 'a checkpoint has an origin, a size and a root line')
  }
  if (origin.length === 0) throw malformed('checkpoint', 'the checkpoint origin is empty')
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) {
    throw malformed(
      'checkpoint',
      `the checkpoint size ${JSON.stringify(sizeText)} is not a canonical decimal`,
    )
  }
  let root: Uint8Array
  try {
    root = fromBase64(rootText)
  } catch (error) {
    throw new VmError('checkpoint_malformed', 'the checkpoint root is not base64', {
      status: 400,
      cause: error,
    })
  }
  if (root.length !== hashSize) throw malformed('checkpoint', `the checkpoint root must be ${hashSize} bytes`)
  if (extensions.some((line) => line.length === 0))
    throw malformed('checkpoint', 'checkpoint lines must not be empty')
  return { origin, size: Number(sizeText), root, extensions }
}

/** The whole signed note of a checkpoint. */
export function signCheckpoint(checkpoint: Checkpoint, keyName: string, secretKey: Uint8Array): string {
  return signText('checkpoint', formatCheckpoint(checkpoint), keyName, secretKey)
}

/**
 * Verifies and parses a checkpoint note: strict syntax, a valid signature by `verifierKey`, and,
 * when given, the expected origin (VmError 'checkpoint_origin_mismatch').
 */
export function openCheckpoint(
  note: string | Uint8Array,
  verifierKey: NoteVerifier | string,
  expectedOrigin?: string,
): Checkpoint {
  const checkpoint = parseCheckpoint(openText('checkpoint', note, verifierKey))
  if (expectedOrigin !== undefined && checkpoint.origin !== expectedOrigin) {
    throw new VmError(
      'checkpoint_origin_mismatch',
      `the checkpoint is for ${JSON.stringify(checkpoint.origin)}, not ${JSON.stringify(expectedOrigin)}`,
      { status: 400 },
    )
  }
  return checkpoint
}
