// The in-process micro-benches, run as their own process so bench/run.ts can pin them to a core of
// their own: `node bench/micro-worker.ts '{"seconds":1,"auditLines":50000}'` prints one JSON result.
import { policyRates, type PolicyRate } from './measure/policy.ts'
import { caRates, type CaRate } from './measure/ca.ts'
import { auditRates, type AuditRate } from './measure/audit.ts'

export interface MicroSpec { seconds: number, auditLines: number }
export interface MicroResult { policy: PolicyRate[], ca: CaRate[], audit: AuditRate }

const spec = JSON.parse(process.argv[2] ?? '{}') as MicroSpec
const result: MicroResult = { policy: policyRates(spec.seconds), ca: await caRates(spec.seconds), audit: await auditRates(spec.auditLines) }
process.stdout.write(`${JSON.stringify(result)}\n`)
