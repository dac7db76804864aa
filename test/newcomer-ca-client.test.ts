import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { cliPath } from './helpers/run-cli.ts'
import { startProcess } from './helpers/process.ts'
import { startCaFixture, postSvid } from './helpers/ca-fixture.ts'
import { startTestCa, saTokens, A_ID } from './helpers/ca-mesh.ts'
import { captureLines } from './helpers/mesh.ts'
import { FILES } from '../src/ca/ca-directory.ts'
import { mintJoinToken } from '../src/ca/join-token.ts'
import { RateLimiter } from '../src/ca/rate-limit.ts'
import { SpiffeId } from '../src/spiffe/id.ts'
import { createCsr } from '../src/x509/csr.ts'
import { generateKey } from '../src/x509/keys.ts'
import { Credentials } from '../src/identity/credentials.ts'
import { Rotator } from '../src/identity/rotator.ts'
import { waitFor } from './helpers/wait.ts'
import { replaceFile, tempDir } from './helpers/files.ts'

// A newcomer's sidecar against a real CA (HTTPS on 127.0.0.1, real processes): re-running the
// README's `gatehouse proxy --ca-url ... --token-file T` with a spent or expired join token exits at
// once with one line naming the code and the command that makes a new token, instead of looping on
// the CA; an unreachable CA is GH_CA_UNREACHABLE (URL and system code), retried until it is back;
// 429 is retried after its Retry-After; a renewal the CA refuses for good keeps the current
// certificate and logs an error saying what to do.

const ID = A_ID
const dir = tempDir(t, 'gh-newcomer-ca-')
const policy = join(dir, 'policy.yaml')
writeFileSync(policy, 'version: 1\nrules: []\n')
const STACK = /\n\s+at /

const proxyArgs = (caUrl: string, caDir: string, tokenFile: string): string[] => [
  'proxy', '--ca-url', caUrl, '--token-file', tokenFile, '--trust-bundle', join(caDir, FILES.bundle), '--policy', policy,
  '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--decision-log-stdout', 'false'
]

const tokenFile = (name: string, token: string): string => { const f = join(dir, name); writeFileSync(f, token, { mode: 0o600 }); return f }

t.test('a spent or expired join token at start: exit 1 with one line naming the code and how to make a new token; the CA is asked once', async t => {
  const f = await startCaFixture(t)
  const spent = await mintJoinToken({ tokenKey: f.ca.tokenKey, trustDomain: f.ca.trustDomain, id: SpiffeId.parse(ID), ttlMs: 600_000 })
  const used = await postSvid(f, { token: spent, csr: createCsr(generateKey('ec-p256').privateKey) })
  t.equal(used.status, 200, 'the join token was used once (the README run the first time)')
  const expired = await mintJoinToken({ tokenKey: f.ca.tokenKey, trustDomain: f.ca.trustDomain, id: SpiffeId.parse(ID), ttlMs: 60_000, now: new Date(Date.now() - 3_600_000) })
  const cases = [
    { what: 'spent', file: tokenFile('spent.token', spent), code: 'GH_TOKEN_REPLAYED', says: /join token has already been used \(join tokens are single-use\)/ },
    { what: 'expired', file: tokenFile('expired.token', expired), code: 'GH_TOKEN_INVALID', says: /token has expired/ }
  ]
  for (const c of cases) {
    const refusedBefore = f.logs().filter(l => l.event === 'svid.refused').length
    const started = Date.now()
    const r = await gatehouseAsync(proxyArgs(f.url, f.dir, c.file), { env: { GATEHOUSE_DEBUG: '0', GATEHOUSE_CONFIG: '' }, timeoutMs: 20_000 })
    const cliLines = r.stderr.split('\n').filter(l => l !== '' && !l.startsWith('{'))
    t.equal(r.status, 1, `${c.what}: exit 1 (after ${Date.now() - started} ms)`)
    t.equal(cliLines.length, 1, `${c.what}: one line besides the JSON log:\n${r.stderr}`)
    const line = cliLines[0] ?? ''
    t.comment(line)
    t.ok(line.startsWith(`gatehouse proxy: ${c.code}: the CA at ${f.url} refused the join token in ${c.file}: `), line)
    t.match(line, c.says, `${c.what}: says what is wrong`)
    t.match(line, `make a new token: gatehouse ca token --dir DIR --spiffe-id ${ID} > ${c.file}`, `${c.what}: says what to do, with the ID the token names`)
    t.notMatch(r.stderr, STACK, 'no stack trace')
    t.notMatch(r.stderr, /identity\.renewal_failed/, 'not logged as a failure to retry')
    const refused = f.logs().filter(l => l.event === 'svid.refused').slice(refusedBefore)
    t.same(refused.map(l => l.code), [c.code], `${c.what}: the CA was asked once, not again and again`)
  }
})

t.test('an unreachable CA at start: GH_CA_UNREACHABLE with the URL and ECONNREFUSED, retried with backoff until the CA is back', async t => {
  const ca = await startTestCa(t, { leafTtlMs: 60_000 })
  const file = tokenFile('unreachable.token', await ca.joinToken(ID))
  await ca.stop()
  const unreachable = /"event":"identity\.renewal_failed"[^\n]*"code":"GH_CA_UNREACHABLE"[^\n]*\n[^\n]*"event":"identity\.renewal_failed"[^\n]*\n/
  const p = await startProcess(t, process.execPath, [cliPath, ...proxyArgs(ca.url, ca.dir, file)], unreachable, { ms: 15_000, env: { GATEHOUSE_CONFIG: '' } })
  const failed = p.output().split('\n').filter(l => l.includes('identity.renewal_failed')).map(l => JSON.parse(l) as Record<string, any>)
  for (const l of failed) {
    t.match(l, { level: 40, why: 'initial', code: 'GH_CA_UNREACHABLE', msg: 'no valid certificate; retrying' }, 'a warning, with the GH_ code')
    t.match(l.reason, `cannot reach the CA at ${ca.url} (ECONNREFUSED`, 'the reason names the URL and the system code')
  }
  t.ok(failed[1]!.retryInMs >= 0.5 * failed[0]!.retryInMs, `backoff: ${failed.map(l => l.retryInMs as number).join(', ')} ms`)
  await ca.restart()
  await waitFor(() => p.output().includes('"event":"identity.rotated"'), 15_000, 'the first SVID once the CA is back')
  t.equal(p.proc.exitCode, null, 'the proxy kept running and got its identity without a restart')
})

t.test('429 at start is retried after Retry-After; a renewal the CA refuses for good keeps the current certificate and logs an error saying what to do', async t => {
  let clock = 0
  const sa = await saTokens(t)
  const f = await startCaFixture(t, { k8s: sa.verifier, leafTtlMs: 4000, limiter: new RateLimiter({ burst: 1, perMinute: 60, now: () => clock }) })
  // The one issuance the bucket holds for ID goes to another request first.
  const first = await postSvid(f, { token: await mintJoinToken({ tokenKey: f.ca.tokenKey, trustDomain: f.ca.trustDomain, id: SpiffeId.parse(ID), ttlMs: 600_000 }), csr: createCsr(generateKey('ec-p256').privateKey) })
  t.equal(first.status, 200)
  const file = tokenFile('sa.token', await sa.mint('a', 'caller', 'caller-pod'))
  const credentials = new Credentials()
  credentials.setBundle(f.ca.bundlePem, undefined, 'bundle.pem')
  const logs = captureLines()
  const rotator = new Rotator({
    url: f.url, credentials, caId: 'spiffe://example.org/gatehouse/ca', tokenFile: file, logger: pino({ level: 'debug' }, logs.stream), random: () => 0,
    onFailure: (code) => { if (code === 'GH_RATE_LIMITED') clock += 1000 } // the bucket refills while the rotator waits
  })
  t.teardown(() => { rotator.stop() })
  await rotator.start()
  const [limited] = logs.lines.filter(l => l.event === 'identity.renewal_failed')
  t.match(limited, { level: 40, why: 'initial', code: 'GH_RATE_LIMITED', retryInMs: 1000 }, 'rate limited: retried after the CA\'s Retry-After (1 s), not the 0.5 s backoff')
  const installed = credentials.current!
  t.equal(installed.id.toString(), ID, 'then issued')

  // The service-account token is replaced by one the CA cannot verify (another cluster's signer).
  const other = await saTokens(t)
  replaceFile(file, await other.mint('a', 'caller', 'caller-pod'))
  await waitFor(() => logs.lines.some(l => l.event === 'identity.renewal_failed' && l.why === 'renewal'), 8000, 'a refused renewal')
  const refused = logs.lines.find(l => l.event === 'identity.renewal_failed' && l.why === 'renewal')
  t.match(refused, { level: 50, auth: 'token', code: 'GH_TOKEN_INVALID', reason: /not in the JWKS/, msg: 'the CA refused to renew this identity; still serving with the current certificate until it expires', whatToDo: /audience must be gatehouse-ca/ }, 'an error line, with what to do')
  t.equal(credentials.current, installed, 'the current certificate is kept')
  t.ok(credentials.ready(), 'and still ready (it has not expired)')
})
