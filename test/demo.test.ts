import t from 'tap'
import { existsSync } from 'node:fs'
import { gatehouse } from './helpers/run-cli.ts'
import { tempDir } from './helpers/files.ts'
import { parsePolicy } from '../src/policy/load.ts'

const PAYMENTS = 'spiffe://demo.local/ns/shop/sa/payments'
const ORDERS = 'spiffe://demo.local/ns/shop/sa/orders'

/** The policy the demo suggests at its end, from payments' own log (printed indented by three spaces). */
function suggestedPolicy (stdout: string): string | undefined {
  const m = /\ngatehouse policy suggest \S+payments-decisions\.log --callee (\S+) --trust-bundle \S+\n((?: {3}.*\n)+)/.exec(stdout)
  return m?.[1] === PAYMENTS ? m[2]!.replace(/^ {3}/gm, '') : undefined
}

t.test('gatehouse demo runs end to end: every step as expected, and its decision log verifies', async t => {
  const r = gatehouse(['demo', '--leaf-ttl', '4s'])
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /1\. orders -> payments: POST \/v1\/charges[\s\S]*?200[\s\S]*?"decision":"allow","rule":"orders-create-charges"/)
  t.match(r.stdout, /2\. [^\n]*default deny\)\n\s+403 \{"error":"GH_FORBIDDEN"/)
  t.match(r.stdout, /3\. spiffe:\/\/demo\.local\/ns\/lab\/sa\/intruder[^\n]*\n\s+403/)
  t.match(r.stdout, /4\. a caller without a client certificate[\s\S]*?=> as expected/)
  t.match(r.stdout, /5\. [^\n]*forged[\s\S]*?what payments' app saw: By=spiffe:\/\/demo\.local\/ns\/shop\/sa\/payments;Hash=[0-9a-f]{64};URI=spiffe:\/\/demo\.local\/ns\/shop\/sa\/orders\n/)
  t.match(r.stdout, /6\. edit payments' policy live[\s\S]*?now: 200/)
  t.match(r.stdout, /7\. calls while both sidecars rotate[^\n]*\n\s+\d+ calls, 0 failed/)
  t.match(r.stdout, /8\. a workload goes rogue[^\n]*\n\s+the orders app, compromised, asks inventory for 30 paths[^\n]*403 \(denied by inventory's policy\)[\s\S]*?auto-quarantine enforce[^\n]*the default, audit, only logs/)
  t.match(r.stdout, /quarantine\.yaml: spiffe:\/\/demo\.local\/ns\/shop\/sa\/orders "auto: scan \(\d+ denials over \d+ distinct paths within 10 s\) reported by spiffe:\/\/demo\.local\/ns\/shop\/sa\/inventory", by auto/)
  const inForce = /quarantine in force at every callee (\d+) ms after the first scanning request \(inventory \d+ ms, payments \d+ ms/.exec(r.stdout)
  t.ok(inForce !== null && Number(inForce[1]) < 5000, `step 8: quarantine in force at every callee within 5 s (${inForce?.[1]} ms)`)
  t.match(r.stdout, /orders -> payments POST \/v1\/charges \(allowed by payments' policy\): 403 \{"error":"GH_QUARANTINED","message":"[^"]* is quarantined/)
  t.match(r.stdout, /orders' key used directly -> inventory GET \/v1\/stock\/1 \(allowed by inventory's policy\): 403; decision: \{"decision":"deny","rule":"quarantine","reason":"quarantined","caller":"spiffe:\/\/demo\.local\/ns\/shop\/sa\/orders"/)
  t.match(r.stdout, /released \(gatehouse ca quarantine remove [^\n]*\): orders -> payments POST \/v1\/charges 200 again/)
  t.match(r.stdout, /VERIFIED: \d+ lines, \d+ checkpoints/)
  t.match(r.stdout, /All 8 steps behaved as expected\./)
  t.notMatch(r.stdout, /UNEXPECTED/)
  // It ends with the least-privilege policy payments' log argues for: it passes `policy check`, and
  // allows orders exactly what was served (the intruder's and the quarantined calls were denied).
  const yaml = suggestedPolicy(r.stdout)
  t.ok(yaml !== undefined, 'the demo prints the suggested policy for payments')
  t.match(yaml, /^# Suggested by 'gatehouse policy suggest' for spiffe:\/\/demo\.local\/ns\/shop\/sa\/payments\n/)
  const { policy } = parsePolicy(yaml ?? '', 'suggested.yaml')
  t.same(policy.rules.map(rule => rule.from), [[ORDERS], [ORDERS]], 'rules for orders only: the intruder was never served')
  t.same(policy.rules.flatMap(rule => rule.methods ?? []).sort(), ['GET', 'POST'])
  t.same(policy.rules.flatMap(rule => rule.paths ?? []).sort(), ['/v1/charges', '/v1/refunds/*'], 'the refund id generalized to one segment')
  const dir = /Files: (\S+)/.exec(r.stdout)?.[1]
  t.ok(dir !== undefined && !existsSync(dir), 'without --dir or --keep-running the demo cleans up after itself')
})

t.test('gatehouse demo --dir keeps its files, and the CLI verifies its log', async t => {
  const dir = tempDir(t, 'gh-demo-')
  const r = gatehouse(['demo', '--leaf-ttl', '4s', '--dir', dir])
  t.equal(r.status, 0, r.stderr)
  const v = gatehouse(['audit', 'verify', `${dir}/payments-decisions.log`, '--trust-bundle', `${dir}/ca/bundle.pem`])
  t.equal(v.status, 0, v.stdout)
  t.match(v.stdout, /^VERIFIED: /)
})
