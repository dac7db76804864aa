// Issue 19: the least-privilege tools on a big log. `policy suggest`, `policy replay`, `audit query
// --unused-rules` and `audit graph` (the built CLI, each a child pinned to core 1) over `lines`
// decision lines from `chains` sidecars, merged in a random (seeded) order into one file as a SIEM
// export would: lines/s and peak RSS per tool (goal: over 200k lines/s and under 150 MB for 5M lines).
// The traffic is varied as a mesh's is (several callers per service, REST paths with numeric and
// UUID ids, gRPC methods, an opaque TCP port, denials, a caller in audit mode), so the tools' state
// grows as it would on real logs. Each tool runs with --unverified: its own pass over the log, the
// figure to compare; by default they first verify the log, which is `audit verify`'s figure
// (bench/measure/audit.ts), added to theirs.
//   node bench/measure/evidence.ts [--quick] [--lines N] [--chains N] [--runs N] [--src]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { DecisionFields } from '../../src/audit/record.ts'
import { withCa } from './ca.ts'
import { TRUST_DOMAIN } from '../lib/pki.ts'
import { runLogBench, timedCli, writeMergedChains } from './audit.ts'

export interface ToolRun { seconds: number, cpuSeconds: number, linesPerSecond: number, peakRssMb: number, otherCorePct: number, exitCode: number | null }
export interface ToolResult { tool: string, args: string, runs: ToolRun[], /** median */ linesPerSecond: number, /** highest of any run */ peakRssMb: number }
export interface EvidenceResult { lines: number, chains: number, bytes: number, generateSeconds: number, cli: string, tools: ToolResult[] }
export interface EvidenceSpec { lines: number, chains: number, runs: number, cli: string }

const id = (ns: string, sa: string): string => `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${sa}`
const CALLERS = ['orders/api', 'billing/worker', 'billing/cron', 'web/frontend', 'ops/backup', 'lab/intruder'].map(x => { const [ns, sa] = x.split('/'); return id(ns!, sa!) })
const UUID = (k: number): string => `${(0x3f2b8c1e + k).toString(16).padStart(8, '0')}-9a4d-4e7b-8c2f-${(k * 7919).toString(16).padStart(12, '0')}`

/** The k-th request one service's sidecar logged: a deterministic mix, ids varying with k. */
function traffic (callee: string, k: number): DecisionFields {
  const base = { requestId: `r-${k}`, callee, mode: 'enforce' as const, enforced: true, status: 200, durationMs: 0.4, policyRevision: 'sha256:0123456789abcdef', peerCertSerial: '5f2c0e6a9d1b7c3e' }
  const allow = (caller: string, method: string, path: string, rule: string): DecisionFields => ({ ...base, decision: 'allow', rule, reason: 'allow-rule', caller, method, path, rawPath: path })
  switch (k % 16) {
    case 0: case 1: case 2: case 3: case 4: return allow(CALLERS[0]!, 'GET', `/v1/orders/${1000 + (k * 37) % 100_000}`, 'orders-read')
    case 5: case 6: return allow(CALLERS[0]!, 'POST', '/v1/orders', 'orders-write')
    case 7: return allow(CALLERS[0]!, 'GET', `/v1/orders/${UUID(k % 5000)}/items`, 'orders-read')
    case 8: case 9: case 10: return allow(CALLERS[1]!, 'POST', `/billing.v1.Ledger/${k % 3 === 0 ? 'Get' : 'Record'}`, 'billing-grpc')
    case 11: return allow(CALLERS[3]!, 'GET', `/v1/catalog/items/${k % 20_000}`, 'web-catalog')
    case 12: return { ...base, decision: 'allow', rule: 'backup-db', reason: 'allow-rule', caller: CALLERS[4]!, kind: 'tcp', port: 5432, method: 'TCP', path: null, rawPath: '' } as DecisionFields
    case 13: return { ...base, decision: 'deny', mode: 'audit', enforced: false, rule: null, reason: 'no-matching-rule', caller: CALLERS[2]!, method: 'GET', path: `/v1/reports/${(0x5f3a9c00 + k).toString(16).padStart(24, '0')}`, rawPath: '' }
    case 14: return { ...base, decision: 'deny', rule: 'no-admin', reason: 'deny-rule', status: 403, caller: CALLERS[5]!, method: 'GET', path: '/admin/users', rawPath: '/admin/users' }
    default: return { ...base, decision: 'deny', rule: null, reason: 'no-matching-rule', status: 403, caller: CALLERS[3]!, method: 'DELETE', path: `/v1/orders/${k % 1000}`, rawPath: '' }
  }
}

/** The policy replayed (and checked for unused rules): the rules the traffic names, one never used, one shadowed. */
const POLICY = `version: 1
rules:
  - { name: orders-read, from: ["${CALLERS[0]!}"], methods: [GET], paths: ["/v1/orders/*", "/v1/orders/*/items"] }
  - { name: orders-write, from: ["${CALLERS[0]!}"], methods: [POST], paths: ["/v1/orders"] }
  - { name: billing-grpc, from: ["${CALLERS[1]!}"], paths: ["/billing.v1.Ledger/*"] }
  - { name: web-catalog, from: ["${CALLERS[3]!}"], methods: [GET], paths: ["/v1/catalog/**"] }
  - { name: backup-db, from: ["${CALLERS[4]!}"], ports: [5432] }
  - { name: legacy-never, from: ["${id('legacy', 'old')}"] }
  - { name: admin-shadowed, from: ["${CALLERS[0]!}"], paths: ["/admin/**"] }
deny:
  - { name: no-admin, from: ["spiffe://${TRUST_DOMAIN}/**"], paths: ["/admin/**"] }
`

export async function evidenceTools (spec: EvidenceSpec, log: (s: string) => void = () => {}): Promise<EvidenceResult> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-evidence-'))
  try {
    return await withCa('ec-p256', async (ca) => {
      const g0 = performance.now()
      const callee0 = id('svc-0', 'svc-0')
      const merged = join(dir, 'mesh-export.log')
      const bytes = await writeMergedChains(ca, dir, { lines: spec.lines, chains: spec.chains, idOf: c => id(`svc-${c}`, `svc-${c}`), fields: callee => (k: number) => traffic(callee, k), out: merged })
      const policy = join(dir, 'policy.yaml')
      writeFileSync(policy, POLICY)
      const generateSeconds = (performance.now() - g0) / 1000
      log(` ${(bytes / 1048576).toFixed(0)} MB written in ${generateSeconds.toFixed(0)} s;`)
      // Each tool reads every line; suggest and replay keep those of one service (as they are used).
      const tools: Array<[string, string[]]> = [
        ['policy suggest', ['policy', 'suggest', merged, '--callee', callee0, '--unverified']],
        ['policy replay', ['policy', 'replay', policy, merged, '--callee', callee0, '--unverified', '-o', 'json']],
        ['audit query --unused-rules', ['audit', 'query', merged, '--unused-rules', policy, '-o', 'json']],
        ['audit graph', ['audit', 'graph', merged, '-o', 'json']]
      ]
      const results: ToolResult[] = []
      for (const [tool, args] of tools) {
        const runs: ToolRun[] = []
        for (let i = 0; i < spec.runs; i++) {
          const t = await timedCli(spec.cli, args, tool)
          // replay exits 3 when something flips allow→deny (the audit-mode caller does): a result, not a failure.
          if (t.exitCode !== 0 && !(tool === 'policy replay' && t.exitCode === 3)) throw new Error(`${tool} exited ${String(t.exitCode)}: ${t.stderrTail.join('\n')}`)
          runs.push({ seconds: t.seconds, cpuSeconds: t.cpuSeconds, linesPerSecond: spec.lines / t.seconds, peakRssMb: t.peakRssMb, otherCorePct: t.otherCorePct, exitCode: t.exitCode })
        }
        const sorted = runs.map(r => r.linesPerSecond).sort((a, b) => a - b)
        const r = { tool, args: args.map(a => a.startsWith(dir) ? a.slice(dir.length + 1) : a).join(' '), runs, linesPerSecond: sorted[Math.floor((sorted.length - 1) / 2)]!, peakRssMb: Math.max(...runs.map(x => x.peakRssMb)) }
        log(` ${tool} ${(r.linesPerSecond / 1000).toFixed(0)}k lines/s ${r.peakRssMb.toFixed(0)} MB;`)
        results.push(r)
      }
      return { lines: spec.lines, chains: spec.chains, bytes, generateSeconds, cli: spec.cli.endsWith('.ts') ? 'src/cli.ts (type stripping)' : 'src/ compiled by tsc, as shipped', tools: results }
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (import.meta.main) await runLogBench(evidenceTools)
