import { readFileSync, writeFileSync } from 'node:fs'
import { createHash, createPrivateKey } from 'node:crypto'
import { execFile } from 'node:child_process'
import { gatehouse, cliPath, type CliResult } from './run-cli.ts'
import { join } from 'node:path'
import { startMesh, type Mesh, type SvidFiles, type Tap } from './mesh.ts'
import { tempDir } from './files.ts'
import { pemToDers } from '../../src/x509/certificate.ts'
import type { Signer } from '../../src/audit/checkpoint.ts'
import type { DecisionFields } from '../../src/audit/record.ts'
import { verifyLog, VERDICT_EXIT, BREAK_VERDICT, type BreakKind, type VerifyReport } from '../../src/audit/verify.ts'
import { TrustBundle } from '../../src/spiffe/bundle.ts'
import { canonicalize } from '../../src/audit/line-hash.ts'

// Decision-log files as an auditor (or an attacker) sees them: raw lines, read and rewritten, and
// `gatehouse audit verify` run on them through the real CLI.

export const GENESIS_PREV = '0'.repeat(64)

export const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex')

/** The policy the decision-log tests run under: `caller` may GET /ok/**, everything else is denied. */
export const okReadsPolicy = (caller: string): string => `version: 1
rules:
  - name: ok-reads
    from: ["${caller}"]
    methods: [GET]
    paths: ["/ok/**"]
`

/** The non-empty lines of a decision-log file, exactly as written (no newline). */
export function readLines (file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').filter(l => l !== '')
}

export function writeLines (file: string, lines: readonly string[]): void {
  writeFileSync(file, lines.map(l => `${l}\n`).join(''))
}

export interface LogRecord { seq: number, prev: string, msg: string, [k: string]: any }

export const parse = (line: string): LogRecord => JSON.parse(line) as LogRecord

/**
 * What an attacker with write access (but no signing key) can do after changing lines: renumber
 * every line from 1 and recompute every prev, so the hash chain itself is consistent again.
 * Lines are written back in canonical form, as the sidecar writes them.
 */
export function rechain (lines: readonly string[]): string[] {
  const out: string[] = []
  let prev = GENESIS_PREV
  for (const [i, line] of lines.entries()) {
    const rec = parse(line)
    if (typeof rec.seq !== 'number' || typeof rec.prev !== 'string') throw new Error(`line ${i + 1} has no seq/prev to rewrite`)
    const next = canonicalize({ ...rec, seq: i + 1, prev })
    out.push(next)
    prev = sha256(next)
  }
  return out
}

/** A checkpoint signer made from SVID files (any CA, any SPIFFE ID: for forgeries too). */
export function signerFrom (svid: SvidFiles, spiffeId: string): Signer {
  return { spiffeId, chainDers: pemToDers(svid.chainPem), privateKey: createPrivateKey(svid.keyPem) }
}

/**
 * One allowed GET, as the sidecar of `callee` logs it (a real sidecar always names itself as the
 * callee), for logs written with DecisionLog directly.
 */
export function decisionFields (requestId: string, caller: string, callee: string | null, overrides: Partial<DecisionFields> = {}): DecisionFields {
  return { requestId, decision: 'allow', mode: 'enforce', enforced: true, rule: 'r', reason: 'allow-rule', caller, callee, method: 'GET', path: '/', rawPath: '/', status: 200, durationMs: 0, policyRevision: null, peerCertSerial: null, ...overrides }
}

export interface VerifyRun { status: number | null, report: VerifyReport, cli: CliResult }

/** `gatehouse audit verify FILES --trust-bundle B --format json`, parsed. */
export function verifyJson (files: string[], bundle: string): VerifyRun {
  const cli = gatehouse(['audit', 'verify', ...files, '--trust-bundle', bundle, '--format', 'json'])
  let report: VerifyReport
  try { report = JSON.parse(cli.stdout) as VerifyReport } catch {
    throw new Error(`audit verify printed no JSON report (exit ${String(cli.status)}): ${cli.stdout}${cli.stderr}`)
  }
  return { status: cli.status, report, cli }
}

/** `gatehouse audit verify FILES --trust-bundle B` (text report). */
export function verifyText (files: string[], bundle: string): CliResult {
  return gatehouse(['audit', 'verify', ...files, '--trust-bundle', bundle])
}

/** Stops a sidecar now (final checkpoint, files closed); the mesh teardown's own stop becomes a no-op. */
export async function stopOnce (sidecar: { stop: (drainMs?: number) => Promise<void> }, drainMs = 1000): Promise<void> {
  const stop = sidecar.stop
  sidecar.stop = async () => {}
  await stop(drainMs)
}

/**
 * The same check in-process (verifyLog is what the CLI runs), with the CLI's exit status: for the
 * many variants of one kind of tampering, where spawning a CLI for each would only cost time.
 */
export async function verifyInProcess (files: string[], bundleFile: string, opts: { requireGenesis?: boolean } = {}): Promise<{ status: number, report: VerifyReport }> {
  const bundle = TrustBundle.fromPem(readFileSync(bundleFile, 'utf8'), { source: bundleFile })
  const report = await verifyLog(files, bundle, opts)
  return { status: report.exitCode, report }
}

/**
 * `gatehouse <args>` from source without blocking the event loop, so several can run at once.
 * `signal` kills the child when aborted (e.g. from t.teardown); `timeoutMs` kills it after that long.
 */
export async function gatehouseAsync (args: string[], opts: { env?: NodeJS.ProcessEnv, timeoutMs?: number, signal?: AbortSignal } = {}): Promise<CliResult> {
  return await new Promise<CliResult>((resolve) => {
    execFile(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 << 20, env: { ...process.env, ...opts.env }, ...(opts.signal === undefined ? {} : { signal: opts.signal }) }, (err, stdout, stderr) => {
      const status = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
      resolve({ status, stdout, stderr })
    })
  })
}

/** The assertions expectBreak needs (the subtest's t; kept structural so any tap Test fits). */
interface Asserts {
  equal: (found: unknown, wanted: unknown, message: string) => boolean
  match: (found: unknown, pattern: unknown, message: string) => boolean
}

/** A real sidecar's decision log to tamper with, and the means to check what verify says of a tampered copy. */
export interface TamperBench {
  dir: string
  mesh: Mesh
  bundle: string
  logFile: string
  /** Requests answered 200 and 403. */
  allowed: number
  denied: number
  /** The log's lines as written, parsed, and the indexes of its checkpoint lines. */
  raw: string[]
  recs: LogRecord[]
  checkpointIdx: number[]
  /** Writes `lines` to a fresh file in `dir` and returns its path. */
  tampered: (lines: readonly string[]) => string
  seqAt: (i: number) => number
  /** Index of a decision line (matching `pred`) that is followed by a decision line, away from the edges. */
  decisionIdx: (pred: (r: LogRecord) => boolean, from?: number) => number
  /**
   * Verifies a tampered copy and checks the break. The first case of each kind goes through the CLI
   * (exit status and --format json); further variants call verifyLog, which is what the CLI runs.
   */
  expectBreak: (t: Asserts, what: string, lines: readonly string[], kind: string, seq: number | null, message?: RegExp, via?: 'cli' | 'lib') => Promise<void>
}

/**
 * A mesh whose server sidecar writes its decision log with a checkpoint every `every` decisions;
 * `requests` requests from `client` (every third to a denied path), then the sidecar stopped, so the
 * log ends with the checkpoint written on stop. Enough lines that a rewritten chain runs past what
 * the genesis cadence allows without a checkpoint.
 */
export async function tamperBench (t: Tap, opts: { client: string, requests: number, every: number }): Promise<TamperBench> {
  const dir = tempDir(t)
  const logFile = join(dir, 'decisions.log')
  const mesh = await startMesh(t, {
    policy: okReadsPolicy(opts.client),
    sidecar: { decisionLogFile: logFile, decisionLogStdout: false, checkpointEvery: opts.every }
  })
  const bundle = mesh.pki.bundleFile
  let allowed = 0
  let denied = 0
  for (let i = 0; i < opts.requests; i++) {
    const res = await mesh.request(i % 3 === 0 ? `/secret/${i}` : `/ok/${i}`, { headers: { 'x-request-id': `req-${i}` } })
    if (res.status === 200) allowed++
    if (res.status === 403) denied++
  }
  await stopOnce(mesh.sidecar)

  const raw = readLines(logFile)
  const recs = raw.map(parse)
  const checkpointIdx = recs.flatMap((r, i) => r.msg === 'checkpoint' ? [i] : [])
  let n = 0
  const tampered = (lines: readonly string[]): string => {
    const file = join(dir, `tampered-${++n}.log`)
    writeLines(file, lines)
    return file
  }
  const seqAt = (i: number): number => recs[i]!.seq
  const decisionIdx = (pred: (r: LogRecord) => boolean, from = 10): number => {
    const i = recs.findIndex((r, j) => j >= from && r.msg === 'decision' && pred(r) && (recs[j + 1]?.msg === 'decision' || recs[j + 1]?.msg === 'admit'))
    if (i === -1) throw new Error('no suitable decision line in the log')
    return i
  }
  const expectBreak = async (t: Asserts, what: string, lines: readonly string[], kind: string, seq: number | null, message?: RegExp, via: 'cli' | 'lib' = 'lib'): Promise<void> => {
    const file = tampered(lines)
    const { status, report } = via === 'cli' ? verifyJson([file], bundle) : await verifyInProcess([file], bundle)
    const exit = VERDICT_EXIT[BREAK_VERDICT[kind as BreakKind]]
    t.equal(status, exit, `${what}: exit ${exit} (${via})`)
    t.equal(report.ok, false, `${what}: not ok`)
    t.match(report.break, { kind, seq, file }, `${what}: reported as ${kind} at seq ${String(seq)}`)
    if (message !== undefined) t.match(report.break?.message, message, `${what}: message ${String(message)}`)
    if (seq !== null && kind !== 'inserted-or-reordered') {
      const lineNo = lines.findIndex(l => parse(l).seq === seq) + 1
      t.equal(report.break?.line, lineNo, `${what}: points at line ${lineNo} of the file`)
    }
  }
  return { dir, mesh, bundle, logFile, allowed, denied, raw, recs, checkpointIdx, tampered, seqAt, decisionIdx, expectBreak }
}
