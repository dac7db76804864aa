// What `gatehouse audit verify` reports (verify.ts): the kinds of break it names, the verdict each
// maps to, the exit status of each verdict, and the report's shape (`--report FILE.json`).

import type { ChainLink } from './record.ts'

export type BreakKind = 'not-json' | 'no-genesis' | 'signer-unknown' | 'unsigned' | 'removed' | 'chain-cut' | 'inserted-or-reordered' | 'edited' | 'forged-checkpoint' | 'untrusted-signer' | 'callee-not-signer' | 'missing-checkpoint'
export type Verdict = 'VERIFIED' | 'TAMPERED' | 'REORDERED' | 'GAP' | 'UNTRUSTED' | 'NOT VERIFIED' | 'UNSIGNED TAIL' | 'NO GENESIS'

/** Exit status of `audit verify` per verdict (2 is a usage error). */
export const VERDICT_EXIT: Readonly<Record<Verdict, number>> = { VERIFIED: 0, TAMPERED: 1, 'UNSIGNED TAIL': 3, GAP: 4, REORDERED: 5, UNTRUSTED: 6, 'NOT VERIFIED': 7, 'NO GENESIS': 8 }
/** Most severe first: the verdict of many chains is the worst of theirs. */
export const SEVERITY: readonly Verdict[] = ['TAMPERED', 'REORDERED', 'GAP', 'UNTRUSTED', 'NOT VERIFIED', 'UNSIGNED TAIL', 'NO GENESIS', 'VERIFIED']
/** The verdict each kind of break gives. */
export const BREAK_VERDICT: Readonly<Record<BreakKind, Verdict>> = {
  'not-json': 'TAMPERED',
  edited: 'TAMPERED',
  'forged-checkpoint': 'TAMPERED',
  'callee-not-signer': 'TAMPERED',
  'missing-checkpoint': 'TAMPERED',
  'inserted-or-reordered': 'REORDERED',
  removed: 'GAP',
  'chain-cut': 'GAP',
  'untrusted-signer': 'UNTRUSTED',
  'no-genesis': 'NOT VERIFIED',
  'signer-unknown': 'NOT VERIFIED',
  unsigned: 'NOT VERIFIED'
}

export interface Break { kind: BreakKind, seq: number | null, file: string, line: number, message: string }

export interface ChainReport {
  /** The chain id (format 2), or "format-1#N" for the Nth chain of an old log. */
  chain: string
  format: 1 | 2
  verdict: Verdict
  writer: string | null
  lines: number
  firstSeq: number
  lastSeq: number
  /** The chain's genesis line is present. */
  genesis: boolean
  /** Lines from this seq on are proven (1 with the genesis, else the first line present); null if none is. */
  verifiedFrom: number | null
  /** Every line up to and including this seq is covered by a valid checkpoint. */
  verifiedThrough: number
  checkpoints: number
  signers: string[]
  firstCheckpoint?: { seq: number, signer: string, at: string }
  lastCheckpoint?: { seq: number, at: string }
  /** What the genesis says this chain follows (a restart), and which chain here follows this one. */
  follows: ChainLink | null
  followedBy?: string
  /** The unsigned tail was vouched for by the chain that followed it (same writer). */
  tailVouchedBy?: string
  files: string[]
  break?: Break
  unverifiedTail?: { fromSeq: number, toSeq: number, lines: number }
  /** In an export: its segments of this chain, the lines the query matched, and how many of them a checkpoint covers. */
  exported?: { segments: number, matches: number, proven: number }
}

export interface VerifyReport {
  ok: boolean
  verdict: Verdict
  exitCode: number
  // The chain the verdict comes from (the only one, for one sidecar's log), flattened for scripts.
  lines: number
  writer: string | null
  checkpoints: number
  signers: string[]
  verifiedThrough: number
  break?: Break
  unverifiedTail?: { fromSeq: number, toSeq: number, lines: number }
  chains: ChainReport[]
  input: { files: string[], records: number, skipped: number, damaged: number }
  /** An export (`audit query --export`): its header (not signed) and the matching lines proven. */
  export?: { createdAt: string, query: unknown, sources: unknown, matches: number, proven: number }
}
