import type { Kysely } from 'kysely'
import type { Logger } from 'pino'
import { type AlarmWrite, insertAlarm } from './browser-store.js'
import type { BrowserMetrics } from './metrics.js'
import type { BrowserSchema } from './schema.js'

export interface AlarmSink {
  readonly db: Kysely<BrowserSchema>
  readonly metrics: BrowserMetrics
  readonly log: Logger
}

/**
 * Stores evidence that a followed node misbehaves, counts it and logs it loudly. The same evidence seen
 * again (a follower polling a node that keeps serving it) is one alarm, not one per sighting.
 */
export async function raiseAlarm(sink: AlarmSink, alarm: AlarmWrite, message: string): Promise<void> {
  if (!(await insertAlarm(sink.db, alarm))) return
  sink.metrics.alarms.inc({ node: alarm.node, kind: alarm.kind })
  sink.log.error(
    {
      node: alarm.node,
      kind: alarm.kind,
      height: alarm.height,
      held: alarm.held_hash,
      offered: alarm.offered_hash,
    },
    `ALARM: ${message}`,
  )
}
