import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import type { Dialect } from '../storage/connect.js'
import { createTestDatabase, testDialect } from './databases.js'

export const vmoneyBin = fileURLToPath(new URL('../../../bin/vmoney.js', import.meta.url))
export const nodeStartTimeoutMs = 30_000

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() =>
        typeof address === 'object' && address !== null
          ? resolve(address.port)
          : reject(new Error('no port')),
      )
    })
  })
}

/** Starts `vmoney <args>` and resolves with the first URL printed after `label:`. */
export async function spawnServer(
  args: readonly string[],
  label: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, [vmoneyBin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  })
  let output = ''
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  const pattern = new RegExp(`${label}:\\s+(http:\\/\\/\\S+)`)
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      // A process that did not start in time is not left running behind the caller.
      child.kill('SIGKILL')
      reject(new Error(`vmoney ${args[0]} did not start: ${output}`))
    }, nodeStartTimeoutMs)
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      const match = pattern.exec(output)
      if (match !== null) {
        clearTimeout(timer)
        resolve(match[1]!)
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`vmoney ${args[0]} exited with ${code}: ${output}`))
    })
  })
  return { child, url, output: () => output }
}

/**
 * Runs `vmoney node` or `vmoney start` as a real process, on the node database of `dataDir` (in the
 * suite's dialect unless another is named), and resolves once it prints its node URL.
 */
export async function spawnNode(
  command: 'node' | 'start',
  dataDir: string,
  port: number,
  env: NodeJS.ProcessEnv = {},
  dialect: Dialect = testDialect,
): Promise<{ child: ChildProcess; url: string; browserUrl: () => string | null; output: () => string }> {
  const args = [command, '--data-dir', dataDir, '--port', String(port), '--log-level', 'warn']
  args.push('--database-url', await createTestDatabase(dataDir, dialect))
  // `start` runs a block browser too: on a free port, so that several nodes can run side by side.
  if (command === 'start') args.push('--browser-port', String(await freePort()))
  const started = await spawnServer(args, 'node', env)
  const browserUrl = () => /block browser:\s+(http:\/\/\S+)/.exec(started.output())?.[1] ?? null
  return { ...started, browserUrl }
}

/** Runs `vmoney browser` as a real process and resolves once it prints its URL. */
export async function spawnBrowser(args: readonly string[]): Promise<{ child: ChildProcess; url: string }> {
  return spawnServer(['browser', '--log-level', 'error', ...args], 'browser')
}

export async function runCli(
  args: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [vmoneyBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const code = await new Promise<number>((resolve) =>
    child.once('exit', (exitCode) => resolve(exitCode ?? 1)),
  )
  return { code, stdout, stderr }
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}
