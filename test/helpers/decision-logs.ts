import { join, resolve } from 'node:path'
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { DecisionLog, type DecisionFields } from '../../src/audit/record.ts'
import { decisionFields, readLines, signerFrom, writeLines } from './audit-log.ts'
import type { Pki } from './mesh.ts'

// Realistic decision logs of a small mesh, written by the project's own DecisionLog (hash-chained,
// checkpoints signed by each sidecar's SVID from the test Pki): one log per callee, a few callers,
// REST paths with numeric, UUID and hex ids, gRPC methods, an opaque TCP port, denials, and a
// caller served in audit mode (decision deny, enforced false). For `policy suggest`, `replay`,
// `audit query --unused-rules` and `audit graph`.

export const TD = 'spiffe://example.org'
export const id = (ns: string, sa: string): string => `${TD}/ns/${ns}/sa/${sa}`
export const PAYMENTS = id('payments', 'payments')
export const ORDERS = id('orders', 'api')
export const BILLING = id('billing', 'worker')
export const CRON = id('billing', 'cron')
export const BACKUP = id('ops', 'backup')
export const EVIL = id('evil', 'x')
export const WEB = id('web', 'web')

/** One logged request (or, with port, an opaque TCP connection); `n` copies, each with its own ids in the path. */
export interface Call { caller: string, method: string, path: string, n: number, decision?: 'allow' | 'deny', audit?: boolean, rule?: string | null, port?: number }

const UUIDS = ['3f2b8c1e-9a4d-4e7b-8c2f-1a2b3c4d5e6f', 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d', '0c7e1f9a-2b3d-4c5e-9f8a-7b6c5d4e3f2a']

/** "{n}" becomes a number, "{uuid}" a UUID, "{hex}" a 24-hex id: different for each copy. */
export const fill = (path: string, k: number): string =>
  path.replace(/\{n\}/g, String(1000 + k * 37)).replace(/\{uuid\}/g, UUIDS[k % UUIDS.length]!).replace(/\{hex\}/g, (0x5f3a9c00 + k * 4099).toString(16).padStart(24, '0'))

/** The traffic each callee's sidecar logged. */
export const MESH_TRAFFIC: Record<string, Call[]> = {
  [PAYMENTS]: [
    { caller: ORDERS, method: 'GET', path: '/v1/charges/{n}', n: 6 },
    { caller: ORDERS, method: 'POST', path: '/v1/charges', n: 3 },
    { caller: ORDERS, method: 'GET', path: '/v1/charges/{uuid}/refunds', n: 3 },
    { caller: BILLING, method: 'POST', path: '/billing.v1.Ledger/Record', n: 4 },
    { caller: BILLING, method: 'POST', path: '/billing.v1.Ledger/Get', n: 2 },
    { caller: CRON, method: 'GET', path: '/v1/reports/{hex}', n: 3, decision: 'deny', audit: true, rule: null },
    { caller: BACKUP, method: 'TCP', path: '', port: 5432, n: 2 },
    { caller: EVIL, method: 'GET', path: '/admin/users', n: 2, decision: 'deny', rule: 'no-admin' }
  ],
  [ORDERS]: [
    { caller: WEB, method: 'GET', path: '/v1/orders/{n}', n: 4 },
    { caller: WEB, method: 'DELETE', path: '/v1/orders/{n}', n: 1, decision: 'deny', rule: null }
  ]
}

export function callFields (call: Call, k: number, callee: string, requestId: string): DecisionFields {
  const deny = call.decision === 'deny'
  const common = { decision: call.decision ?? 'allow', mode: call.audit === true ? 'audit' : 'enforce', enforced: !(call.audit === true && deny), rule: call.rule === undefined ? 'r' : call.rule, reason: deny ? (call.rule === null || call.rule === undefined ? 'no-matching-rule' : 'deny-rule') : 'allow-rule', status: deny && call.audit !== true ? 403 : 200 } as const
  if (call.port !== undefined) return decisionFields(requestId, call.caller, callee, { ...common, kind: 'tcp', port: call.port, method: 'TCP', path: null, rawPath: '' })
  const path = fill(call.path, k)
  return decisionFields(requestId, call.caller, callee, { ...common, method: call.method, path, rawPath: path })
}

/** One callee's sidecar log, as DecisionLog writes it (calls interleaved round-robin, as traffic arrives). */
export async function writeCalleeLog (file: string, pki: Pki, callee: string, calls: readonly Call[], checkpointEvery = 8): Promise<number> {
  const svid = pki.issue(callee, `svid-${callee.split('/').slice(-3).join('-')}`)
  const log = new DecisionLog({ stdout: false, file, checkpointEvery, signer: () => signerFrom(svid, callee) })
  let written = 0
  const max = Math.max(...calls.map(c => c.n))
  for (let k = 0; k < max; k++) {
    for (const call of calls) if (k < call.n) log.write(callFields(call, k, callee, `req-${written++}`))
  }
  await log.close()
  return written
}

/** Every callee's log of MESH_TRAFFIC (or `traffic`) in `dir`: the files, one per sidecar. */
export async function writeMeshLogs (dir: string, pki: Pki, traffic: Record<string, Call[]> = MESH_TRAFFIC): Promise<string[]> {
  const files: string[] = []
  for (const [callee, calls] of Object.entries(traffic)) {
    const file = join(dir, `${callee.split('/').at(-1)!}-${files.length}.log`)
    await writeCalleeLog(file, pki, callee, calls)
    files.push(file)
  }
  return files
}

/** Calls that were served (allowed, or denied in audit mode): what a suggested policy must allow. */
export const served = (calls: readonly Call[]): Call[] => calls.filter(c => c.decision !== 'deny' || c.audit === true)

/** An attacker's edit of one line (no re-signing): the first denied admin request made to look like a charge lookup. */
export function tamperOneLine (file: string): void {
  const lines = readLines(file)
  const i = lines.findIndex(l => l.includes('"/admin/users"'))
  if (i === -1) throw new Error(`${file} has no line to tamper with`)
  lines[i] = lines[i]!.replace('"decision":"deny"', '"decision":"allow"')
  writeLines(file, lines)
}

// Run as a script (docs/policy.md does), it writes the mesh's signed logs and CA into DIR.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2] ?? 'mesh'
  mkdirSync(dir, { recursive: true })
  const { Pki } = await import('./mesh.ts')
  const pki = new Pki(dir)
  const files = await writeMeshLogs(dir, pki)
  console.log(`wrote ${files.join(' ')}; trust bundle ${pki.bundleFile}`)
}
