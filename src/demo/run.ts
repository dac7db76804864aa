import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import type { KeyObject } from 'node:crypto'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { request, Agent } from 'undici'
import pino from 'pino'
import { initCa, loadCa } from '../ca/ca-directory.ts'
import { Issuer } from '../ca/issuer.ts'
import { startCaServer } from '../ca/ca-server.ts'
import { editQuarantine, readQuarantine } from '../ca/quarantine-book.ts'
import { Attestor } from '../ca/attest.ts'
import { JoinTokenVerifier, UsedTokenLog, mintJoinToken } from '../ca/join-token.ts'
import { RateLimiter } from '../ca/rate-limit.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { generateKey } from '../x509/keys.ts'
import { startSidecar, type Sidecar } from '../proxy/sidecar.ts'
import { verifyLog, type VerifyReport } from '../audit/verify.ts'
import { PolicySuggester } from '../policy/suggest.ts'
import { stream } from '../cli/evidence.ts'
import { startOrders, startService } from './apps.ts'

// `gatehouse demo`: a whole mesh in one process on 127.0.0.1 (a CA, orders, payments and inventory, a
// sidecar for each with CA-issued identities that rotate every few seconds) and a short guided tour.
// Every step prints the request, what happened, and the decision line payments' sidecar wrote for it.
// The last step is a compromised workload: it scans, is quarantined automatically, then released.

const TD = 'demo.local'
const ORDERS = `spiffe://${TD}/ns/shop/sa/orders`
const PAYMENTS = `spiffe://${TD}/ns/shop/sa/payments`
const INTRUDER = `spiffe://${TD}/ns/lab/sa/intruder`
const INVENTORY = `spiffe://${TD}/ns/shop/sa/inventory`

/** A policy rule that lets orders make `method` requests to `paths`. */
const ordersMay = (name: string, method: string, paths: string): string => `  - name: ${name}
    from: ["${ORDERS}"]
    methods: [${method}]
    paths: ["${paths}"]
`
const policyV1 = `version: 1\nrules:\n${ordersMay('orders-create-charges', 'POST', '/v1/charges')}`
const policyV2 = `${policyV1}${ordersMay('orders-read-refunds', 'GET', '/v1/refunds/**')}`
const inventoryPolicy = `version: 1\nrules:\n${ordersMay('orders-read-stock', 'GET', '/v1/stock/**')}`
/** What the rogue workload of step 8 probes: 30 distinct paths, none of which it may call. */
const SCAN_PATHS = ['', '/v1', '/api'].flatMap(prefix => ['admin', '.env', 'users', 'keys', 'config', 'debug', 'backup', 'secrets', 'export', 'internal'].map(p => `${prefix}/${p}`))

export interface DemoOptions { out: (text: string) => void, keepRunning: boolean, leafTtlMs?: number, dir?: string }

export interface DemoResult { steps: Array<{ name: string, ok: boolean }>, verify: VerifyReport, dir: string }

export async function runDemo (o: DemoOptions): Promise<DemoResult> {
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), 'gatehouse-demo-'))
  mkdirSync(dir, { recursive: true })
  const say = o.out
  const quiet = pino({ level: 'warn' }, pino.destination({ dest: join(dir, 'sidecars.log'), sync: true, mkdir: true }))
  const cleanups: Array<() => Promise<void>> = []
  const steps: DemoResult['steps'] = []
  try {
    // The CA.
    initCa({ dir: join(dir, 'ca'), trustDomain: TD })
    const ca = loadCa(join(dir, 'ca'))
    const caServer = await startCaServer({
      ca,
      issuer: new Issuer(ca, { defaultTtlMs: o.leafTtlMs ?? 8000 }),
      attestor: new Attestor({ join: new JoinTokenVerifier({ tokenKey: ca.tokenKey, trustDomain: TD, used: new UsedTokenLog(join(dir, 'ca', 'join-tokens-used.log')) }) }),
      limiter: new RateLimiter({ burst: 100, perMinute: 600 }),
      logger: quiet,
      listen: { host: '127.0.0.1', port: 0 },
      // For step 8: the CA acts on its sidecars' reports. `ca serve` defaults to audit (log only).
      autoQuarantine: { mode: 'enforce' }
    })
    cleanups.push(caServer.close)
    const token = async (id: string, name: string): Promise<string> => {
      const file = join(dir, `${name}.token`)
      writeFileSync(file, await mintJoinToken({ tokenKey: ca.tokenKey, trustDomain: TD, id: SpiffeId.parse(id), ttlMs: 600_000 }), { mode: 0o600 })
      return file
    }

    // The apps and their sidecars.
    const payments = await startService('payments')
    cleanups.push(payments.close)
    writeFileSync(join(dir, 'payments-policy.yaml'), policyV1)
    const common = {
      trustBundleFile: join(dir, 'ca', 'bundle.pem'), reloadIntervalMs: 200, tlsMinVersion: 'TLSv1.3' as const, handshakeTimeoutMs: 5000, headersTimeoutMs: 5000,
      requestTimeoutMs: 30_000, idleTimeoutMs: 30_000, maxHeaderSize: 16384, maxConnections: 1000, upstreamTimeoutMs: 5000, upstreamConnectTimeoutMs: 1000, logger: quiet,
      admin: { host: '127.0.0.1', port: 0 }, checkpointEvery: 10, checkpointIntervalMs: 2000, decisionLogStdout: false
    }
    const paymentsSidecar: Sidecar = await startSidecar({
      ...common, inbound: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: payments.port },
      policyFile: join(dir, 'payments-policy.yaml'), ca: { url: `https://127.0.0.1:${caServer.port}`, tokenFile: await token(PAYMENTS, 'payments') },
      decisionLogFile: join(dir, 'payments-decisions.log')
    })
    cleanups.push(async () => { await paymentsSidecar.stop(200) })
    const inventory = await startService('inventory')
    cleanups.push(inventory.close)
    writeFileSync(join(dir, 'inventory-policy.yaml'), inventoryPolicy)
    const inventorySidecar: Sidecar = await startSidecar({
      ...common, inbound: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: inventory.port },
      policyFile: join(dir, 'inventory-policy.yaml'), ca: { url: `https://127.0.0.1:${caServer.port}`, tokenFile: await token(INVENTORY, 'inventory') },
      decisionLogFile: join(dir, 'inventory-decisions.log')
    })
    cleanups.push(async () => { await inventorySidecar.stop(200) })
    writeFileSync(join(dir, 'orders-policy.yaml'), 'version: 1\nrules: []\n')
    const route = (host: string, s: Sidecar, id: string): string => `  - host: ${host}\n    address: 127.0.0.1:${s.inbound.port}\n    id: ${id}\n`
    writeFileSync(join(dir, 'orders-routes.yaml'), `version: 1\nroutes:\n${route('payments.internal', paymentsSidecar, PAYMENTS)}${route('inventory.internal', inventorySidecar, INVENTORY)}`)
    let ordersOutbound = 0
    const orders = await startOrders(() => `http://127.0.0.1:${ordersOutbound}`)
    cleanups.push(orders.close)
    const ordersSidecar: Sidecar = await startSidecar({
      ...common, inbound: { host: '127.0.0.1', port: 0 }, upstream: { host: '127.0.0.1', port: orders.port }, outbound: { host: '127.0.0.1', port: 0 },
      routesFile: join(dir, 'orders-routes.yaml'), policyFile: join(dir, 'orders-policy.yaml'),
      ca: { url: `https://127.0.0.1:${caServer.port}`, tokenFile: await token(ORDERS, 'orders') },
      decisionLogFile: join(dir, 'orders-decisions.log')
    })
    cleanups.push(async () => { await ordersSidecar.stop(200) })
    ordersOutbound = ordersSidecar.outbound!.port

    say('Gatehouse demo: a CA, three apps (orders, payments, inventory) and a sidecar for each, all on 127.0.0.1\n')
    say(`  payments sidecar ${paymentsSidecar.credentials.current!.id.toString()} (inbound :${paymentsSidecar.inbound.port}); orders sidecar ${ordersSidecar.credentials.current!.id.toString()} (outbound :${ordersOutbound})\n`)
    say(`  payments policy: orders may POST /v1/charges, nothing else; inventory policy: orders may GET /v1/stock/**. Certificates live ${Math.round((o.leafTtlMs ?? 8000) / 1000)}s and rotate at half-life.\n\n`)

    const decisions = (file = 'payments-decisions.log'): Array<Record<string, any>> => readFileSync(join(dir, file), 'utf8').trim().split('\n').map(l => JSON.parse(l) as Record<string, any>).filter(d => d.msg === 'decision')
    const describe = (d: Record<string, any> | undefined): string => d === undefined ? '(none)' : JSON.stringify({ decision: d.decision, rule: d.rule, reason: d.reason, caller: d.caller, method: d.method, path: d.path, status: d.status, policyRevision: d.policyRevision, seq: d.seq })
    const lastDecision = (): string => describe(decisions().at(-1))
    const viaOrders = async (method: string, path: string, extra: { spoof?: string, host?: string } = {}): Promise<{ status: number, body: string }> => {
      const r = await request(`http://127.0.0.1:${orders.port}/call?method=${method}&path=${encodeURIComponent(path)}${extra.spoof === undefined ? '' : `&spoof-xfcc=${encodeURIComponent(extra.spoof)}`}${extra.host === undefined ? '' : `&host=${extra.host}`}`, { method: 'POST' })
      return { status: r.statusCode, body: await r.body.text() }
    }
    /** A direct mTLS client holding a certificate from the demo's CA (no sidecar of its own). */
    const holding = (chainPem: string, key: KeyObject): Agent => new Agent({ connect: { ca: ca.bundlePem, cert: chainPem, key: key.export({ type: 'pkcs8', format: 'pem' }), checkServerIdentity: () => undefined } })
    const waitUntil = async (check: () => Promise<boolean> | boolean, ms: number, everyMs: number): Promise<boolean> => {
      for (const deadline = Date.now() + ms; Date.now() < deadline; await new Promise(resolve => setTimeout(resolve, everyMs))) if (await check()) return true
      return false
    }
    const step = (n: number, name: string, ok: boolean, lines: string[]): void => {
      steps.push({ name, ok })
      say(`${n}. ${name}\n${lines.map(l => `   ${l}\n`).join('')}   => ${ok ? 'as expected' : 'UNEXPECTED'}\n\n`)
    }

    let r = await viaOrders('POST', '/v1/charges')
    step(1, 'orders -> payments: POST /v1/charges through both sidecars (mTLS, allowed by rule orders-create-charges)', r.status === 200 && r.body.includes(ORDERS),
      [`orders app calls http://payments.internal/v1/charges via its sidecar: ${r.status} ${r.body}`, `decision: ${lastDecision()}`])

    r = await viaOrders('GET', '/v1/refunds/7')
    step(2, 'orders -> payments: GET /v1/refunds/7 (no rule allows it: default deny)', r.status === 403, [`${r.status} ${r.body}`, `decision: ${lastDecision()}`])

    // A third identity, with its own valid certificate from the same CA, calling payments directly.
    const intruderKey = generateKey('ec-p256')
    const intruder = new Issuer(ca).issue({ id: SpiffeId.parse(INTRUDER), publicKey: intruderKey.publicKey })
    const intruderAgent = holding(intruder.chainPem, intruderKey.privateKey)
    const ir = await request(`https://127.0.0.1:${paymentsSidecar.inbound.port}/v1/charges`, { method: 'POST', body: '{}', dispatcher: intruderAgent })
    const irBody = await ir.body.text()
    await intruderAgent.close()
    step(3, `${INTRUDER} (a valid certificate, but not in the policy) -> payments`, ir.statusCode === 403, [`${ir.statusCode} ${irBody}`, `decision: ${lastDecision()}`])

    const refused = await new Promise<string>((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port: paymentsSidecar.inbound.port, rejectUnauthorized: false })
      s.on('secureConnect', () => { s.write('GET /v1/charges HTTP/1.1\r\nHost: payments\r\n\r\n') })
      s.on('data', () => { resolve('answered (unexpected)') })
      s.on('error', (err) => { resolve(`connection refused by the sidecar: ${err.message}`) })
      s.on('close', () => { resolve('connection closed by the sidecar before any request was read') })
    })
    step(4, 'a caller without a client certificate -> payments', !refused.startsWith('answered'), [refused, 'no decision line: the bytes of an unauthenticated peer are never parsed'])

    const spoofed = 'By=spiffe://demo.local/ns/shop/sa/payments;URI=spiffe://demo.local/ns/admin/sa/root'
    r = await viaOrders('POST', '/v1/charges', { spoof: spoofed })
    const seen = (JSON.parse(r.body) as { xfcc?: string }).xfcc ?? ''
    step(5, 'orders sends a forged x-forwarded-client-cert claiming to be ns/admin', r.status === 200 && !seen.includes('ns/admin') && seen.includes(`URI=${ORDERS}`),
      [`what payments' app saw: ${seen}`, 'the forged header was removed; the app only sees what the sidecar verified'])

    writeFileSync(join(dir, 'payments-policy.yaml'), policyV2)
    const deadline = Date.now() + 5000
    do { await new Promise(resolve => setTimeout(resolve, 100)); r = await viaOrders('GET', '/v1/refunds/7') } while (r.status !== 200 && Date.now() < deadline)
    step(6, 'edit payments\' policy live (allow GET /v1/refunds/**), no restart', r.status === 200, [`GET /v1/refunds/7 now: ${r.status}`, `decision: ${lastDecision()}`])

    const rotatedFrom = { orders: ordersSidecar.credentials.current!.leaf.serialHex, payments: paymentsSidecar.credentials.current!.leaf.serialHex }
    let ok = 0; let failed = 0
    const until = Date.now() + (o.leafTtlMs ?? 8000) * 1.5
    while (Date.now() < until) {
      const rr = await viaOrders('POST', '/v1/charges')
      if (rr.status === 200) ok++; else failed++
    }
    const rotated = ordersSidecar.credentials.current!.leaf.serialHex !== rotatedFrom.orders && paymentsSidecar.credentials.current!.leaf.serialHex !== rotatedFrom.payments
    step(7, 'calls while both sidecars rotate their certificates', rotated && failed === 0, [`${ok} calls, ${failed} failed; orders ${rotatedFrom.orders.slice(0, 8)}.. -> ${ordersSidecar.credentials.current!.leaf.serialHex.slice(0, 8)}.., payments ${rotatedFrom.payments.slice(0, 8)}.. -> ${paymentsSidecar.credentials.current!.leaf.serialHex.slice(0, 8)}..`])

    // A certificate for trying things by hand (as orders, valid for an hour); step 8 uses it as orders' stolen key.
    const client = join(dir, 'client')
    const k = generateKey('ec-p256')
    const ordersSvid = new Issuer(ca).issue({ id: SpiffeId.parse(ORDERS), publicKey: k.publicKey, ttlMs: 3_600_000 })
    writeFileSync(`${client}.pem`, ordersSvid.chainPem)
    writeFileSync(`${client}-key.pem`, k.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })

    // 8. orders goes rogue. The CA renews nothing for a quarantined identity: start right after orders
    // rotated, so that its certificate outlives the quarantine (a second or so here) by far.
    const serial = ordersSidecar.credentials.current!.leaf.serialHex
    await waitUntil(() => ordersSidecar.credentials.current!.leaf.serialHex !== serial, o.leafTtlMs ?? 8000, 25)
    /** How many entries the quarantine list a sidecar enforces holds (gatehouse_quarantine_entries, set as it takes effect). */
    const held = async (s: Sidecar): Promise<number> => (await s.metrics.quarantineEntries.get()).values[0]?.value ?? 0
    const callees: Array<[string, Sidecar]> = [['inventory', inventorySidecar], ['payments', paymentsSidecar]]
    const scanStart = Date.now()
    const inForce = Promise.all(callees.map(async ([, s]) => await waitUntil(async () => await held(s) > 0, 10_000, 5) ? Date.now() - scanStart : NaN))
    const scan: Record<string, number> = {}
    for (const path of SCAN_PATHS) {
      const rr = await viaOrders('GET', path, { host: 'inventory.internal' })
      const kind = rr.body.includes('GH_QUARANTINED') ? `${rr.status} GH_QUARANTINED (refused by orders' own sidecar)` : `${rr.status}${rr.status === 403 ? ' (denied by inventory\'s policy)' : ''}`
      scan[kind] = (scan[kind] ?? 0) + 1
    }
    const took = await inForce
    const entry = readQuarantine(join(dir, 'ca')).find(e => e.id === ORDERS)
    const own = await viaOrders('POST', '/v1/charges')
    // Orders' key used without its sidecar: inventory denies it, and reports the key still in use (the CA already holds orders).
    const stolen = holding(ordersSvid.chainPem, k.privateKey)
    const direct = await request(`https://127.0.0.1:${inventorySidecar.inbound.port}/v1/stock/1`, { dispatcher: stolen }).then(async res => { await res.body.text(); return res.statusCode }, () => 0)
    await stolen.close()
    const denied = decisions('inventory-decisions.log').findLast(d => d.caller === ORDERS)
    await new Promise(resolve => setTimeout(resolve, 200)) // that report lands before the release
    editQuarantine(join(dir, 'ca'), entries => entries.filter(e => e.id !== ORDERS))
    const released = Date.now()
    const back = await waitUntil(async () => await held(inventorySidecar) === 0 && await held(paymentsSidecar) === 0 && (await viaOrders('POST', '/v1/charges')).status === 200, 10_000, 25)
    const releasedMs = Date.now() - released
    step(8, 'a workload goes rogue: orders scans inventory, is quarantined automatically and cut off everywhere',
      entry?.by === 'auto' && entry.reason.startsWith('auto: scan') && took.every(Number.isFinite) && own.status === 403 && own.body.includes('GH_QUARANTINED') &&
        direct === 403 && denied?.rule === 'quarantine' && back && !readQuarantine(join(dir, 'ca')).some(e => e.id === ORDERS),
      [`the orders app, compromised, asks inventory for ${SCAN_PATHS.length} paths it may not call (${SCAN_PATHS.slice(0, 3).join(', ')}, ...): ${Object.entries(scan).map(([kind, n]) => `${n}x ${kind}`).join(', ')}`,
        'inventory\'s scan detector (20 denials over 10 distinct paths within 10 s) reported orders to the CA, its decision lines as evidence;',
        'this demo\'s CA runs with auto-quarantine enforce, so it quarantined orders (the default, audit, only logs what it would have done):',
        `  ${join(dir, 'ca', 'quarantine.yaml')}: ${entry === undefined ? '(no entry)' : `${entry.id} "${entry.reason}", by ${entry.by}, expires ${entry.expires ?? 'never'}`}`,
        `quarantine in force at every callee ${Math.max(...took)} ms after the first scanning request (${callees.map(([name], i) => `${name} ${took[i]} ms`).join(', ')}: when its sidecar took the list, closing orders' connections)`,
        `orders -> payments POST /v1/charges (allowed by payments' policy): ${own.status} ${own.body}`,
        `orders' key used directly -> inventory GET /v1/stock/1 (allowed by inventory's policy): ${direct}; decision: ${describe(denied)}`,
        `released (gatehouse ca quarantine remove --dir ${join(dir, 'ca')} --spiffe-id ${ORDERS}): orders -> payments POST /v1/charges 200 again after ${releasedMs} ms`])

    // Close the log with a signed checkpoint, then verify it as an auditor would.
    await paymentsSidecar.decisions.checkpoint()
    const verify = await verifyLog([join(dir, 'payments-decisions.log')], ca.bundle)
    say(`gatehouse audit verify ${join(dir, 'payments-decisions.log')} --trust-bundle ${join(dir, 'ca', 'bundle.pem')}\n   ${verify.break === undefined ? `${verify.unverifiedTail === undefined ? 'VERIFIED' : 'INTACT'}: ${verify.lines} lines, ${verify.checkpoints} checkpoints, verified through seq ${verify.verifiedThrough}` : `TAMPERED: ${verify.break.message}`}\n\n`)

    // The least-privilege policy payments' own log argues for (what `gatehouse policy suggest` prints).
    const suggester = new PolicySuggester({ callee: PAYMENTS })
    await stream([join(dir, 'payments-decisions.log')], rec => { suggester.add(rec) })
    say(`gatehouse policy suggest ${join(dir, 'payments-decisions.log')} --callee ${PAYMENTS} --trust-bundle ${join(dir, 'ca', 'bundle.pem')}\n${suggester.yaml().trimEnd().split('\n').map(l => `   ${l}\n`).join('')}\n`)

    const kept = o.keepRunning || o.dir !== undefined
    say(`Files: ${dir} (CA, policies, decision logs: payments-decisions.log, orders-decisions.log, inventory-decisions.log, sidecar logs)${kept ? '' : ', removed when the demo ends; use --dir DIR to keep them'}\n`)
    say(`Try it by hand${o.keepRunning ? ' (Ctrl-C to stop)' : ' (run with --keep-running to leave the mesh up)'}:\n  curl -sk --cert ${client}.pem --key ${client}-key.pem -X POST https://127.0.0.1:${paymentsSidecar.inbound.port}/v1/charges\n  curl -s -x http://127.0.0.1:${ordersOutbound} -X POST http://payments.internal/v1/charges\n  curl -s http://127.0.0.1:${paymentsSidecar.admin.port}/metrics\n  gatehouse audit verify ${join(dir, 'payments-decisions.log')} --trust-bundle ${join(dir, 'ca', 'bundle.pem')}\n`)
    if (o.keepRunning) await new Promise<void>(resolve => { process.once('SIGINT', resolve); process.once('SIGTERM', resolve) })
    return { steps, verify, dir }
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => {})
    if (o.dir === undefined && !o.keepRunning) rmSync(dir, { recursive: true, force: true })
  }
}
