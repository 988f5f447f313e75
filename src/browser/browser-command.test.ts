import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { toBase64Url } from '../protocol/encoding.js'
import { generateSigningKey } from '../protocol/keys.js'
import { exited, vmoneyBin } from '../testing/node-process.js'

const startTimeoutMs = 30_000
let dataDir: string

before(() => {
  dataDir = mkdtempSync(join(tmpdir(), 'vmoney-browser-cli-'))
})
after(() => rmSync(dataDir, { recursive: true, force: true }))

/** `vmoney browser ...` as a real process, with no followed nodes in its environment. */
function vmoneyBrowser(...args: string[]) {
  const env = { ...process.env }
  delete env['VMONEY_BROWSER_NODES']
  const child = spawn(process.execPath, [vmoneyBin, 'browser', '--data-dir', dataDir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  return { child, output: () => output }
}

test('without a followed node it says so and exits with the usage code 2', async () => {
  const { child, output } = vmoneyBrowser('--browser-port', '0')
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  assert.equal(code, 2)
  assert.match(output(), /follows no node: pass --follow <node URL>=<base64url Ed25519 public key>/)
})

test('it prints its URL, serves, and stops cleanly on SIGTERM', async () => {
  const key = toBase64Url(generateSigningKey().publicKey)
  const { child, output } = vmoneyBrowser(
    '--browser-port',
    '0',
    '--follow',
    `http://127.0.0.1:9=${key}`,
    '--log-level',
    'silent',
  )
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no URL printed: ${output()}`)), startTimeoutMs)
    child.stdout.on('data', () => {
      const match = /browser:\s+(http:\/\/\S+)/.exec(output())
      if (match !== null) {
        clearTimeout(timer)
        resolve(match[1]!)
      }
    })
    child.once('exit', (code) => reject(new Error(`exited with ${code}: ${output()}`)))
  })
  assert.match(output(), /following: +[A-Za-z0-9_-]{43} at http:\/\/127\.0\.0\.1:9/)
  assert.deepEqual(await (await fetch(`${url}/healthz`)).json(), { status: 'ok' })
  child.kill('SIGTERM')
  await exited(child)
  assert.equal(child.exitCode, 0)
})
