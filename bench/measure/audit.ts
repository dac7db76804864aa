// Decision-log throughput: a signed log written with the sidecar's DecisionLog class (hash chain,
// a JWS checkpoint every 1,000 lines, synchronous file writes), then checked with verifyLog, the
// function behind `gatehouse audit verify`. Reports lines per second for both.
import { mkdtempSync, rmSync, statSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { DecisionLog, type DecisionFields } from '../../src/audit/record.ts'
import { verifyLog } from '../../src/audit/verify.ts'
import { Issuer } from '../../src/ca/issuer.ts'
import { generateKey } from '../../src/x509/keys.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { pemToDers } from '../../src/x509/certificate.ts'
import { withCa } from './ca.ts'
import { BENCH_PATH } from '../lib/policy-gen.ts'
import { IDS } from '../lib/pki.ts'

export interface AuditRate { lines: number, files: number, bytes: number, writeLinesPerSecond: number, verifyLinesPerSecond: number, verifyMbPerSecond: number, checkpoints: number, ok: boolean }

export async function auditRates (lines: number): Promise<AuditRate> {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-audit-'))
  try {
    return await withCa('ec-p256', async (ca) => {
      const key = generateKey('ec-p256')
      const svid = new Issuer(ca).issue({ id: SpiffeId.parse(IDS.server), publicKey: key.publicKey })
      const signer = { spiffeId: svid.id, chainDers: pemToDers(svid.chainPem), privateKey: key.privateKey }
      const file = join(dir, 'decisions.log')
      const log = new DecisionLog({ stdout: false, file, checkpointEvery: 1000, checkpointIntervalMs: 60_000, signer: () => signer })
      const fields: DecisionFields = {
        requestId: randomUUID(), decision: 'allow', mode: 'enforce', enforced: true, rule: 'orders-read', reason: 'allow-rule',
        caller: IDS.client, callee: IDS.server, method: 'GET', path: BENCH_PATH, rawPath: BENCH_PATH, status: 200, durationMs: 0.42,
        policyRevision: 'sha256:0123456789abcdef', peerCertSerial: '5f2c0e6a9d1b7c3e'
      }
      const w0 = performance.now()
      for (let i = 0; i < lines; i++) {
        log.write(fields)
        // Let the checkpoint signatures (async) land between batches, as they do between requests.
        if (i % 1000 === 999) await new Promise(resolve => setImmediate(resolve))
      }
      await log.close()
      const writeSeconds = (performance.now() - w0) / 1000
      // The file rotates at 100 MB (the sidecar's default): verify the whole chain, every file.
      const files = readdirSync(dir).filter(f => f.startsWith('decisions.log')).map(f => join(dir, f))
      const bytes = files.reduce((a, f) => a + statSync(f).size, 0)
      const v0 = performance.now()
      const report = await verifyLog(files, ca.bundle)
      const verifySeconds = (performance.now() - v0) / 1000
      return { lines: report.lines, files: files.length, bytes, writeLinesPerSecond: lines / writeSeconds, verifyLinesPerSecond: report.lines / verifySeconds, verifyMbPerSecond: bytes / 1048576 / verifySeconds, checkpoints: report.checkpoints, ok: report.ok }
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
