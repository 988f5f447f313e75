import type { Kysely } from 'kysely'
import { fromBase64Url } from '../../protocol/encoding.js'
import type { DeviceKey, Role } from '../../protocol/transaction.js'
import type { Database } from '../storage/schema.js'

export interface KnownKey {
  readonly keyId: string
  readonly personId: string
  readonly publicKey: Uint8Array
  readonly revoked: boolean
  /** `use: 'read'`: the key signs reads, never a transaction. */
  readonly readOnly: boolean
  readonly roles: readonly Role[]
}

/** Cached keys the api holds; past it the cache starts over. */
export const cachedKeysMax = 100_000

/**
 * The api's view of registered keys. The funnel decides with its own state; this cache only lets the api
 * refuse unknown and revoked keys early. It is cleared whenever a commit changes keys or persons.
 */
export class KeyDirectory {
  readonly #db: Kysely<Database>
  #cache = new Map<string, KnownKey | null>()

  constructor(db: Kysely<Database>) {
    this.#db = db
  }

  invalidate(): void {
    this.#cache = new Map()
  }

  async lookup(keyIds: readonly string[]): Promise<Map<string, KnownKey | null>> {
    const out = new Map<string, KnownKey | null>()
    const missing: string[] = []
    for (const keyId of new Set(keyIds)) {
      const cached = this.#cache.get(keyId)
      if (cached === undefined) missing.push(keyId)
      else out.set(keyId, cached)
    }
    if (missing.length > 0) {
      if (this.#cache.size + missing.length > cachedKeysMax) this.#cache = new Map()
      const chunk = 500
      for (let start = 0; start < missing.length; start += chunk) {
        const ids = missing.slice(start, start + chunk)
        const rows = await this.#db
          .selectFrom('ledger_keys')
          .innerJoin('ledger_persons', 'ledger_persons.id', 'ledger_keys.person_id')
          .select(['key_id', 'person_id', 'device_key', 'revoked', 'roles'])
          .where('key_id', 'in', ids)
          .execute()
        const found = new Map(rows.map((row) => [row.key_id, row]))
        for (const keyId of ids) {
          const row = found.get(keyId)
          const deviceKey = row === undefined ? undefined : (JSON.parse(row.device_key) as DeviceKey)
          const key: KnownKey | null =
            row === undefined || deviceKey === undefined
              ? null
              : {
                  keyId,
                  personId: row.person_id,
                  publicKey: fromBase64Url(deviceKey.signing.x),
                  revoked: row.revoked === 1,
                  readOnly: deviceKey.use === 'read',
                  roles: JSON.parse(row.roles) as Role[],
                }
          this.#cache.set(keyId, key)
          out.set(keyId, key)
        }
      }
    }
    return out
  }

  async get(keyId: string): Promise<KnownKey | null> {
    return (await this.lookup([keyId])).get(keyId) ?? null
  }
}
