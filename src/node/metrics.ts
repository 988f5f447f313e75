import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { Decision } from './pool/pool.js'
import type { PublisherMetrics } from './publisher.js'

export interface FunnelMetrics {
  readonly leading: Gauge
  readonly failures: Counter
  observeBlock(decisions: readonly Decision[], leaves: number, durationMs: number): void
}

/** One Prometheus registry per node, so several nodes can live in one process (tests). */
export function createMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'vmoney_process_' })
  const decided = new Counter({
    name: 'vmoney_transactions_decided_total',
    help: 'Pool transactions decided by the funnel, by result',
    labelNames: ['result'],
    registers: [registry],
  })
  const blocks = new Counter({ name: 'vmoney_blocks_total', help: 'Blocks written', registers: [registry] })
  const leaves = new Counter({
    name: 'vmoney_leaves_total',
    help: 'Leaves appended to the log',
    registers: [registry],
  })
  const stepSeconds = new Histogram({
    name: 'vmoney_funnel_step_seconds',
    help: 'Time for the funnel to apply and commit one batch',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  })
  const failures = new Counter({
    name: 'vmoney_funnel_failures_total',
    help: 'Funnel steps that failed and were retried',
    registers: [registry],
  })
  const httpRequests = new Counter({
    name: 'vmoney_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  })
  const poolPending = new Gauge({
    name: 'vmoney_pool_pending',
    help: 'Transactions waiting in the pool',
    registers: [registry],
  })
  const changeSubscribers = new Gauge({
    name: 'vmoney_change_subscribers',
    help: 'Open changefeed streams (SSE and WebSocket) on this process',
    registers: [registry],
  })
  const webhookDeliveries = new Counter({
    name: 'vmoney_webhook_deliveries_total',
    help: 'Webhook deliveries by result: delivered, failed (retried), dead_lettered',
    labelNames: ['result'],
    registers: [registry],
  })
  const publisher: PublisherMetrics = {
    published: new Counter({
      name: 'vmoney_blocks_published_total',
      help: 'Blocks a block browser acknowledged, by browser',
      labelNames: ['browser'],
      registers: [registry],
    }),
    failures: new Counter({
      name: 'vmoney_publish_failures_total',
      help: 'Failed pushes to a block browser, by browser and code (block_rewrite: the browser holds another history)',
      labelNames: ['browser', 'code'],
      registers: [registry],
    }),
    lag: new Gauge({
      name: 'vmoney_publish_lag_blocks',
      help: 'Blocks committed but not yet acknowledged by the browser',
      labelNames: ['browser'],
      registers: [registry],
    }),
  }
  const funnel: FunnelMetrics = {
    failures,
    leading: new Gauge({
      name: 'vmoney_funnel_leading',
      help: "1 while this process's funnel holds the lease and sequences; 0 while it stands by",
      registers: [registry],
    }),
    observeBlock(decisions, leafCount, durationMs) {
      let accepted = 0
      for (const decision of decisions) if (decision.accepted) accepted++
      decided.inc({ result: 'accepted' }, accepted)
      decided.inc({ result: 'rejected' }, decisions.length - accepted)
      if (leafCount > 0) blocks.inc()
      leaves.inc(leafCount)
      stepSeconds.observe(durationMs / 1000)
    },
  }
  return { registry, funnel, publisher, httpRequests, poolPending, changeSubscribers, webhookDeliveries }
}

export type Metrics = ReturnType<typeof createMetrics>
