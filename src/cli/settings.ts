import type { Command } from 'commander'
import { loadConfig, type NodeConfig, type SettingName, settings } from '../node/config.js'

/** Commander's attribute for a flag: --browser-port → browserPort, --follow → follow. */
function attributeOf(flag: string): string {
  return flag.replace(/-([a-z])/g, (_match, letter: string) => letter.toUpperCase())
}

/** Repeated list flags add up: --follow a=k1 --follow b=k2 is the list a=k1,b=k2. */
function collect(value: string, previous: string | undefined): string {
  return previous === undefined ? value : `${previous},${value}`
}

const listSettings: ReadonlySet<SettingName> = new Set(['browserNodes', 'publishTo', 'auditorKeys'])

/** Adds a flag for each setting (the README's table lists them with their environment variables). */
export function withSettings(command: Command, names: readonly SettingName[]): Command {
  for (const name of names) {
    const setting = settings[name]
    // Secrets have no flag: a command line is visible to every user of the machine.
    if (setting.flag === null) continue
    const help = `${setting.help} (env ${setting.env}, default ${setting.default || 'see help'})`
    if (listSettings.has(name)) command.option(`--${setting.flag} <value>`, help, collect)
    else command.option(`--${setting.flag} <value>`, help)
  }
  return command
}

/** The settings from the flags given, then the environment, then the defaults; validated once. */
export function configFrom(options: Record<string, string | undefined>): NodeConfig {
  const flags: Partial<Record<SettingName, string>> = {}
  for (const name of Object.keys(settings) as SettingName[]) {
    const flag = settings[name].flag
    const value = flag === null ? undefined : options[attributeOf(flag)]
    if (value !== undefined) flags[name] = value
  }
  return loadConfig(flags)
}
