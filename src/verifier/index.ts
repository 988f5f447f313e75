/**
 * The verification client (seed 000 BCVC, DESIGN §5) as a library: no `node:` imports, global fetch
 * only, so it runs in a web page as well as in `vmoney verify`.
 */
export { checkFull, type FullResult } from './full.js'
export { LogServer, type ServerRole } from './http.js'
export { type NodeSnapshot, type ReaderKeys, readNodeSnapshot } from './reader.js'
export type { Check, Finding, FindingKind } from './report.js'
export { blockHolding, firstDifferingLeaf, type LogView, prefixRoot } from './split-view.js'
export {
  emptyState,
  type FullState,
  formatState,
  type NodeState,
  parseState,
  stateVersion,
  type VerifiedCheckpoint,
  type VerifierState,
} from './state.js'
export { type VerifyOptions, type VerifyReport, verify } from './verify.js'
