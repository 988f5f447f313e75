import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { type BlockSummary, recentBlocks } from './browser-store.js'
import type { BrowserContext } from './context.js'
import type { FollowedNodeInfo } from './followed-nodes.js'

/** Blocks listed per node; live ones are prepended and the oldest dropped past this. */
export const pageBlocksMax = 50

const entities: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => entities[c]!)
}

function row(block: BlockSummary): string {
  const cells = [block.height, block.time, block.leafCount, block.logSize, block.logRoot]
  return `<tr>${cells.map((cell) => `<td>${escapeHtml(String(cell))}</td>`).join('')}</tr>`
}

function nodeSection(node: FollowedNodeInfo, prefix: string, blocks: readonly BlockSummary[]): string {
  const id = escapeHtml(node.id)
  return `<section>
<h2>Node <code>${id}</code></h2>
<p>Pulls from <code>${escapeHtml(node.url)}</code> ·
<a href="${prefix}/v1/log/checkpoint">checkpoint</a> · <a href="${prefix}/v1/blocks">head</a> ·
<a href="${prefix}/v1/node">verifier key</a></p>
<table><thead><tr><th>height</th><th>time</th><th>leaves</th><th>log size</th><th>log root</th></tr></thead>
<tbody data-node="${id}">${blocks.map(row).join('\n')}</tbody></table>
</section>`
}

const style = `body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.2rem .6rem;border-bottom:1px solid #ddd}
td:last-child{font-family:monospace;font-size:12px}code{font-size:12px}tr.new{background:#efe}`

// Prepends each live block to its node's table and keeps the newest ones only.
const script = `const max = ${pageBlocksMax}
const events = new EventSource('/v1/events')
events.addEventListener('block', (message) => {
  const block = JSON.parse(message.data)
  const body = document.querySelector('tbody[data-node="' + CSS.escape(block.node) + '"]')
  if (body === null) return
  const tr = document.createElement('tr')
  tr.className = 'new'
  for (const value of [block.height, block.time, block.leafCount, block.logSize, block.logRoot]) {
    const td = document.createElement('td')
    td.textContent = String(value)
    tr.append(td)
  }
  body.prepend(tr)
  while (body.rows.length > max) body.deleteRow(body.rows.length - 1)
})`

/** `GET /`: a small page of the newest blocks of every followed node, updated live. No build step. */
export function pageRoutes(app: FastifyInstance, context: BrowserContext): void {
  app.get('/', { schema: { hide: true } }, async (_request, reply) => {
    const sections: string[] = []
    for (const node of context.nodes.list) {
      const blocks = await recentBlocks(context.db, node.id, pageBlocksMax)
      sections.push(nodeSection(node, `/n/${encodeURIComponent(node.id)}`, blocks))
    }
    // Inline code runs only with this response's nonce: nothing injected into the page can execute.
    const nonce = randomBytes(16).toString('base64')
    return reply
      .type('text/html; charset=utf-8')
      .header(
        'content-security-policy',
        `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'`,
      )
      .send(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VisibleMoney block browser</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style nonce="${nonce}">${style}</style></head>
<body><h1>VisibleMoney block browser</h1>
<p>Every block here was checked before it was stored: the node's signature, the hash chain, the leaves
against the log root. <a href="/docs">API</a> · <a href="/v1/alarms">alarms</a></p>
${sections.join('\n')}
<script nonce="${nonce}">${script}</script>
</body></html>`)
  })
}
