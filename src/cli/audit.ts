import { loadConfig, type Schema } from '../config.ts'
import { ConfigInvalidError } from '../errors.ts'
import { checkReadable, parseWhen, readArg, readBundleArg } from './check.ts'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { verifyLog, type ChainReport, type VerifyReport } from '../audit/verify.ts'
import { queryLog, lineFilter, policyFindings, shadowedRules, type QueryFilters } from '../audit/query.ts'
import { compilePolicy } from '../policy/compile.ts'
import { Replayer } from '../policy/replay.ts'
import { parsePolicy } from '../policy/load.ts'
import { stringify } from 'yaml'
import { OUTPUT, formatData, type Runner } from './runner.ts'
import { TRUST, verifiedLogs, stream } from './evidence.ts'
import { exportEvidence } from '../audit/export.ts'

export const auditSchemas = {
  'audit verify': {
    'trust-bundle': { kind: 'string', required: true, help: 'PEM trust bundle the writers\' SVIDs chain to' },
    'trust-domain': { kind: 'string', help: 'trust domain for bundle roots without a spiffe:// SAN' },
    // --format text|json was this flag's first name: both stay accepted (text is table).
    output: { ...OUTPUT.output, values: [...OUTPUT.output.values, 'text'], aliases: ['o', 'format'], help: 'report format: table (also text) for people; json or yaml for scripts' },
    'require-genesis': { kind: 'bool', default: false, help: 'a chain whose head was rotated away (verified from a checkpoint) fails with exit 8' },
    report: { kind: 'string', help: 'also write what was checked (files and their SHA-256, chains, seq ranges, signers, checkpoint times, verdicts) to this JSON file, as evidence' }
  },
  'audit query': {
    caller: { kind: 'string', help: 'caller SPIFFE ID (glob: * within a segment, ** across)' },
    decision: { kind: 'enum', values: ['allow', 'deny'], help: 'only this decision' },
    since: { kind: 'string', help: 'ISO time, or a duration ago (e.g. 1h)' },
    until: { kind: 'string', help: 'ISO time, or a duration ago' },
    path: { kind: 'string', help: 'normalized path glob, e.g. /v1/** ' },
    rule: { kind: 'string', help: 'only lines decided by this rule (e.g. quarantine, canary)' },
    output: { ...OUTPUT.output, aliases: ['o', 'format'], help: 'output format: table for people; json (one object per line; a document with --summary) or yaml for scripts' },
    summary: { kind: 'bool', default: false, help: 'print who-calls-whom and denials instead of lines' },
    policy: { kind: 'string', help: 'with --summary: report rules never matched and allowed callers never seen' },
    'unused-rules': { kind: 'string', help: 'POLICY file: its rules that no matching request would have matched, and rules an earlier deny (or allow) always decides before them' },
    export: { kind: 'string', help: 'write the matching lines with their proofs (the lines that chain each one to a signed checkpoint) to this new FILE, for \'gatehouse audit verify FILE\'; the logs are verified first' },
    ...TRUST
  }
} as const satisfies Record<string, Schema>

function needFiles (positionals: string[], command: string): string[] {
  if (positionals.length === 0) throw new ConfigInvalidError([`gatehouse ${command} needs at least one decision-log FILE, e.g. 'gatehouse ${command} decisions.log'`])
  for (const file of positionals) checkReadable('decision-log file', file)
  return positionals
}

/** Exit codes: VERDICT_EXIT (docs/audit.md lists them): 0 verified, 1 tampered, 3 unsigned tail, 4 gap, 5 reordered, 6 untrusted signer, 7 not verified (no signer), 8 no genesis (--require-genesis). */
export const auditVerify: Runner = async (argv, io) => {
  const c = loadConfig('audit verify', auditSchemas['audit verify'], { argv })
  const files = needFiles(c.positionals, 'audit verify')
  const bundle = readBundleArg('--trust-bundle', c.trustBundle, c.trustDomain)
  const r = await verifyLog(files, bundle, { requireGenesis: c.requireGenesis })
  if (c.report !== undefined) writeFileSync(c.report, `${JSON.stringify(await evidence(r, files, c.trustBundle), null, 2)}\n`)
  io.out(c.output === 'table' || c.output === 'text' ? verifyText(r) : formatData(c.output, r))
  return r.exitCode
}

function chainLine (ch: ChainReport): string {
  const who = ch.writer ?? 'unknown writer'
  const range = `seq ${ch.firstSeq}..${ch.lastSeq} (${ch.lines} lines)`
  const cps = `${ch.checkpoints} checkpoint(s)${ch.signers.length > 0 ? ` signed by ${ch.signers.join(', ')}` : ''}`
  const restart = `${ch.follows?.chain != null ? `; follows chain ${ch.follows.chain} (ended at seq ${ch.follows.seq})` : ''}${ch.tailVouchedBy !== undefined ? `; its unsigned tail is vouched for by chain ${ch.tailVouchedBy}` : ''}`
  let what: string
  if (ch.break !== undefined) what = `${ch.verdict}: ${ch.break.message}\n    at ${ch.break.file}:${ch.break.line} (${ch.break.kind})`
  else if (ch.unverifiedTail !== undefined) what = `UNSIGNED TAIL: seq ${ch.unverifiedTail.fromSeq}..${ch.unverifiedTail.toSeq} are chained but no checkpoint covers them yet (verified through seq ${ch.verifiedThrough})`
  else if (ch.exported !== undefined) what = `VERIFIED: ${ch.exported.proven} matching line(s) in ${ch.exported.segments} segment(s), each proven by a checkpoint (first signed by ${ch.firstCheckpoint?.signer ?? '?'} at ${ch.firstCheckpoint?.at ?? '?'})`
  else if (!ch.genesis) what = `${ch.verdict === 'NO GENESIS' ? 'NO GENESIS' : 'VERIFIED'} from seq ${ch.firstSeq} (checkpoint signed by ${ch.firstCheckpoint?.signer ?? '?'} at ${ch.firstCheckpoint?.at ?? '?'}); lines before seq ${ch.firstSeq} not present`
  else what = `VERIFIED from its genesis through seq ${ch.verifiedThrough}`
  return `  chain ${ch.chain} by ${who}: ${what}\n    ${range}; ${cps}${restart}`
}

function verifyText (r: VerifyReport): string {
  const skipped = r.input.skipped > 0 ? `; ${r.input.skipped} other line(s) skipped` : ''
  const head = `${r.verdict}: ${r.input.records} decision-log lines in ${r.chains.length} chain(s) from ${r.input.files.length} file(s)${skipped}`
  const top = r.break !== undefined && r.break.kind === 'not-json' ? `\n  ${r.break.message}` : ''
  const exp = r.export === undefined ? '' : `\n  an export (made ${r.export.createdAt}, query ${JSON.stringify(r.export.query)}): ${r.export.proven} of ${r.export.matches} matching line(s) proven by a checkpoint of their writer; the header is not signed`
  return `${head}${top}${exp}\n${r.chains.map(chainLine).join('\n')}\n`
}

/** What `--report` writes: enough for an auditor to cite what was checked, and to check it again. */
async function evidence (r: VerifyReport, files: string[], bundleFile: string): Promise<Record<string, unknown>> {
  const sha = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex')
  return {
    tool: 'gatehouse audit verify',
    checkedAt: new Date().toISOString(),
    verdict: r.verdict,
    exitCode: r.exitCode,
    trustBundle: { file: resolve(bundleFile), sha256: sha(bundleFile) },
    files: files.map(f => ({ file: resolve(f), bytes: statSync(f).size, sha256: sha(f) })),
    input: r.input,
    chains: r.chains.map(ch => ({
      chain: ch.chain,
      format: ch.format,
      writer: ch.writer,
      verdict: ch.verdict,
      seq: { first: ch.firstSeq, last: ch.lastSeq, verifiedFrom: ch.verifiedFrom, verifiedThrough: ch.verifiedThrough },
      lines: ch.lines,
      genesis: ch.genesis,
      checkpoints: { count: ch.checkpoints, first: ch.firstCheckpoint ?? null, last: ch.lastCheckpoint ?? null, signers: ch.signers },
      follows: ch.follows,
      followedBy: ch.followedBy ?? null,
      tailVouchedBy: ch.tailVouchedBy ?? null,
      files: ch.files,
      finding: ch.break ?? (ch.unverifiedTail === undefined ? null : { kind: 'unsigned-tail', ...ch.unverifiedTail })
    }))
  }
}


const table = (rows: string[][]): string => {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => (r[i] ?? '').length)))
  return rows.map(r => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

/** One matching line as it is streamed: a JSON object per line (jq-friendly), or one YAML document each. */
const streamed = (output: string, d: Record<string, unknown>): string => output === 'yaml' ? `---\n${stringify(d)}` : `${JSON.stringify(d)}\n`

export const auditQuery: Runner = async (argv, io) => {
  const c = loadConfig('audit query', auditSchemas['audit query'], { argv })
  const files = needFiles(c.positionals, 'audit query')
  const filters: QueryFilters = {}
  if (c.caller !== undefined) filters.caller = c.caller
  if (c.decision !== undefined) filters.decision = c.decision as 'allow' | 'deny'
  if (c.path !== undefined) filters.path = c.path
  if (c.rule !== undefined) filters.rule = c.rule
  const since = parseWhen(c.since, 'since')
  const until = parseWhen(c.until, 'until')
  if (since !== undefined) filters.since = since
  if (until !== undefined) filters.until = until
  const tty = process.stderr.isTTY
  const started = performance.now()
  // Lines are printed as they match (json, or a fixed-width table), so a query never holds them all.
  const row = (cells: string[]): string => cells.map((x, i) => i === cells.length - 1 ? x : x.padEnd([24, 8, 6, 48, 7, 32][i] ?? 12)).join('  ').trimEnd()
  if (c.unusedRules !== undefined) return await unusedRules(c.unusedRules, files, filters, c.output, io)
  if (c.export !== undefined) return await exportQuery(c.export, files, filters, c, io)
  if (!c.summary && c.output === 'table') io.out(`${row(['TIME', 'DECISION', 'STATUS', 'CALLER', 'METHOD', 'PATH', 'RULE'])}\n`)
  const r = await queryLog(files, filters, {
    keepLines: false,
    ...(c.summary ? {} : { onLine: (d: Record<string, any>) => { io.out(c.output === 'table' ? `${row([String(d.time), String(d.decision), String(d.status), String(d.caller), String(d.method), String(d.kind === 'tcp' ? `port ${String(d.port)}` : d.path ?? d.rawPath), String(d.rule ?? '-')])}\n` : streamed(c.output, d)) } }),
    ...(tty ? { onProgress: (done: number, total: number) => { process.stderr.write(`\r${'#'.repeat(Math.round(30 * done / Math.max(1, total))).padEnd(30, '.')} ${Math.round(100 * done / Math.max(1, total))}%`) } } : {})
  })
  if (tty) process.stderr.write('\r\x1b[K')
  if (c.summary) {
    const summary = {
      scanned: r.scanned,
      matched: r.matched,
      calls: [...r.calls].sort((a, b) => b[1] - a[1]).map(([k, n]) => { const [caller, callee] = k.split('\t'); return { caller, callee, count: n } }),
      denials: [...r.denials].sort((a, b) => b[1] - a[1]).map(([k, n]) => { const [caller, path] = k.split('\t'); return { caller, path, count: n } }),
      ...(c.policy === undefined ? {} : policyFindings(parsePolicy(readArg('--policy', c.policy), c.policy).policy, r))
    }
    if (c.output !== 'table') { io.out(formatData(c.output, summary)); return 0 }
    io.out(`${r.matched} of ${r.scanned} decisions matched (${((performance.now() - started) / 1000).toFixed(1)} s)\n\nwho calls whom\n${table([['CALLER', 'CALLEE', 'COUNT'], ...summary.calls.map(x => [x.caller!, x.callee!, String(x.count)])])}\n\ndenials by caller and path\n${table([['CALLER', 'PATH', 'COUNT'], ...summary.denials.map(x => [x.caller!, x.path!, String(x.count)])])}\n`)
    const { unusedRules, unseenCallers } = summary as { unusedRules?: string[], unseenCallers?: Array<{ rule: string, caller: string }> }
    if (unusedRules !== undefined && unseenCallers !== undefined) {
      io.out(`\nrules that never matched: ${unusedRules.length === 0 ? 'none' : unusedRules.join(', ')}\n`)
      io.out(`callers allowed by a rule but never seen:\n${unseenCallers.length === 0 ? '  none' : unseenCallers.map(u => `  ${u.caller} (rule ${u.rule})`).join('\n')}\n`)
    }
    return 0
  }
  if (c.output === 'table') io.out(`${r.matched} of ${r.scanned} decisions\n`)
  return 0
}

/** `audit query --export FILE`: the matching lines and the segments that prove them, from logs that verify (unless --unverified). */
async function exportQuery (out: string, files: string[], filters: QueryFilters, c: { output: string, trustBundle?: string | undefined, unverified: boolean }, io: Parameters<Runner>[1]): Promise<number> {
  if (existsSync(out)) throw new ConfigInvalidError([`--export: ${out} exists; an export is evidence and is never overwritten: name a new file`])
  if (await verifiedLogs(files, 'audit query --export', c) === undefined) return 1
  const s = await exportEvidence(files, filters, out)
  if (c.output !== 'table') { io.out(formatData(c.output, { file: out, ...s })); return 0 }
  const unproven = s.matched - s.proven
  io.out(`${s.matched} matching line(s) from ${s.chains} chain(s) written to ${out}, with ${s.lines - s.matched} line(s) of context in ${s.segments} segment(s)\n`)
  if (unproven > 0) io.out(`${unproven} of them have no checkpoint yet (the log's unsigned tail): exported, and 'audit verify' will say so\n`)
  if (s.formatOne > 0) io.out(`${s.formatOne} matching line(s) of format-1 logs (no chain id) left out: verify those logs whole\n`)
  io.out(`check it with: gatehouse audit verify ${out} --trust-bundle BUNDLE\n`)
  return 0
}

/** `audit query --unused-rules POLICY`: each matching request decided by POLICY; rules that decided none, and rules that never can. */
async function unusedRules (file: string, files: string[], filters: QueryFilters, output: string, io: Parameters<Runner>[1]): Promise<number> {
  const { policy } = parsePolicy(readArg('--unused-rules', file), file)
  const replayer = new Replayer(compilePolicy(policy))
  // Only the replay: none of queryLog's summaries, whose maps grow with every distinct path.
  const matches = lineFilter(filters)
  const r = { scanned: 0, matched: 0 }
  await stream(files, rec => {
    if (rec.msg !== 'decision') return
    r.scanned++
    if (!matches(rec)) return
    r.matched++
    replayer.add(rec)
  })
  const shadowed = shadowedRules(policy)
  const unused = [...policy.deny.map(x => ({ rule: x.name, list: 'deny' })), ...policy.rules.map(x => ({ rule: x.name, list: 'rules' }))].filter(x => !replayer.rulesHit.has(x.rule))
  if (output !== 'table') { io.out(formatData(output, { scanned: r.scanned, matched: r.matched, unusedRules: unused, shadowedRules: shadowed })); return 0 }
  io.out(`${r.matched} of ${r.scanned} decisions replayed against ${file}\n`)
  io.out(`rules no request matched: ${unused.length === 0 ? 'none' : unused.map(u => `${u.list === 'deny' ? 'deny ' : ''}${u.rule}`).join(', ')}\n`)
  io.out(`rules that can never match:${shadowed.length === 0 ? ' none' : ''}\n${shadowed.map(s => `  ${s.list === 'deny' ? 'deny ' : ''}${s.rule}: ${s.kind === 'shadowed' ? `every request it matches is denied first by ${s.by === 'canary' ? 'the canary paths' : `deny rule ${s.by}`}` : `every request it matches is allowed first by rule ${s.by}`}\n`).join('')}`)
  return 0
}
