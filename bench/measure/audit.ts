// Decision-log throughput: a signed log written with the sidecar's DecisionLog class (hash chain,
// a JWS checkpoint every 1,000 lines, synchronous file writes), then checked with verifyLog, the
// function behind `gatehouse audit verify`. Reports lines per second for both.
// auditSiemVerify (issue 15): many sidecars' chains merged into one file, as a SIEM export, checked
// by the real CLI (`gatehouse audit verify`) as a child process: lines/s, CPU and peak RSS.
//   node bench/measure/audit.ts [--quick] [--lines N] [--chains N] [--runs N] [--src] [--keep]
// prints one JSON result. The CLI is src/ compiled by tsc, as shipped (bench/lib/build.ts), or with
// --src `node src/cli.ts` through type stripping (about 20 MB more RSS); --keep leaves the merged
// file and bundle.pem in the temp dir, for profiling the CLI on them.
import { mkdtempSync, rmSync, statSync, readdirSync, openSync, readSync, writeSync, closeSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomUUID } from 'node:crypto'
import { DecisionLog, type DecisionFields } from '../../src/audit/record.ts'
import { verifyLog } from '../../src/audit/verify.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { generateKey } from '../../src/x509/keys.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { pemToDers } from '../../src/x509/certificate.ts'
import { withCa } from './ca.ts'
import type { CaMaterial } from '../../src/ca/ca-directory.ts'
import { BENCH_PATH } from '../lib/policy-gen.ts'
import { IDS, TRUST_DOMAIN } from '../lib/pki.ts'
import { start, peakRssMb, coreBusySeconds } from '../lib/proc.ts'
import { buildGatehouse } from '../lib/build.ts'

export interface AuditRate { lines: number, files: number, bytes: number, writeLinesPerSecond: number, /** --decision-log-fsync: a disk flush per line, in a directory on the project's disk (not tmpfs) */ fsyncWriteLinesPerSecond: number, fsyncLines: number, verifyLinesPerSecond: number, verifyMbPerSecond: number, checkpoints: number, ok: boolean }

const benchFields = (callee: string): DecisionFields => ({
  requestId: randomUUID(), decision: 'allow', mode: 'enforce', enforced: true, rule: 'orders-read', reason: 'allow-rule',
  caller: IDS.client, callee, method: 'GET', path: BENCH_PATH, rawPath: BENCH_PATH, status: 200, durationMs: 0.42,
  policyRevision: 'sha256:0123456789abcdef', peerCertSerial: '5f2c0e6a9d1b7c3e'
})

/** Writes `lines` decision lines with the sidecar's writer (a checkpoint every 1,000), letting the async checkpoint work land between batches. */
export async function writeChain (log: DecisionLog, fields: DecisionFields | ((i: number) => DecisionFields), lines: number): Promise<void> {
  for (let i = 0; i < lines; i++) {
    log.write(typeof fields === 'function' ? fields(i) : fields)
    if (i % 1000 === 999) await new Promise(resolve => setImmediate(resolve))
  }
  await log.close()
}

export async function auditRates (lines: number): Promise<AuditRate> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-audit-'))
  try {
    return await withCa('ec-p256', async (ca) => {
      const key = generateKey('ec-p256')
      const svid = new Issuer(ca).issue({ id: SpiffeId.parse(IDS.server), publicKey: key.publicKey })
      const signer = { spiffeId: svid.id, chainDers: pemToDers(svid.chainPem), privateKey: key.privateKey }
      const file = join(dir, 'decisions.log')
      const log = new DecisionLog({ stdout: false, file, checkpointEvery: 1000, checkpointIntervalMs: 60_000, signer: () => signer })
      const w0 = performance.now()
      await writeChain(log, benchFields(IDS.server), lines)
      const writeSeconds = (performance.now() - w0) / 1000
      // The cost of --decision-log-fsync: the same writer with a flush per line, on the disk the
      // checkout is on (/tmp may be tmpfs, where fsync costs nothing and proves nothing).
      const fsyncDir = mkdtempSync(join(process.cwd(), '.gh-bench-fsync-'))
      const fsyncLines = Math.max(200, Math.min(5000, Math.floor(lines / 20)))
      let fsyncSeconds: number
      try {
        const f0 = performance.now()
        await writeChain(new DecisionLog({ stdout: false, file: join(fsyncDir, 'decisions.log'), fsync: true, checkpointEvery: 1000, checkpointIntervalMs: 60_000, signer: () => signer }), benchFields(IDS.server), fsyncLines)
        fsyncSeconds = (performance.now() - f0) / 1000
      } finally { rmSync(fsyncDir, { recursive: true, force: true }) }
      // The file rotates at 100 MB (the sidecar's default): verify the whole chain, every file.
      const files = readdirSync(dir).filter(f => f.startsWith('decisions.log')).map(f => join(dir, f))
      const bytes = files.reduce((a, f) => a + statSync(f).size, 0)
      const v0 = performance.now()
      const report = await verifyLog(files, ca.bundle)
      const verifySeconds = (performance.now() - v0) / 1000
      return { lines: report.lines, files: files.length, bytes, writeLinesPerSecond: lines / writeSeconds, fsyncWriteLinesPerSecond: fsyncLines / fsyncSeconds, fsyncLines, verifyLinesPerSecond: report.lines / verifySeconds, verifyMbPerSecond: bytes / 1048576 / verifySeconds, checkpoints: report.checkpoints, ok: report.ok }
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * `chains` sidecars' decision logs in `dir` (each its own SVID, from `ca`, and its own chain, written
 * by DecisionLog with a checkpoint every 1,000 lines), `lines` in all, merged line by line in a
 * seeded random order into `out`, as a SIEM export would be; the per-sidecar files are removed.
 * Returns the bytes written.
 */
export async function writeMergedChains (ca: CaMaterial, dir: string, o: { lines: number, chains: number, idOf: (c: number) => string, fields: (callee: string) => DecisionFields | ((i: number) => DecisionFields), out: string }): Promise<number> {
  const issuer = new Issuer(ca)
  const files: string[] = []
  for (let c = 0; c < o.chains; c++) {
    const key = generateKey('ec-p256')
    const svid = issuer.issue({ id: SpiffeId.parse(o.idOf(c)), publicKey: key.publicKey, ttlMs: 24 * 3_600_000 })
    const signer = { spiffeId: svid.id, chainDers: pemToDers(svid.chainPem), privateKey: key.privateKey }
    const file = join(dir, `sidecar-${c}.log`)
    const per = Math.floor(o.lines / o.chains) + (c < o.lines % o.chains ? 1 : 0)
    await writeChain(new DecisionLog({ stdout: false, file, checkpointEvery: 1000, checkpointIntervalMs: 3_600_000, signer: () => signer }), o.fields(svid.id.toString()), per)
    files.push(file)
  }
  const bytes = interleave(files, o.out)
  for (const f of files) rmSync(f)
  return bytes
}

/** One run of the CLI over the merged file. */
export interface AuditVerifyRun {
  /** Wall time from spawn to exit (Node's start included), CPU (user + system), peak RSS (VmHWM). */
  seconds: number, cpuSeconds: number, linesPerSecond: number, peakRssMb: number
  /** What the rest of the machine used meanwhile, in % of one core (all cores' busy time minus the CLI's). */
  otherCorePct: number
  exitCode: number | null, verdict: string
}

export interface AuditSiemResult {
  lines: number, chains: number, records: number, bytes: number, generateSeconds: number
  /** Which CLI ran: the tsc build (as shipped) or src/cli.ts. */
  cli: string, rssFrom: string
  runs: AuditVerifyRun[]
  /** Median over the runs, and the highest peak RSS of any run. */
  linesPerSecond: number, peakRssMb: number, verifiedChains: number, verdict: string
}

export interface AuditSiemSpec { lines: number, chains: number, runs: number, cli: string, keep?: boolean }

/**
 * Issue 15: `gatehouse audit verify` over `lines` decision lines from `chains` sidecars (one SVID
 * each, a chain per sidecar, written by DecisionLog with a checkpoint every 1,000 lines), merged line
 * by line in a random (seeded) order into one file, then the CLI run on it `runs` times as a child
 * pinned to core 1. Peak RSS is GNU time's maxrss (from wait4), or VmHWM polled every 20 ms where
 * /usr/bin/time is missing.
 */
export async function auditSiemVerify (spec: AuditSiemSpec, log: (s: string) => void = () => {}): Promise<AuditSiemResult> {
  const { lines, chains } = spec
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-audit-siem-'))
  try {
    return await withCa('ec-p256', async (ca) => {
      const g0 = performance.now()
      const merged = join(dir, 'siem-export.log')
      const bytes = await writeMergedChains(ca, dir, { lines, chains, idOf: c => `spiffe://${TRUST_DOMAIN}/ns/siem/sa/svc-${c}`, fields: callee => benchFields(callee), out: merged })
      const generateSeconds = (performance.now() - g0) / 1000
      const bundle = join(dir, 'bundle.pem')
      writeFileSync(bundle, ca.bundlePem)
      log(` ${(bytes / 1048576).toFixed(0)} MB written in ${generateSeconds.toFixed(0)} s${spec.keep === true ? ` (kept: ${merged})` : ''};`)

      const runs: AuditVerifyRun[] = []
      let report: VerifyOutput | undefined
      for (let i = 0; i < spec.runs; i++) {
        const r = await runCli(spec.cli, bundle, merged)
        runs.push(r.run)
        report = r.report
        log(` ${(r.run.linesPerSecond / 1000).toFixed(0)}k lines/s, ${r.run.peakRssMb.toFixed(0)} MB;`)
      }
      const sorted = runs.map(r => r.linesPerSecond).sort((a, b) => a - b)
      return {
        lines, chains, records: report?.input.records ?? 0, bytes, generateSeconds,
        cli: spec.cli.endsWith('.ts') ? 'src/cli.ts (type stripping)' : 'src/ compiled by tsc, as shipped',
        rssFrom: GNU_TIME ? 'GNU time maxrss' : 'VmHWM polled every 20 ms',
        runs,
        linesPerSecond: sorted[Math.floor((sorted.length - 1) / 2)] ?? NaN,
        peakRssMb: Math.max(...runs.map(r => r.peakRssMb)),
        verifiedChains: report?.chains.filter(c => c.verdict === 'VERIFIED').length ?? 0,
        verdict: report?.verdict ?? 'none'
      }
    })
  } finally {
    if (spec.keep !== true) rmSync(dir, { recursive: true, force: true })
  }
}

const GNU_TIME = existsSync('/usr/bin/time')
interface VerifyOutput { verdict: string, input: { records: number }, chains: Array<{ verdict: string }> }

/** One CLI run as a child pinned to core 1: wall and CPU seconds, peak RSS, the rest of the machine's load, and what it printed. */
export interface TimedCli { seconds: number, cpuSeconds: number, peakRssMb: number, otherCorePct: number, exitCode: number | null, stdout: string, stderrTail: string[] }

export async function timedCli (cli: string, args: string[], name: string): Promise<TimedCli> {
  const argv = [process.execPath, cli, ...args]
  const [cmd, ...rest] = GNU_TIME ? ['/usr/bin/time', '-f', 'GH_TIME %e %U %S %M', ...argv] : argv
  const busy0 = coreBusySeconds().reduce((a, b) => a + b, 0)
  const t0 = performance.now()
  const p = start(cmd!, rest, { core: 1, stdout: 'pipe', name })
  let out = ''
  p.child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d })
  let polled = 0
  const poll = GNU_TIME ? undefined : setInterval(() => { try { polled = Math.max(polled, peakRssMb(p.pid)) } catch { /* exited */ } }, 20)
  await p.exited
  clearInterval(poll)
  const wall = (performance.now() - t0) / 1000
  const busy = coreBusySeconds().reduce((a, b) => a + b, 0) - busy0
  const timed = p.stderrTail.map(l => /^GH_TIME (\S+) (\S+) (\S+) (\d+)$/.exec(l)).find(m => m !== null)
  if (GNU_TIME && timed == null) throw new Error(`${name}: no GNU time line\n${p.stderrTail.join('\n')}`)
  const seconds = timed != null ? Number(timed[1]) : wall
  const cpuSeconds = timed != null ? Number(timed[2]) + Number(timed[3]) : NaN
  return {
    seconds,
    cpuSeconds,
    peakRssMb: timed != null ? Number(timed[4]) / 1024 : polled,
    otherCorePct: Math.max(0, (busy - (Number.isNaN(cpuSeconds) ? 0 : cpuSeconds)) / wall * 100),
    exitCode: p.child.exitCode,
    stdout: out,
    stderrTail: p.stderrTail
  }
}

async function runCli (cli: string, bundle: string, file: string): Promise<{ run: AuditVerifyRun, report: VerifyOutput }> {
  const t = await timedCli(cli, ['audit', 'verify', '--trust-bundle', bundle, '--trust-domain', TRUST_DOMAIN, '--format', 'json', file], 'audit verify')
  let report: VerifyOutput
  try { report = JSON.parse(t.stdout) as VerifyOutput } catch { throw new Error(`audit verify printed no JSON report (exit ${String(t.exitCode)}):\n${t.stderrTail.join('\n')}`) }
  return {
    report,
    run: { seconds: t.seconds, cpuSeconds: t.cpuSeconds, linesPerSecond: report.input.records / t.seconds, peakRssMb: t.peakRssMb, otherCorePct: t.otherCorePct, exitCode: t.exitCode, verdict: report.verdict }
  }
}

/** Merges whole lines of `files` into `out` in a random order (seeded), each file's lines staying in their order. Returns the bytes written. */
export function interleave (files: string[], out: string): number {
  const CHUNK = 1 << 20
  const srcs = files.map(f => ({ fd: openSync(f, 'r'), lines: [] as Buffer[], at: 0, rest: Buffer.alloc(0), done: false }))
  const fill = (s: typeof srcs[number]): boolean => {
    while (s.at === s.lines.length && !s.done) {
      const buf = Buffer.allocUnsafe(CHUNK)
      const n = readSync(s.fd, buf, 0, CHUNK, null)
      if (n === 0) { s.done = true; closeSync(s.fd); break }
      const data = Buffer.concat([s.rest, buf.subarray(0, n)])
      s.lines = []
      s.at = 0
      let from = 0
      for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, from)) { s.lines.push(data.subarray(from, i + 1)); from = i + 1 }
      s.rest = data.subarray(from)
    }
    return s.at < s.lines.length
  }
  const fd = openSync(out, 'w')
  let pending: Buffer[] = []
  let size = 0
  let bytes = 0
  let seed = 0x9e3779b9
  const live = srcs.filter(fill)
  while (live.length > 0) {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5
    const i = (seed >>> 0) % live.length
    const s = live[i]!
    const line = s.lines[s.at++]!
    pending.push(line)
    size += line.length
    if (size >= CHUNK) { bytes += writeSync(fd, Buffer.concat(pending)); pending = []; size = 0 }
    if (!fill(s)) live.splice(i, 1)
  }
  bytes += writeSync(fd, Buffer.concat(pending))
  closeSync(fd)
  return bytes
}

/**
 * A log-tool bench run on its own (`node bench/measure/X.ts [--quick] [--lines N] [--chains N] [--runs N] [--src]`):
 * the spec from the flags, the CLI built by tsc (or src/cli.ts with --src), one JSON result on stdout.
 */
export async function runLogBench<R> (measure: (spec: { lines: number, chains: number, runs: number, cli: string }, log: (s: string) => void) => Promise<R>): Promise<void> {
  const arg = (name: string): number | undefined => { const i = process.argv.indexOf(name); return i === -1 ? undefined : Number(process.argv[i + 1]) }
  const quick = process.argv.includes('--quick')
  const root = fileURLToPath(new URL('../../', import.meta.url))
  const buildDir = mkdtempSync(join(tmpdir(), 'gh-bench-build-'))
  try {
    const cli = process.argv.includes('--src') ? join(root, 'src/cli.ts') : buildGatehouse(root, buildDir).cli
    const r = await measure({ lines: arg('--lines') ?? (quick ? 200_000 : 5_000_000), chains: arg('--chains') ?? 50, runs: arg('--runs') ?? (quick ? 1 : 3), cli }, (s) => { process.stderr.write(s) })
    process.stderr.write('\n')
    process.stdout.write(`${JSON.stringify(r)}\n`)
  } finally {
    rmSync(buildDir, { recursive: true, force: true })
  }
}

if (import.meta.main) await runLogBench(async (spec, log) => await auditSiemVerify({ ...spec, keep: process.argv.includes('--keep') }, log))
