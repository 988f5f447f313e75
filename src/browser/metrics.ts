import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client'

/** The browser's own Prometheus registry, so a node and a browser can share a process (tests, `start`). */
export function createBrowserMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'vmoney_browser_' })
  return {
    registry,
    blocksAccepted: new Counter({
      name: 'vmoney_browser_blocks_accepted_total',
      help: 'Blocks accepted, per followed node',
      labelNames: ['node'],
      registers: [registry],
    }),
    refusals: new Counter({
      name: 'vmoney_browser_refusals_total',
      help: 'Blocks refused, by problem code',
      labelNames: ['code'],
      registers: [registry],
    }),
    alarms: new Gauge({
      name: 'vmoney_browser_alarms',
      help: 'Alarms stored (a node signed two different blocks at one height, or serves another key)',
      labelNames: ['node', 'kind'],
      registers: [registry],
    }),
    logSize: new Gauge({
      name: 'vmoney_browser_log_size',
      help: 'Leaves held, per followed node',
      labelNames: ['node'],
      registers: [registry],
    }),
    subscribers: new Gauge({
      name: 'vmoney_browser_event_subscribers',
      help: 'Open live-update (SSE) streams',
      registers: [registry],
    }),
    httpRequests: new Counter({
      name: 'vmoney_browser_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'],
      registers: [registry],
    }),
  }
}

export type BrowserMetrics = ReturnType<typeof createBrowserMetrics>
