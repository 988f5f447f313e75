import { passwordLengthMax } from '../protocol/password-key.js'
import { CliExit, exitCodes } from './output.js'

/** Environment variable that holds the password for scripts (a command line is visible to every user). */
export const passwordEnvironmentVariable = 'VMONEY_PASSWORD'
/** A password line longer than this (UTF-16 units) is refused before it is used. */
export const passwordTextMax = passwordLengthMax * 2

/**
 * The password, from VMONEY_PASSWORD, else typed at a prompt without echo when stdin is a terminal, else
 * the first line of stdin. `confirm` asks twice at a terminal, for a password about to be registered.
 */
export async function readPassword(prompt: string, confirm = false): Promise<string> {
  const fromEnvironment = process.env[passwordEnvironmentVariable]
  if (fromEnvironment !== undefined && fromEnvironment !== '') return fromEnvironment
  if (process.stdin.isTTY) {
    const password = await promptHidden(prompt)
    if (confirm && (await promptHidden('the same password again: ')) !== password)
      throw new CliExit(exitCodes.usage, 'the two passwords differ')
    return password
  }
  return readLine()
}

function promptHidden(prompt: string): Promise<string> {
  const input = process.stdin
  return new Promise((resolve, reject) => {
    let text = ''
    const finish = (error?: Error) => {
      input.off('data', onData)
      input.setRawMode(false)
      input.pause()
      process.stderr.write('\n')
      if (error === undefined) resolve(text)
      else reject(error)
    }
    const onData = (chunk: string) => {
      for (const character of chunk) {
        if (character === '\r' || character === '\n' || character === '\u0004') return finish()
        if (character === '\u0003') return finish(new CliExit(exitCodes.usage, 'cancelled'))
        if (character === '\u007f' || character === '\b') text = [...text].slice(0, -1).join('')
        else if (text.length >= passwordTextMax)
          return finish(
            new CliExit(exitCodes.usage, `a password has at most ${passwordLengthMax} characters`),
          )
        else text += character
      }
    }
    process.stderr.write(prompt)
    input.setRawMode(true)
    input.setEncoding('utf8')
    input.on('data', onData)
    input.resume()
  })
}

async function readLine(): Promise<string> {
  let text = ''
  for await (const chunk of process.stdin) {
    text += String(chunk)
    const end = text.indexOf('\n')
    if (end >= 0) return text.slice(0, end).replace(/\r$/, '')
    if (text.length > passwordTextMax)
      throw new CliExit(exitCodes.usage, `a password has at most ${passwordLengthMax} characters`)
  }
  if (text === '')
    throw new CliExit(
      exitCodes.usage,
      `no password: set ${passwordEnvironmentVariable}, type it, or pipe it in`,
    )
  return text.replace(/\r$/, '')
}
