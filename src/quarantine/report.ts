import type { Logger } from '../log.ts'
import type { Credentials } from '../identity/credentials.ts'
import { caRequest } from '../identity/ca-http.ts'
import { readErrorBody } from '../error-body.ts'
import type { Suspicion } from './detector.ts'

// A tripped detector's report to the CA (POST /v1/reports), authenticated by this sidecar's own SVID
// over mTLS. The CA decides what to do with it (--auto-quarantine off|audit|enforce, a quorum of
// reporters, an allow-list); the sidecar only logs what it answered. Without a CA the suspicion is
// logged and counted, and a person decides.

export interface ReportTarget { url: string, caId: string, credentials: Credentials, logger: Logger }

export async function reportSuspicion (o: ReportTarget, s: Suspicion): Promise<string> {
  try {
    const res = await caRequest({ url: o.url, credentials: o.credentials, caId: o.caId }, { method: 'POST', path: '/v1/reports', headers: { 'content-type': 'application/json' }, body: JSON.stringify(s), timeoutMs: 10_000 })
    const text = res.text
    const refused = res.status === 202 ? undefined : readErrorBody(text) ?? { error: `HTTP ${res.status}`, message: text.slice(0, 200) }
    const outcome = refused === undefined ? String((JSON.parse(text) as { outcome?: string }).outcome) : `refused ${refused.error}: ${refused.message}`
    o.logger.warn({ event: 'quarantine.reported', subject: s.subject, detector: s.detector, detail: s.detail, status: res.status, outcome }, 'reported a suspected compromised caller to the CA')
    return outcome
  } catch (err) {
    o.logger.error({ event: 'quarantine.report_failed', subject: s.subject, detector: s.detector, detail: (err as Error).message }, 'could not report a suspected compromised caller to the CA')
    return 'failed'
  }
}
