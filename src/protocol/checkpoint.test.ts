import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import {
  type Checkpoint,
  formatCheckpoint,
  isValidKeyName,
  noteBytesMax,
  noteKeyId,
  noteVerifierKey,
  openCheckpoint,
  openNote,
  parseCheckpoint,
  parseNoteVerifierKey,
  signCheckpoint,
  signNote,
} from './checkpoint.js'
import { fromBase64, toBase64, toHex, utf8 } from './encoding.js'
import { VmError } from './errors.js'
import { sha256 } from './hash.js'
import { generateSigningKey } from './keys.js'

// The example of golang.org/x/mod/sumdb/note (doc.go, example_test.go, note_test.go).
const peterSignerKey = 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz'
const peterVerifierKey = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'
const enochVerifierKey = 'EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop'
const goText =
  "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
const peterLine =
  '— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n'
const enochLine =
  '— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n'
const goNote = `${goText}\n${peterLine}`

// The example of the C2SP signed-note specification.
const specVerifierKey = 'example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k'
const specNote =
  'This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n'

// A checkpoint of the Go checksum database, as in transparency-dev's tests (TestSumDBNoteParsing).
const sumDbVerifierKey = 'sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8'
const sumDbCheckpoint =
  'go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n' +
  '— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n'

/** Go's private key string PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>; the seed is our secret key. */
function goSecretKey(signerKey: string): { name: string; secretKey: Uint8Array } {
  const [, , name, , ...encoded] = signerKey.split('+')
  const typed = fromBase64(encoded.join('+'))
  assert.equal(typed[0], 1)
  return { name: name!, secretKey: typed.slice(1) }
}

const isCode = (code: string) => (error: unknown) => error instanceof VmError && error.code === code
const malformed = isCode('checkpoint_malformed')
const signatureInvalid = isCode('checkpoint_signature_invalid')

const key = generateSigningKey()
const keyName = 'ledger.example/log'
const verifierKey = noteVerifierKey(keyName, key.publicKey)
const checkpoint: Checkpoint = {
  origin: 'ledger.example/log',
  size: 1234,
  root: sha256(utf8('root')),
  extensions: [],
}

describe('cross-checks with Go golang.org/x/mod/sumdb/note', () => {
  test('the verifier key parses and formats back byte for byte', () => {
    const verifier = parseNoteVerifierKey(peterVerifierKey)
    assert.equal(verifier.name, 'PeterNeumann')
    assert.equal(toHex(verifier.keyId), 'c74f20a3')
    assert.equal(noteVerifierKey(verifier.name, verifier.publicKey), peterVerifierKey)
  })

  test('signing with the example private key gives exactly the example note', () => {
    const { name, secretKey } = goSecretKey(peterSignerKey)
    assert.equal(signNote(goText, name, secretKey), goNote)
  })

  test('the example note opens with its key', () => {
    assert.equal(openNote(goNote, peterVerifierKey), goText)
    assert.equal(openNote(utf8(goNote), parseNoteVerifierKey(peterVerifierKey)), goText)
  })

  test('with two signatures, each key finds its own and ignores the other', () => {
    const note = `${goText}\n${peterLine}${enochLine}`
    assert.equal(openNote(note, peterVerifierKey), goText)
    assert.equal(openNote(note, enochVerifierKey), goText)
    assert.throws(() => openNote(goNote, enochVerifierKey), isCode('note_signature_invalid'))
  })

  test('the C2SP signed-note example opens', () => {
    assert.equal(toHex(parseNoteVerifierKey(specVerifierKey).keyId), '530d903a')
    assert.equal(openNote(specNote, specVerifierKey), 'This is an example message.\n')
  })

  test('a real sum.golang.org checkpoint opens and parses', () => {
    const opened = openCheckpoint(sumDbCheckpoint, sumDbVerifierKey, 'go.sum database tree')
    assert.equal(opened.size, 6_476_701)
    assert.equal(toBase64(opened.root), 'mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=')
    assert.deepEqual(opened.extensions, [])
    assert.throws(
      () => openCheckpoint(sumDbCheckpoint.replace('6476701', '6476702'), sumDbVerifierKey),
      signatureInvalid,
    )
  })

  test('every mangling of a verifier key is refused (as in Go TestNewVerifier)', () => {
    for (let start = 0; start < peterVerifierKey.length; start++) {
      for (let end = start + 1; end <= peterVerifierKey.length; end++) {
        if (start === 0 && end === peterVerifierKey.length) continue
        const part = peterVerifierKey.slice(start, end)
        assert.throws(() => parseNoteVerifierKey(part), isCode('invalid_key'), part)
      }
    }
    for (let i = 0; i < peterVerifierKey.length; i++) {
      const changed =
        peterVerifierKey.slice(0, i) +
        String.fromCharCode(peterVerifierKey.charCodeAt(i) + 1) +
        peterVerifierKey.slice(i + 1)
      assert.throws(() => parseNoteVerifierKey(changed), isCode('invalid_key'), changed)
    }
    // A key of the wrong length and an unknown type, each with a matching key id.
    assert.throws(
      () =>
        parseNoteVerifierKey('PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=='),
      isCode('invalid_key'),
    )
    assert.throws(
      () => parseNoteVerifierKey('PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'),
      isCode('invalid_key'),
    )
  })
})

describe('keys', () => {
  test('the key id is SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]', () => {
    const expected = sha256(utf8(`${keyName}\n`), new Uint8Array([1]), key.publicKey).slice(0, 4)
    assert.equal(toHex(noteKeyId(keyName, key.publicKey)), toHex(expected))
    assert.ok(verifierKey.startsWith(`${keyName}+${toHex(expected)}+`))
  })

  test('key names have no white space and no plus', () => {
    for (const name of ['a', 'example.com/log', 'naïve', 'did:web:node.example'])
      assert.ok(isValidKeyName(name), name)
    for (const name of ['', 'a b', 'a+b', 'a\tb', 'a\u00a0b', 'a\u2003b', 'a\u0085b', 'a\u0001b', '\ud800']) {
      assert.ok(!isValidKeyName(name), JSON.stringify(name))
      assert.throws(() => noteVerifierKey(name, key.publicKey), isCode('invalid_key'))
      assert.throws(() => signCheckpoint(checkpoint, name, key.secretKey), isCode('invalid_key'))
    }
  })
})

describe('checkpoints', () => {
  test('the body is origin, size, root and extensions, each on its line', () => {
    const body = formatCheckpoint({ ...checkpoint, extensions: ['Timestamp: 1700000000'] })
    assert.equal(body, `ledger.example/log\n1234\n${toBase64(checkpoint.root)}\nTimestamp: 1700000000\n`)
    const note = signCheckpoint(checkpoint, keyName, key.secretKey)
    assert.ok(note.startsWith(`${formatCheckpoint(checkpoint)}\n— ${keyName} `))
    assert.ok(note.endsWith('\n'))
  })

  test('sign and open round-trip, with and without extensions', () => {
    for (const extensions of [[], ['one'], ['a b c', '— not a signature']]) {
      const original = { ...checkpoint, extensions }
      const opened = openCheckpoint(
        signCheckpoint(original, keyName, key.secretKey),
        verifierKey,
        checkpoint.origin,
      )
      assert.deepEqual(opened, original)
    }
    const empty = { ...checkpoint, size: 0, root: sha256(new Uint8Array(0)) }
    assert.deepEqual(openCheckpoint(signCheckpoint(empty, keyName, key.secretKey), verifierKey), empty)
  })

  test('round-trips any checkpoint', () => {
    const line = fc
      .string({ unit: 'grapheme', minLength: 1, maxLength: 40 })
      .filter((text) => [...text].every((character) => character.charCodeAt(0) >= 0x20))
    fc.assert(
      fc.property(
        line,
        fc.nat({ max: Number.MAX_SAFE_INTEGER }),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.array(line, { maxLength: 3 }),
        (origin, size, root, extensions) => {
          const original = { origin, size, root, extensions }
          assert.deepEqual(
            openCheckpoint(signCheckpoint(original, keyName, key.secretKey), verifierKey),
            original,
          )
        },
      ),
      { numRuns: 100 },
    )
  })

  test('a changed size, root or origin, or a changed signature, is refused', () => {
    const note = signCheckpoint(checkpoint, keyName, key.secretKey)
    const rootText = toBase64(checkpoint.root)
    const otherRoot = toBase64(sha256(utf8('other')))
    assert.throws(() => openCheckpoint(note.replace('\n1234\n', '\n1235\n'), verifierKey), signatureInvalid)
    assert.throws(() => openCheckpoint(note.replace(rootText, otherRoot), verifierKey), signatureInvalid)
    assert.throws(
      () => openCheckpoint(note.replace('ledger.example/log\n', 'ledger.example/lag\n'), verifierKey),
      signatureInvalid,
    )
    const signatureText = note.slice(note.lastIndexOf(' ') + 1, -1)
    const signature = fromBase64(signatureText)
    signature[10]! ^= 1
    assert.throws(
      () => openCheckpoint(note.replace(signatureText, toBase64(signature)), verifierKey),
      signatureInvalid,
    )
  })

  test('every single-character change of a note is refused', () => {
    const note = signCheckpoint({ ...checkpoint, extensions: ['x'] }, keyName, key.secretKey)
    for (let i = 0; i < note.length; i++) {
      for (const replacement of ['A', '0', '\n', ' ', '+', 'é']) {
        if (note[i] === replacement) continue
        const changed = note.slice(0, i) + replacement + note.slice(i + 1)
        assert.throws(() => openCheckpoint(changed, verifierKey), VmError, `position ${i} → ${replacement}`)
      }
    }
  })

  test('the origin must be the expected one', () => {
    const note = signCheckpoint(checkpoint, keyName, key.secretKey)
    assert.throws(
      () => openCheckpoint(note, verifierKey, 'other.example/log'),
      isCode('checkpoint_origin_mismatch'),
    )
  })

  test('another key, or the same name with another key, finds no signature', () => {
    const note = signCheckpoint(checkpoint, keyName, key.secretKey)
    const other = generateSigningKey()
    assert.throws(() => openCheckpoint(note, noteVerifierKey(keyName, other.publicKey)), signatureInvalid)
    assert.throws(
      () => openCheckpoint(note, noteVerifierKey('someone.else', key.publicKey)),
      signatureInvalid,
    )
    assert.throws(() => openCheckpoint(note, noteVerifierKey('someone.else', key.publicKey)), /no signature/)
  })

  test('unknown signatures are ignored; a bad signature by the key is fatal', () => {
    const note = signCheckpoint(checkpoint, keyName, key.secretKey)
    const witness = generateSigningKey()
    const witnessLine = signCheckpoint(checkpoint, 'witness.example', witness.secretKey).split('\n\n')[1]!
    const ourLine = note.split('\n\n')[1]!
    const body = formatCheckpoint(checkpoint)
    assert.deepEqual(openCheckpoint(`${body}\n${witnessLine}${ourLine}`, verifierKey), checkpoint)
    assert.deepEqual(openCheckpoint(`${body}\n${ourLine}${witnessLine}`, verifierKey), checkpoint)
    // Our key id with a signature that is not ours.
    const forged = ourLine.replace(/ (\S+)\n$/, (_, encoded: string) => {
      const blob = fromBase64(encoded)
      blob[20]! ^= 0x80
      return ` ${toBase64(blob)}\n`
    })
    assert.throws(() => openCheckpoint(`${body}\n${forged}`, verifierKey), signatureInvalid)
    assert.throws(() => openCheckpoint(`${body}\n${forged}${ourLine}`, verifierKey), signatureInvalid)
    // A signature blob that is too short for Ed25519 but carries our key id.
    const short = `— ${keyName} ${toBase64(new Uint8Array([...noteKeyId(keyName, key.publicKey), 1, 2, 3]))}\n`
    assert.throws(() => openCheckpoint(`${body}\n${short}`, verifierKey), signatureInvalid)
  })

  test('malformed notes are refused', () => {
    const note = signCheckpoint(checkpoint, keyName, key.secretKey)
    const ourLine = note.split('\n\n')[1]!
    const body = formatCheckpoint(checkpoint)
    const cases: Record<string, string> = {
      'trailing garbage': `${note}garbage`,
      'trailing newline': `${note}\n`,
      'no final newline': note.slice(0, -1),
      'no blank line': `${body}${ourLine}`,
      'no signatures': `${body}\n`,
      'plain hyphen': `${body}\n${ourLine.replace('—', '-')}`,
      'no space after the dash': `${body}\n${ourLine.replace('— ', '—')}`,
      'name with a plus': `${body}\n${ourLine.replace(keyName, 'a+b')}`,
      'no signature after the name': `${body}\n— ${keyName}\n`,
      'empty signature': `${body}\n— ${keyName} \n`,
      'signature not base64': `${body}\n— ${keyName} !!!!\n`,
      'signature only a key id': `${body}\n— ${keyName} ${toBase64(noteKeyId(keyName, key.publicKey))}\n`,
      'carriage return': note.replace('\n1234\n', '\r\n1234\n'),
      'tab in the origin': note.replace('ledger.example', 'ledger\texample'),
      'too many signatures': `${body}\n${ourLine.repeat(101)}`,
      'lone surrogate': note.replace('ledger.example', 'ledger\ud800example'),
    }
    for (const [name, text] of Object.entries(cases)) {
      assert.throws(() => openCheckpoint(text, verifierKey), malformed, name)
    }
    assert.ok(openCheckpoint(`${body}\n${ourLine.repeat(100)}`, verifierKey))
    assert.throws(() => openCheckpoint('a'.repeat(noteBytesMax + 1), verifierKey), malformed)
    assert.throws(
      () => openCheckpoint(`${'é'.repeat(noteBytesMax / 2)}\n\n${ourLine}`, verifierKey),
      malformed,
    )
    assert.throws(() => openCheckpoint(new Uint8Array([0xff, 0x0a, 0x0a]), verifierKey), malformed)
  })

  test('signed bodies that are not checkpoints are refused as malformed', () => {
    const root = toBase64(checkpoint.root)
    const bodies = {
      'two lines': `origin\n1\n`,
      'empty origin': `\n1\n${root}\n`,
      'leading zero': `origin\n01\n${root}\n`,
      'plus sign': `origin\n+1\n${root}\n`,
      negative: `origin\n-1\n${root}\n`,
      exponent: `origin\n1e3\n${root}\n`,
      'leading space': `origin\n 1\n${root}\n`,
      'beyond safe integers': `origin\n9007199254740992\n${root}\n`,
      'beyond 64 bits': `origin\n18446744073709551616\n${root}\n`,
      'short root': `origin\n1\n${toBase64(checkpoint.root.slice(1))}\n`,
      'root without padding': `origin\n1\n${root.replace(/=+$/, '')}\n`,
      'url-safe root': `origin\n1\n${toBase64(new Uint8Array(32).fill(0xfb)).replaceAll('+', '-')}\n`,
      'root non-zero trailing bits': `origin\n1\n${root.slice(0, 42)}B=\n`,
      'empty extension line': `origin\n1\n${root}\n\nextension\n`,
    }
    for (const [name, body] of Object.entries(bodies)) {
      assert.throws(() => parseCheckpoint(body), malformed, name)
      // Signed by the right key, it is still not a checkpoint.
      let note: string
      try {
        note = signNote(body, keyName, key.secretKey)
      } catch {
        continue
      }
      assert.throws(() => openCheckpoint(note, verifierKey), malformed, name)
    }
  })

  test('a checkpoint that cannot be written is refused before signing', () => {
    const bad: Checkpoint[] = [
      { ...checkpoint, origin: '' },
      { ...checkpoint, origin: 'two\nlines' },
      { ...checkpoint, origin: 'bell\u0007' },
      { ...checkpoint, size: -1 },
      { ...checkpoint, size: 1.5 },
      { ...checkpoint, size: 2 ** 53 },
      { ...checkpoint, root: new Uint8Array(31) },
      { ...checkpoint, extensions: [''] },
      { ...checkpoint, extensions: ['a\nb'] },
    ]
    for (const value of bad) assert.throws(() => signCheckpoint(value, keyName, key.secretKey), malformed)
  })

  test('note text must end with a newline and be free of control characters', () => {
    const isNoteMalformed = isCode('note_malformed')
    assert.throws(() => signNote('', keyName, key.secretKey), isNoteMalformed)
    assert.throws(() => signNote('no newline', keyName, key.secretKey), isNoteMalformed)
    assert.throws(() => signNote('nul\u0000\n', keyName, key.secretKey), isNoteMalformed)
    assert.equal(openNote(signNote('text\n', keyName, key.secretKey), verifierKey), 'text\n')
  })
})
