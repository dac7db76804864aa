import t from 'tap'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import pino from 'pino'
import { Credentials } from '../src/identity/credentials.ts'
import { Rotator } from '../src/identity/rotator.ts'
import { captureLines, policyAllowing, startWorkload } from './helpers/mesh.ts'
import { metricValue } from './helpers/inbound-probe.ts'
import { startTestCa, saTokens, A_ID, B_ID, type LogLine } from './helpers/ca-mesh.ts'
import { sleep, waitFor } from './helpers/wait.ts'
import { replaceFile } from './helpers/files.ts'

// CA-issued identity (`--ca-url --token-file`): the first SVID comes from a join token, the key is
// generated in memory and never written anywhere, renewals go over mTLS with the current SVID at
// about half of the remaining validity (+-10% jitter), the token file is read again for every
// request to the CA, an ID other than the expected one is refused, and it all shows in /metrics.

const LEAF_TTL_MS = 4000
const CA_KEY_FILES = new Set(['root-key.pem', 'issuer-key.pem', 'join-token-key.pem'])

/** Every regular file under `dir` (recursively), skipping what cannot be read and anything over 1 MB. */
function filesUnder (dir: string, since = 0, depth = 6): string[] {
  const out: string[] = []
  let entries: string[]
  try { entries = readdirSync(dir) } catch { return out }
  for (const name of entries) {
    const p = join(dir, name)
    let st
    try { st = statSync(p) } catch { continue }
    if (st.isDirectory()) { if (depth > 0 && st.mtimeMs >= since) out.push(...filesUnder(p, 0, depth - 1)); continue }
    if (st.isFile() && st.size < 1_000_000 && st.mtimeMs >= since) out.push(p)
  }
  return out
}

const read = (file: string): string => { try { return readFileSync(file, 'latin1') } catch { return '' } }

const caIssued = (logs: LogLine[], id: string): LogLine[] => logs.filter(l => l.event === 'svid.issued' && l.spiffeId === id)

t.test('first SVID from a join token; renewals over mTLS at ~half the remaining validity; keys only in memory; metrics', async t => {
  const testStart = Date.now() - 1000
  const ca = await startTestCa(t, { leafTtlMs: LEAF_TTL_MS })
  const a = await startWorkload(t, { ca, name: 'a', id: A_ID, policy: policyAllowing(B_ID) })
  const keys = new Set<string>([a.sidecar.credentials.current!.keyPem])
  a.sidecar.credentials.on('change', () => { const c = a.sidecar.credentials.current; if (c !== undefined) keys.add(c.keyPem) })

  // First SVID: join token.
  const first = a.events('identity.rotated')[0]
  t.match(first, { why: 'initial', auth: 'token', spiffeId: A_ID }, 'the first SVID was obtained with the token')
  t.match(caIssued(ca.logs, A_ID)[0], { attestation: 'join-token', serial: first?.serial }, 'the CA attested the join token')
  t.equal(a.sidecar.credentials.current!.id.toString(), A_ID)
  t.equal((await a.readyz()).status, 200, 'ready with the CA-issued certificate')

  // Two renewals or more (each ~half of a 4 s leaf).
  await waitFor(() => a.events('identity.rotated').length >= 4, 12_000, 'three renewals')
  const rotated = a.events('identity.rotated')
  const renewals = rotated.slice(1)
  t.ok(renewals.every(l => l.why === 'renewal' && l.auth === 'svid' && l.spiffeId === A_ID), 'renewals authenticate with the current SVID (the join token worked once)')
  const issued = caIssued(ca.logs, A_ID).slice(0, rotated.length) // the CA may already be answering the next one
  t.same(issued.slice(1).map(l => l.attestation), renewals.map(() => 'svid'), 'the CA saw an mTLS client SVID for each renewal')
  t.same(issued.slice(1).map(l => l.previousSerial), rotated.slice(0, -1).map(l => l.serial), 'each renewal was authenticated by the certificate it replaced')
  t.equal(new Set(rotated.map(l => l.serial)).size, rotated.length, 'a new certificate each time')
  t.equal(a.events('identity.renewal_failed').length, 0, 'no renewal failed')

  // Half of the remaining validity, +-10%, measured from receipt; and the renewal happened then.
  for (const [i, l] of rotated.entries()) {
    const remaining = Date.parse(l.notAfter as string) - (l.time as number)
    const ratio = (l.nextRenewalInMs as number) / remaining
    t.ok(ratio >= 0.40 && ratio <= 0.60, `rotation ${i}: next renewal in ${l.nextRenewalInMs as number} ms of ${remaining} ms remaining (${(ratio * 100).toFixed(1)}%)`)
    const next = rotated[i + 1]
    if (next !== undefined) {
      const waited = (next.time as number) - (l.time as number)
      t.ok(waited >= (l.nextRenewalInMs as number) - 10 && waited <= (l.nextRenewalInMs as number) + 1500, `rotation ${i + 1} came ${waited} ms later (scheduled ${l.nextRenewalInMs as number} ms)`)
    }
  }
  t.equal(Rotator.renewalDelay(new Date(10_000), 0, () => 0), 4500, 'jitter floor: 45% of the remaining validity')
  t.equal(Rotator.renewalDelay(new Date(10_000), 0, () => 1), 5500, 'jitter ceiling: 55%')

  // Metrics: rotations counted; expiry of the leaf, its issuer and the root.
  const before = a.events('identity.rotated').length
  let text = await a.metrics()
  const after = a.events('identity.rotated').length
  const counted = metricValue(text, 'gatehouse_cert_rotations_total')
  t.ok(counted >= before && counted <= after, `gatehouse_cert_rotations_total = ${counted} (identity.rotated lines: ${before})`)
  const material = ca.material()
  const expiry = (cert: string): Array<{ serial: string, value: number }> => text.split('\n')
    .map(line => /^gatehouse_cert_expiry_timestamp_seconds\{cert="(\w+)",serial="(\w+)"\} (\S+)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && m[1] === cert)
    .map(m => ({ serial: m[2]!, value: Number(m[3]) }))
  const leaf = expiry('leaf')
  t.equal(leaf.length, 1, 'one leaf series')
  const leafLine = a.events('identity.rotated').find(l => l.serial === leaf[0]?.serial)
  t.ok(leafLine !== undefined, 'the leaf series is a certificate the sidecar was issued')
  t.equal(leaf[0]?.value, Date.parse(leafLine?.notAfter as string) / 1000, 'leaf expiry timestamp')
  t.same(expiry('issuer'), [{ serial: material.issuer.serialHex, value: material.issuer.notAfter.getTime() / 1000 }], 'issuer series')
  t.same(expiry('root'), [{ serial: material.root.serialHex, value: material.root.notAfter.getTime() / 1000 }], 'root series')
  await waitFor(() => a.events('identity.rotated').length > after, 6000, 'one more rotation')
  text = await a.metrics()
  t.ok(metricValue(text, 'gatehouse_cert_rotations_total') > counted, 'gatehouse_cert_rotations_total increments at the next rotation')
  t.equal(metricValue(text, 'gatehouse_cert_renewal_failures_total'), 0, 'no renewal failure counted')

  // The private keys: a fresh one per request, none of them ever written to a file.
  t.ok(keys.size >= 5, `${keys.size} distinct private keys held, one per certificate`)
  const ours = [dirname(ca.dir), a.dir]
  const keyFiles = ours.flatMap(d => filesUnder(d)).filter(f => read(f).includes('PRIVATE KEY'))
  t.same(keyFiles.map(f => f.slice(f.lastIndexOf('/') + 1)).sort(), [...CA_KEY_FILES].sort(), 'the only PRIVATE KEY files are the CA\'s own')
  const bodies = [...keys].map(k => k.split('\n').slice(1, -2).join(''))
  const written = filesUnder(tmpdir(), testStart).concat(filesUnder(process.cwd(), testStart, 1))
    .filter(f => { const text = read(f).replace(/\r?\n/g, ''); return bodies.some(b => text.includes(b)) })
  t.same(written, [], `no sidecar key in any file written during the test (under ${tmpdir()} or the working directory)`)
})

t.test('the token file is read again for each request to the CA', async t => {
  const sa = await saTokens(t)
  const ca = await startTestCa(t, { leafTtlMs: LEAF_TTL_MS, k8s: sa.verifier })
  // A service-account token is re-attested at every renewal (unlike a join token), so a token
  // rewritten between two renewals must be the one the CA sees next.
  let pending: { logs: LogLine[], tokenFile: string } | undefined
  const starting = startWorkload(t, { ca, name: 'a', id: A_ID, policy: policyAllowing(B_ID), token: 'not-a-token\n', pending: (p) => { pending = p } })
  await waitFor(() => (pending?.logs.filter(l => l.event === 'identity.renewal_failed').length ?? 0) >= 2, 8000, 'two failed first attempts with the bad token')
  const failed = pending!.logs.filter(l => l.event === 'identity.renewal_failed')
  t.ok(failed.every(l => l.why === 'initial' && l.auth === 'token' && l.code === 'GH_TOKEN_INVALID'), 'the bad token is refused, attempt after attempt')
  t.ok(failed.every(l => !JSON.stringify(l).includes('not-a-token')), 'the token itself is never logged')
  replaceFile(pending!.tokenFile, await sa.mint('a', 'caller', 'caller-pod-1'))
  const a = await Promise.race([starting, sleep(10_000).then(() => { throw new Error('no SVID 10 s after a good token was written') })])
  t.pass('the sidecar started with the token written while it was retrying, without a restart')
  t.match(caIssued(ca.logs, A_ID)[0], { attestation: 'k8s-sa-token', pod: 'a/caller-pod-1' }, 'the CA attested the new token')

  replaceFile(a.tokenFile, await sa.mint('a', 'caller', 'caller-pod-2'))
  await waitFor(() => caIssued(ca.logs, A_ID).length >= 2 && a.events('identity.rotated').length >= 2, 8000, 'a renewal')
  t.match(a.events('identity.rotated')[1], { why: 'renewal', auth: 'token' }, 'a service-account token is used for renewal too')
  t.match(caIssued(ca.logs, A_ID)[1], { attestation: 'k8s-sa-token', pod: 'a/caller-pod-2' }, 'the renewal carried the token rewritten after the first request')

  replaceFile(a.tokenFile, await sa.mint('a', 'caller', 'caller-pod-3'))
  await waitFor(() => caIssued(ca.logs, A_ID).length >= 3 && a.events('identity.rotated').length >= 3, 8000, 'another renewal')
  t.match(caIssued(ca.logs, A_ID)[2], { attestation: 'k8s-sa-token', pod: 'a/caller-pod-3' }, 'and the next one the token rewritten after that')
  t.equal(a.events('identity.renewal_failed').length, failed.length, 'no failure once the token was good')
})

t.test('an SVID for another ID than the expected one is refused: never installed, never ready', async t => {
  const ca = await startTestCa(t, { leafTtlMs: 60_000 })
  const dir = dirname(ca.dir)
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, await ca.joinToken(A_ID), { mode: 0o600 })
  const credentials = new Credentials()
  credentials.setBundle(readFileSync(join(ca.dir, 'bundle.pem'), 'utf8'), undefined, 'bundle.pem')
  const logs = captureLines()
  const failures: string[] = []
  let rotations = 0
  // What startSidecar runs for `ca: { expectedId }` (startSidecar itself only returns once it has an
  // SVID, so it offers no handle to stop a start that can never succeed).
  const rotator = new Rotator({
    url: ca.url,
    credentials,
    caId: 'spiffe://example.org/gatehouse/ca',
    tokenFile,
    expectedId: 'spiffe://example.org/ns/a/sa/someone-else',
    logger: pino({ level: 'debug' }, logs.stream),
    onRotated: () => { rotations++ },
    onFailure: (code) => { failures.push(code) }
  })
  t.teardown(() => { rotator.stop() })
  let started = false
  const starting = rotator.start().then(() => { started = true })
  await waitFor(() => failures.length >= 2, 8000, 'two refused attempts')
  t.equal(failures[0], 'GH_UNEXPECTED_ID', 'the first answer is refused: not the expected ID')
  const line = logs.lines.find(l => l.event === 'identity.renewal_failed')
  t.match(line, { why: 'initial', code: 'GH_UNEXPECTED_ID', reason: /spiffe:\/\/example\.org\/ns\/a\/sa\/caller.*someone-else/ }, 'logged with both IDs')
  t.equal(caIssued(ca.logs, A_ID).length, 1, 'the CA did issue (the token names A)...')
  t.equal(credentials.current, undefined, '...but the certificate was never installed')
  t.notOk(credentials.ready(), 'not ready')
  t.equal(rotations, 0, 'no rotation counted')
  t.notOk(started, 'start() keeps retrying')
  await sleep(300) // a start() that had stopped retrying would have resolved by now
  t.notOk(started, 'still retrying')
  rotator.stop()
  await Promise.race([starting, sleep(2000)])
  t.ok(started, 'stop() ends the retrying start()')
})

t.test('a join-token identity past the maximum renewal-chain age: one error, no loop against the CA, a new join token picked up without a restart', async t => {
  // The CA's renewal-chain clock jumps ahead on demand (leaf validity stays on real time).
  let aheadMs = 0
  const ca = await startTestCa(t, { leafTtlMs: LEAF_TTL_MS, maxRenewalChainAgeMs: 3_600_000, clock: () => new Date(Date.now() + aheadMs) })
  const a = await startWorkload(t, { ca, name: 'a', id: A_ID, policy: policyAllowing(B_ID) })
  await waitFor(() => a.events('identity.rotated').length >= 2, 8000, 'a renewal by SVID')
  t.match(a.events('identity.rotated')[1], { why: 'renewal', auth: 'svid' }, 'within the maximum age the SVID renews')
  // All of them: a replayed join token is refused before it names anyone, and A is this CA's only client.
  const refusedAtCa = (): LogLine[] => ca.logs.filter(l => l.event === 'svid.refused')

  aheadMs = 2 * 3_600_000
  await waitFor(() => a.events('identity.renewal_failed').length >= 2, 10_000, 'the refused renewal and one try of the token file')
  const [expired, spent] = a.events('identity.renewal_failed')
  t.match(expired, { level: 50, why: 'renewal', auth: 'svid', code: 'GH_RENEWAL_CHAIN_EXPIRED', reason: /new join token is needed: gatehouse ca token --spiffe-id/, tokenFile: a.tokenFile, msg: /write a new token to the token file/ }, 'the chain expiry is one error line saying what to do')
  t.match(spent, { level: 40, auth: 'token', code: 'GH_TOKEN_REPLAYED', msg: /waiting for a new one/ }, 'the token file (the spent join token) is tried once')
  t.same(refusedAtCa().map(l => l.code), ['GH_RENEWAL_CHAIN_EXPIRED', 'GH_TOKEN_REPLAYED'], 'the CA refused those two requests')
  await sleep(3000) // a retry loop would have asked the CA again by now (backoff 0.5-3 s)
  t.equal(refusedAtCa().length, 2, 'no further request to the CA while the token file is unchanged')
  t.equal(a.events('identity.renewal_failed').length, 2, 'and no further log line')
  const metrics = await a.metrics()
  t.equal(metricValue(metrics, 'gatehouse_cert_renewal_failures_total', { code: 'GH_RENEWAL_CHAIN_EXPIRED' }), 1, 'counted once by code')

  const rotations = a.events('identity.rotated').length
  replaceFile(a.tokenFile, await ca.joinToken(A_ID))
  await waitFor(() => a.events('identity.rotated').length > rotations, 8000, 'an SVID from the new join token')
  t.match(a.events('identity.rotated')[rotations], { why: 'renewal', auth: 'token', spiffeId: A_ID }, 'the new join token was used, without a restart')
  const rejoined = caIssued(ca.logs, A_ID).at(-1)
  t.match(rejoined, { attestation: 'join-token', origin: 'join-token' }, 'a new chain began at the CA')
  t.ok(Math.abs(Date.parse(rejoined?.chainStartedAt as string) - (Date.now() + aheadMs)) < 10_000, `starting now on the CA's clock (${String(rejoined?.chainStartedAt)})`)
  await waitFor(() => a.events('identity.rotated').length > rotations + 1, 8000, 'a renewal in the new chain')
  t.match(a.events('identity.rotated')[rotations + 1], { why: 'renewal', auth: 'svid' }, 'which renews by SVID again')
  t.equal((await a.readyz()).status, 200, 'ready')
})
