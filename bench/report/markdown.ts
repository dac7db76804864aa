// latest.md: the machine and the run, one table of per-target figures for HTTP/1.1 and one for gRPC,
// the ratios with their goals, rotation under load, and the micro-benches.
import type { BenchResults } from './results.ts'
import { GRPC_BODY } from '../lib/grpc.ts'
import { IDLE_CONCURRENCY } from '../load.ts'
import { IDLE_CPU_MS } from '../measure/idle.ts'

const n = (v: number | undefined | null, digits = 0): string => v === undefined || v === null || !Number.isFinite(v) ? 'n/a' : v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
const ms = (v: number | undefined): string => n(v, v !== undefined && v >= 10 ? 1 : 2)

export function renderMarkdown (r: BenchResults): string {
  const L: string[] = []
  const p = r.plan
  L.push(`# Gatehouse benchmarks (${r.mode} run)`, '')
  L.push(`${r.date}, ${r.machine.cpu}, ${r.machine.cores} cores, Linux ${r.machine.kernel}, Node ${r.machine.node}${r.machine.nginx === null ? '' : `, ${r.machine.nginx}`}. ${r.machine.pinning}. Run took ${n(r.durationSeconds)} s; load average ${n(r.machine.loadAverageAtStart, 2)} before it.`, '')
  if (r.machine.loadAverageAtStart > 1) L.push(`> **The machine was busy** (load average ${n(r.machine.loadAverageAtStart, 2)} on ${r.machine.cores} cores before the run): latency percentiles are inflated by other processes; see the "other" columns below. Ratios of CPU per request are the least affected figures.`, '')
  L.push(`Every target serves the same request (\`GET /v1/orders/12345\`, a ${p.bodyBytes}-byte answer from the same Node app) to the same load generator (undici, its own process), with the same client certificate (ECDSA P-256 SVID, TLS 1.3). Keep-alive throughput: ${p.connections} connections, closed loop, ${p.throughputSeconds} s per target. Latency: open model at ${p.rate} req/s for ${p.latencySeconds} s per target, each request timed from when it was due (coordinated-omission-safe). Handshakes: a new connection per request, ${p.handshakeConnections} at a time, no TLS session resumption, ${p.handshakeSeconds} s per target. ${p.rounds > 1 ? `Each phase is cut into ${p.rounds} rounds interleaved across the targets (order rotating), so outside load hits all targets alike; rates are medians over the rounds, percentiles are over all samples.` : 'One round per phase (quick run).'} CPU is read from /proc for the processes under test; peak RSS is VmHWM, reset before the target's first phase (it includes the Node binary's own pages: a bare \`node\` process is about 40 MB). Gatehouse: ${r.machine.gatehouse}.`, '')
  L.push('| target | keep-alive req/s | CPU s / 10k req | req/s per proxy core | p50 ms | p99 ms | p99.9 ms | core % at ' + n(p.rate) + ' req/s | new handshakes/s | peak RSS MB (anon at end) | errors |')
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  const http = r.targets.filter(t => t.protocol !== 'grpc')
  const grpc = r.targets.filter(t => t.protocol === 'grpc')
  const isGrpcName = (name: string): boolean => name.startsWith('grpc ')
  const isRedisName = (name: string): boolean => name.startsWith('redis ')
  for (const t of http) {
    const errors = t.throughput.errors + t.latency.errors + (t.handshakes?.errors ?? 0)
    const hs = t.handshakes === undefined ? 'n/a' : `${n(t.handshakes.perSecond)}${t.handshakes.kind === 'tcp' ? ' (TCP)' : ''}`
    L.push(`| ${t.name} | ${n(t.throughput.rps)} | ${n(t.throughput.cpuSecondsPer10k, 2)}${t.throughput.cpuSecondsPer10kEach.length > 1 ? ` (${t.throughput.cpuSecondsPer10kEach.map(x => n(x, 2)).join(' + ')})` : ''} | ${n(t.throughput.rpsPerProxyCore)} | ${ms(t.latency.p50)} | ${ms(t.latency.p99)} | ${ms(t.latency.p999)} | ${n(t.latency.proxyCorePctAtRate)} | ${hs} | ${n(t.peakRssMb, 1)} (${n(t.anonRssMbAtEnd, 1)}) | ${errors} |`)
  }
  for (const s of r.skipped.filter(x => !isGrpcName(x.name) && !isRedisName(x.name))) L.push(`| ${s.name} | skipped: ${s.reason} | | | | | | | | | |`)
  L.push('')
  L.push('![latency percentiles by target](latency.svg)', '')
  L.push('Chart: `latency.svg`, p50 (blue), p99 (orange) and p99.9 (red) per target, milliseconds on a log scale.', '')
  idleSection(r, L)
  if (grpc.length > 0 || r.skipped.some(x => isGrpcName(x.name))) {
    L.push('### gRPC unary calls', '')
    L.push(`Each call is \`POST /gatehouse.test.Echo/Unary\` (content-type application/grpc, te: trailers, a ${GRPC_BODY.length}-byte length-prefixed protobuf message) to a grpc-js app that echoes it, over ${p.grpcConnections} HTTP/2 connections: closed loop with ${p.grpcStreams} calls in flight on each (${p.grpcConnections * p.grpcStreams} in all) for the throughput and CPU, open model at ${n(p.rate)} calls/s for the latency. "load generator" says what sent them: h2load cannot present a client certificate or open a CONNECT tunnel, so it drives only the direct row; the node:http2 generator drives every row, and the "grpc direct" pair shows what it adds itself.`, '')
    L.push(`| target | load generator | calls/s (closed loop) | CPU s / 10k calls | calls/s per proxy core | app CPU s / 10k calls | p50 ms | p99 ms | p99.9 ms | core % at ${n(p.rate)} calls/s | peak RSS MB (anon at end) | errors |`)
    L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const t of grpc) {
      const errors = t.throughput.errors + t.latency.errors
      const app = isGrpcName(t.name) && t.name.startsWith('grpc direct') ? '(is the target)' : n(t.throughput.appCpuSecondsPer10k, 2)
      L.push(`| ${t.name} | ${t.loadGenerator} | ${n(t.throughput.rps)} | ${n(t.throughput.cpuSecondsPer10k, 2)}${t.throughput.cpuSecondsPer10kEach.length > 1 ? ` (${t.throughput.cpuSecondsPer10kEach.map(x => n(x, 2)).join(' + ')})` : ''} | ${n(t.throughput.rpsPerProxyCore)} | ${app} | ${ms(t.latency.p50)} | ${ms(t.latency.p99)} | ${ms(t.latency.p999)} | ${n(t.latency.proxyCorePctAtRate)} | ${n(t.peakRssMb, 1)} (${n(t.anonRssMbAtEnd, 1)}) | ${errors} |`)
    }
    for (const s of r.skipped.filter(x => isGrpcName(x.name))) L.push(`| ${s.name} | skipped: ${s.reason} | | | | | | | | | | |`)
    L.push('', '![gRPC latency percentiles by target](latency-grpc.svg)', '')
  }
  if (r.redis.length > 0 || r.skipped.some(x => isRedisName(x.name))) {
    const q = r.plan.redis
    L.push('### Opaque TCP (redis)', '')
    L.push(`redis-benchmark (its own process, core 0) against redis-server (core 1, with the tunnels): \`-t ${q.tests.join(',')} -c ${q.clients} -P 1 -d ${q.dataBytes} -r 100000\`, closed loop, about ${n(q.seconds)} s per target for commands/s, CPU and the percentiles under load; then the same commands on one connection, one at a time (\`-c 1\`), about ${n(q.latencySeconds)} s per target, for the round trip of a command (redis-benchmark has no fixed-rate mode). ${q.rounds > 1 ? `${q.rounds} rounds interleaved across the targets; rates and CPU are medians over the rounds, percentiles over all commands.` : 'One round (quick run).'} New connections: \`-k 0\` (a new connection for every GET), ${q.connectClients} at a time, about ${n(q.connectSeconds)} s per target, for the CPU per connection (the mTLS handshake between the tunnels, and the callee's decision). redis-benchmark opens its ${q.clients} connections anew for every test, so each throughput slice also sets up ${q.clients * q.tests.length} connections: "CPU s / 10k commands" has them taken out at the measured cost per connection (with them left in: in brackets after the per-process split).`, '')
    L.push(`| target | commands/s (${q.clients} connections) | CPU s / 10k commands | commands/s per proxy core | redis CPU s / 10k | p50 ms | p99 ms | one connection: commands/s | p50 ms | p99 ms | new connections/s | CPU ms / new connection | peak RSS MB (anon at end) | errors |`)
    L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const t of r.redis) {
      const x = t.throughput
      const o = t.oneConnection
      const c = t.connections
      L.push(`| ${t.name} | ${n(x.commandsPerSecond)} | ${n(x.cpuSecondsPer10k, 2)}${x.cpuSecondsPer10kEach.length > 1 ? ` (${x.cpuSecondsPer10kEach.map(e => n(e, 2)).join(' + ')})` : ''} (${n(x.cpuSecondsPer10kWithSetup, 2)}) | ${n(x.commandsPerProxyCore)} | ${t.name === 'redis direct' ? '(is the target)' : n(x.appCpuSecondsPer10k, 2)} | ${ms(x.p50)} | ${ms(x.p99)} | ${n(o.commandsPerSecond)} | ${ms(o.p50)} | ${ms(o.p99)} | ${n(c?.perSecond)} | ${n(c?.proxyCpuMsPerConnection, 3)}${c !== undefined && c.proxyCpuMsPerConnectionEach.length > 1 ? ` (${c.proxyCpuMsPerConnectionEach.map(e => n(e, 3)).join(' + ')})` : ''} | ${n(t.peakRssMb, 1)} (${n(t.anonRssMbAtEnd, 1)}) | ${x.errors + (c?.errors ?? 0)} |`)
    }
    for (const s of r.skipped.filter(x => isRedisName(x.name))) L.push(`| ${s.name} | skipped: ${s.reason} | | | | | | | | | | | | |`)
    L.push('')
    for (const t of r.redis) L.push(`- **${t.name}**: ${t.description}${t.notes.length > 0 ? ` (${t.notes.join('; ')})` : ''}. Under load: processes under test ${n(t.throughput.proxyCorePct)} % of a core, redis ${n(t.throughput.appCorePct)} %, redis-benchmark ${n(t.throughput.clientCorePct)} %, other ${n(t.throughput.otherCorePct)} %; one connection: other ${n(t.oneConnection.otherCorePct)} %; new connections: other ${n(t.connections?.otherCorePct)} %; p99 per round (one connection) ${t.oneConnection.perRoundP99.map(v => ms(v)).join(', ')} ms.`)
    L.push('')
  }
  L.push('Targets:', '')
  for (const t of r.targets) L.push(`- **${t.name}**: ${t.description}${t.notes.length > 0 ? ` (${t.notes.join('; ')})` : ''}.`)
  L.push('')
  L.push('Where the time went (CPU as a share of one core; "other" is everything else running on the machine meanwhile):', '')
  L.push('| target | keep-alive: proxy | app | load generator | other | latency run: generator send lag p99 | other | handshakes: proxy CPU ms per connection | load generator | other |')
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  const pct = (v: number | undefined): string => v === undefined ? 'n/a' : `${n(v)} %`
  for (const t of r.targets) {
    const h = t.handshakes
    L.push(`| ${t.name} | ${pct(t.throughput.proxyCorePct)} | ${t.name === 'direct' || t.name.startsWith('grpc direct') ? '(is the target)' : pct(t.throughput.appCorePct)} | ${pct(t.throughput.clientCorePct)} | ${pct(t.throughput.otherCorePct)} | ${Number.isFinite(t.latency.sendLagP99) ? `${ms(t.latency.sendLagP99)} ms` : 'n/a'} | ${pct(t.latency.otherCorePct)} | ${h === undefined ? 'n/a' : n(h.proxyCpuMsPerConnection, 3)} | ${pct(h?.clientCorePct)} | ${pct(h?.otherCorePct)} |`)
  }
  L.push('', 'A load generator near 100 % means that figure is a floor for the target (the client, not the proxy, was saturated); "req/s per proxy core" (10,000 / CPU s per 10k) does not depend on it. A send lag of more than a fraction of a millisecond, or "other" well above 0 %, means the machine was busy with something else and the latency figures are inflated by it.', '')

  L.push('## Ratios (goals of issues 8, 14 and 17; only ratios within one run count)', '')
  L.push('| what | measured | goal | |')
  L.push('|---|---:|---|---|')
  for (const x of r.ratios) {
    const v = x.value === null ? 'n/a' : x.unit === 'x' ? `${n(x.value, 2)}×` : x.unit === 'ms' ? `${n(x.value, 2)} ms` : x.unit === 'MB' ? `${n(x.value, 1)} MB` : x.unit === 'KB' ? `${n(x.value, 1)} KB` : x.unit === '%' ? `${n(x.value, 0)} %` : n(x.value)
    L.push(`| ${x.what} | ${v} | ${x.goal} | ${x.pass === null ? '' : x.pass ? 'met' : '**missed**'}${x.noisy ? ' (noisy: taken on a busy machine)' : ''} |`)
  }
  L.push('', 'The "per proxy core" rows compare CPU time per request (or per new connection), which outside load distorts least (though on a busy machine, as marked, CPU per request itself rises by up to half); the req/s and handshakes/s rows also depend on the app and the load generator (a new mTLS connection costs the client about as much as the server, so the handshake rate of a fast server is the load generator\'s).', '')

  L.push('## Certificate rotation under load', '')
  if ('skipped' in r.rotation) L.push(`Skipped: ${r.rotation.skipped}`, '')
  else {
    const x = r.rotation
    L.push(`Two-hop path, both sidecars with SVIDs from \`gatehouse ca serve\` (leaf TTL ${x.leafTtl}, renewed at half-life), ${n(x.rate)} req/s open model for ${n(x.coldStart.seconds)} + ${n(x.seconds)} s: **${n(x.failed)} failed of ${n(x.requests)} requests**, ${x.rotations.a} rotations on the outbound sidecar and ${x.rotations.b} on the inbound one (${x.renewalFailures} renewal failures). The first ${n(x.coldStart.seconds)} s (64 new connections through two cold sidecars; failures counted above) had p99 ${ms(x.coldStart.p99)} ms, max ${ms(x.coldStart.max)} ms. Over the ${n(x.seconds)} s after it, latency p50 ${ms(x.p50)} ms, p99 ${ms(x.p99)} ms, p99.9 ${ms(x.p999)} ms, max ${ms(x.max)} ms (generator send lag p99 ${ms(x.sendLagP99)} ms; other load ${n(x.otherCorePct)} % of a core). From \`gatehouse proxy\` start to ready, first SVID from the CA included: ${n(x.readyMs.b)} ms (inbound sidecar), ${n(x.readyMs.a)} ms (outbound sidecar).${x.failed > 0 ? ` Failures: ${JSON.stringify(x.errorKinds)}.` : ''}`, '')
  }

  L.push('## Micro-benchmarks (one process, pinned to its own core)', '')
  if ('skipped' in r.micro) L.push(`Skipped: ${r.micro.skipped}`, '')
  else {
    L.push('| policy rules | decisions/s (decide) | normalize + decide /s |', '|---:|---:|---:|')
    for (const x of r.micro.policy) L.push(`| ${n(x.rules)} | ${n(x.decisionsPerSecond)} | ${n(x.normalizeAndDecidePerSecond)} |`)
    L.push('', 'The matching rule is second to last in each policy; every tenth rule names the same caller for other paths.', '')
    L.push('| CA issuer key | leaves signed/s (build + sign) | full issuances/s (CSR check + sign + SVID self-check) |', '|---|---:|---:|')
    for (const x of r.micro.ca) L.push(`| ${x.keyType} | ${n(x.signLeafPerSecond)} | ${n(x.fullIssuancePerSecond)} |`)
    const a = r.micro.audit
    L.push('', `Decision log: ${n(a.lines)} lines (${n(a.bytes / 1048576, 1)} MB, ${a.checkpoints} signed checkpoints) in ${a.files} file(s), written by the DecisionLog class at ${n(a.writeLinesPerSecond)} lines/s (with \`--decision-log-fsync\`, a disk flush per line: ${n(a.fsyncWriteLinesPerSecond)} lines/s over ${n(a.fsyncLines)} lines); \`audit verify\` (verifyLog) checked them at **${n(a.verifyLinesPerSecond)} lines/s** (${n(a.verifyMbPerSecond, 1)} MB/s), result ${a.ok ? 'VERIFIED' : 'NOT verified'}.`, '')
  }
  L.push('## audit verify on a SIEM export (issue 15)', '')
  if ('skipped' in r.auditVerify) L.push(`Skipped: ${r.auditVerify.skipped}`, '')
  else {
    const x = r.auditVerify
    L.push(`${n(x.chains)} sidecars' decision logs (one SVID and one chain each, written by the DecisionLog class with a signed checkpoint every 1,000 lines), merged line by line in a random order into one ${n(x.bytes / 1048576)} MB file: ${n(x.records)} lines. \`gatehouse audit verify --format json\` (${x.cli}) run on it as a child process pinned to core 1, ${x.runs.length} time(s); wall time from spawn to exit, Node's start included; peak RSS from ${x.rssFrom}. Result: ${x.verdict}, ${x.verifiedChains} of ${x.chains} chains verified.`, '')
    L.push('| run | seconds | lines/s | CPU s | peak RSS MB | other load, % of a core |', '|---:|---:|---:|---:|---:|---:|')
    x.runs.forEach((run, i) => { L.push(`| ${i + 1} | ${n(run.seconds, 1)} | ${n(run.linesPerSecond)} | ${n(run.cpuSeconds, 1)} | ${n(run.peakRssMb, 1)} | ${n(run.otherCorePct)} |`) })
    L.push('')
  }
  L.push('## The least-privilege tools on a big log (issue 19)', '')
  if (r.evidence === undefined || 'skipped' in r.evidence) L.push(`Skipped: ${r.evidence?.skipped ?? 'not run'}`, '')
  else {
    const x = r.evidence
    L.push(`${n(x.chains)} sidecars' decision logs of varied traffic (six callers, REST paths with numeric and UUID ids, gRPC methods, an opaque TCP port, denials, a caller in audit mode), merged line by line in a random order into one ${n(x.bytes / 1048576)} MB file of ${n(x.lines)} lines. Each tool (${x.cli}) run on it with \`--unverified\` (its own pass; verifying first adds the \`audit verify\` pass above) as a child process pinned to core 1, ${x.tools[0]?.runs.length ?? 0} time(s); lines/s is the median run's, peak RSS the highest.`, '')
    L.push('| tool | arguments | lines/s (median) | peak RSS MB (max) | runs: seconds / other load % of a core |', '|---|---|---:|---:|---|')
    for (const t of x.tools) L.push(`| ${t.tool} | \`${t.args}\` | ${n(t.linesPerSecond)} | ${n(t.peakRssMb, 1)} | ${t.runs.map(run => `${n(run.seconds, 1)} / ${n(run.otherCorePct)}`).join(', ')} |`)
    L.push('')
  }
  return `${L.join('\n')}\n`
}

/** Idle kept-alive connections (issue 21; the method is bench/measure/idle.ts's). */
function idleSection (r: BenchResults, L: string[]): void {
  const p = r.plan
  L.push('### Idle kept-alive connections (issue 21)', '')
  if ('skipped' in r.idle) { L.push(`Skipped: ${r.idle.skipped}`, ''); return }
  L.push(`After the load phases, with each target still warm, one load worker (core 0) opens ${n(p.idleConnections)} keep-alive connections in ${p.idleSteps} steps, ${IDLE_CONCURRENCY} at a time, each making one GET and then staying idle (mTLS like above; plain HTTP for direct and for two-hop, whose client connections are sidecar A's). The resident memory of the target's processes (VmRSS, and RssAnon: private memory only; summed over both sidecars for two-hop) is read with none of ours open, then ${n(p.idleSettleMs)} ms after each step. **KB per idle connection** is the marginal cost: (RSS after the last step - after the first) / the connections opened between them, so one-off allocations and the first handshakes' garbage are left out; "incl. warm-up" is (RSS after the last step - at 0) / all connections. Garbage a Node target has not collected yet still counts. Before the first step, with none of ours open, the target's CPU (% of one core) and wakeups (voluntary context switches of all its threads) are read over ${n(IDLE_CPU_MS / 1000)} s: what it costs with no traffic at all.`, '')
  L.push('| target | idle connections | RSS MB at 0 / after each step | KB per idle connection (RSS) | KB per idle connection (anon) | incl. warm-up | no traffic: CPU % / wakeups per s | errors |')
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|')
  for (const x of r.idle.results) {
    const after = x.steps.slice(1)
    L.push(`| ${x.name} | ${after.map(s => n(s.open)).join(' / ')} | ${x.steps.map(s => n(s.rssMb, 1)).join(' / ')} | ${n(x.kbPerConnection, 1)} | ${n(x.anonKbPerConnection, 1)} | ${n(x.kbPerConnectionWithWarmup, 1)} | ${n(x.idleCpuPercent, 2)} / ${n(x.idleWakeupsPerSecond)} | ${x.errors === 0 ? '0' : `${x.errors} ${JSON.stringify(x.errorKinds)}`} |`)
  }
  for (const f of r.idle.failed) L.push(`| ${f.name} | ${f.reason} | | | | | | |`)
  L.push('')
}
