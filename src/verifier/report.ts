/** What a verification run found: one line per check, then every finding named precisely. */

export interface Check {
  readonly name: string
  readonly ok: boolean
  readonly detail: string
}

export type FindingKind =
  | 'key_changed'
  | 'checkpoint'
  | 'rollback'
  | 'split_view'
  | 'block'
  | 'leaf'
  | 'signature'
  | 'account'
  | 'entry'
  | 'balance'
  | 'unchecked'

export interface Finding {
  readonly kind: FindingKind
  /** A failure fails the run; a note says what could not be checked, and why. */
  readonly severity: 'failure' | 'note'
  readonly message: string
  readonly leafIndex?: number
  /** Heights of the blocks holding the leaf on each side, where known. */
  readonly block?: { readonly node?: number; readonly browser?: number }
  /** base64 leaf hashes on each side (split view). */
  readonly leafHash?: { readonly node?: string; readonly browser?: string }
  readonly account?: string
  readonly field?: string
  readonly nodeSays?: string
  readonly logSays?: string
}

/** Findings kept per run; past it they are counted, not listed. */
export const findingsMax = 1_000

/** A list of checks and findings that a run fills in. */
export class Findings {
  readonly checks: Check[] = []
  readonly findings: Finding[] = []
  /** Failures past findingsMax: not listed, still failures. */
  failuresDropped = 0

  check(name: string, ok: boolean, detail: string): boolean {
    this.checks.push({ name, ok, detail })
    return ok
  }

  add(finding: Finding): void {
    if (this.findings.length < findingsMax) this.findings.push(finding)
    else if (finding.severity === 'failure') this.failuresDropped++
  }

  get ok(): boolean {
    return (
      this.failuresDropped === 0 &&
      this.checks.every((check) => check.ok) &&
      this.findings.every((finding) => finding.severity !== 'failure')
    )
  }
}
