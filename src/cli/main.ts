import { existsSync } from 'node:fs'
import { Command, CommanderError, Option } from 'commander'
import { registerBrowserCommand } from './browser-command.js'
import { registerClientCommands } from './client-commands.js'
import { registerNodeCommands } from './node-commands.js'
import { exitCodeOf, exitCodes } from './output.js'
import { registerVerifyCommand } from './verify-command.js'
import { registerWebhookCommands } from './webhook-commands.js'

// Settings may also come from a .env file in the working directory (the environment wins).
if (existsSync('.env')) process.loadEnvFile('.env')

const program = new Command('vmoney')
  .description('VisibleMoney: a verifiable ledger node, its tools and its client')
  .showHelpAfterError()
  .exitOverride()
  .configureOutput({ writeErr: (text) => process.stderr.write(text) })
  .addHelpText(
    'after',
    `
Exit codes: 0 ok; 1 a check failed (rejected transaction, audit or proof failure); 2 bad usage or input;
3 server (or database server) unreachable; 4 the server refused the request; 5 local or unexpected failure.`,
  )
registerNodeCommands(program)
registerBrowserCommand(program)
registerClientCommands(program)
registerVerifyCommand(program)
registerWebhookCommands(program)
program.addOption(new Option('--no-color').hideHelp())

try {
  await program.parseAsync(process.argv)
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode =
      error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.exitCode === 0
        ? 0
        : exitCodes.usage
  } else {
    const { code, message } = exitCodeOf(error)
    process.stderr.write(`vmoney: ${message}\n`)
    process.exitCode = code
  }
}
