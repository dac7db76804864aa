import t from 'tap'
import { join } from 'node:path'
import { writeFileSync } from 'node:fs'
import { spawn, type ChildProcess } from 'node:child_process'
import { Agent, request as undiciRequest } from 'undici'
import { startMesh, startApp, Pki, type SvidFiles } from './helpers/mesh.ts'
import { cliPath } from './helpers/run-cli.ts'
import { readLines, writeLines, parse, sha256, verifyJson, verifyInProcess, stopOnce, signerFrom, decisionFields } from './helpers/audit-log.ts'
import { signCheckpoint } from '../src/audit/checkpoint.ts'
import { DecisionLog } from '../src/audit/record.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// No decision line is lost: under concurrent load followed by an immediate stop, and in the real
// CLI process on SIGTERM (with stdout a pipe nobody reads until after the signal, i.e. full), every
// request that was answered has exactly one line, in the file and on stdout, and the file ends with
// a checkpoint that verifies.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const SERVER = 'spiffe://example.org/ns/server/sa/payments'
const N = 300

const idsIn = (lines: readonly string[]): string[] => lines.map(parse).filter(r => r.msg === 'decision').map(r => r.requestId as string)

function countDuplicates (ids: readonly string[]): number {
  return ids.length - new Set(ids).size
}

t.test('in-process sidecar: N concurrent requests, then stop(): one line each, ending in a checkpoint', async t => {
  const dir = tempDir(t)
  const logFile = join(dir, 'decisions.log')
  const mesh = await startMesh(t, {
    policy: `version: 1\nrules:\n  - name: reads\n    from: ["${CLIENT}"]\n    methods: [GET]\n`,
    sidecar: { decisionLogFile: logFile, decisionLogStdout: false, checkpointEvery: 64 }
  })
  const results = await Promise.all(Array.from({ length: N }, async (_, i) => {
    const res = await mesh.request(`/load/${i}`, { method: i % 4 === 0 ? 'POST' : 'GET', headers: { 'x-request-id': `load-${i}` }, ...(i % 4 === 0 ? { body: 'x' } : {}) })
    return res.status
  }))
  t.equal(results.filter(s => s === 200).length, N - N / 4, 'GETs allowed')
  t.equal(results.filter(s => s === 403).length, N / 4, 'POSTs denied')

  // A second wave still in flight when stop() is called: whatever was answered must be logged.
  let answeredSoFar = 0
  const wave = Array.from({ length: 100 }, async (_, i) => {
    try {
      const status = (await mesh.request(`/late/${i}`, { headers: { 'x-request-id': `late-${i}` } })).status
      answeredSoFar++
      return { id: `late-${i}`, status }
    } catch { return { id: `late-${i}`, status: 0 } }
  })
  await waitFor(() => answeredSoFar >= 10, 10_000, 'the second wave to get going')
  await stopOnce(mesh.sidecar, 2000)
  const late = await Promise.all(wave)

  const raw = readLines(logFile)
  const ids = idsIn(raw)
  const expected = Array.from({ length: N }, (_, i) => `load-${i}`)
  const seen = new Set(ids)
  t.same(expected.filter(id => !seen.has(id)), [], `every one of the ${N} requests has its decision line`)
  t.equal(countDuplicates(ids), 0, 'no request has two lines')
  const answered = late.filter(r => r.status !== 0).map(r => r.id)
  t.same(answered.filter(id => !seen.has(id)), [], `every request answered during shutdown has its line (${answered.length} of 100 answered)`)
  t.equal(ids.filter(id => !id.startsWith('load-') && !id.startsWith('late-')).length, 0, 'no other decision lines')
  t.equal(parse(raw.at(-1)!).msg, 'checkpoint', 'the file ends with a checkpoint')
  t.equal(parse(raw.at(-1)!).covers, raw.length - 1, 'which covers the last decision line')
  const r = await verifyInProcess([logFile], mesh.pki.bundleFile)
  t.equal(r.status, 0, 'and the log verifies')
})

t.test('close() while checkpoints are still being signed: every line, and the log ends fully verified', async t => {
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const svid = pki.issue('/ns/server/sa/payments', 'server')
  const logFile = join(dir, 'decisions.log')
  const log = new DecisionLog({ stdout: false, file: logFile, checkpointEvery: 3, signer: () => signerFrom(svid, SERVER) })
  // A synchronous burst: every checkpoint it triggers is still being signed when close() is called,
  // so they all land after the burst, covering lines well before them.
  for (let i = 0; i < 50; i++) {
    log.write(decisionFields(`burst-${i}`, CLIENT, SERVER))
  }
  await log.close()
  const raw = readLines(logFile)
  t.same(idsIn(raw), Array.from({ length: 50 }, (_, i) => `burst-${i}`), 'every line, in order')
  const last = parse(raw.at(-1)!)
  t.equal(last.msg, 'checkpoint', 'the log ends with a checkpoint')
  t.equal(last.covers, raw.length - 1, 'covering the line just before it')
  const r = await verifyInProcess([logFile], pki.bundleFile)
  t.equal(r.status, 0, 'verified: no unverified tail of checkpoint lines')
  t.equal(r.report.verifiedThrough, raw.length)
})

t.test('checkpoints back to back: the writer skips an empty one, and the verifier accepts one that vouches for a checkpoint', async t => {
  // Regression: the demo's on-demand checkpoint right after a timer checkpoint made `audit verify`
  // report a genuine log as TAMPERED ("vouches for seq N with a hash that line does not have").
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const svid = pki.issue('/ns/server/sa/payments', 'server')
  const signer = signerFrom(svid, SERVER)
  const logFile = join(dir, 'decisions.log')
  const log = new DecisionLog({ stdout: false, file: logFile, checkpointEvery: 1000, signer: () => signer })
  log.write(decisionFields('one', CLIENT, SERVER))
  await log.checkpoint()
  await log.checkpoint()
  await log.close()
  const raw = readLines(logFile)
  t.same(raw.map(l => parse(l).msg), ['genesis', 'decision', 'checkpoint'], 'a second checkpoint with nothing new is not written')

  // A log from a writer that did sign one checkpoint over another (older builds, other writers):
  // it is genuine, so it must verify.
  const last = parse(raw.at(-1)!)
  const hash = sha256(raw.at(-1)!)
  const extra = JSON.stringify({ level: 30, time: last.time, chain: last.chain, seq: last.seq + 1, prev: hash, covers: last.seq, jws: signCheckpoint(signer, { iss: signer.spiffeId, seq: last.seq, hash, iat: Math.floor(Date.now() / 1000) }), msg: 'checkpoint' })
  writeLines(logFile, [...raw, extra])
  const r = await verifyInProcess([logFile], pki.bundleFile)
  t.equal(r.status, 0, `verified (${JSON.stringify(r.report.break ?? r.report.unverifiedTail ?? null)})`)
  t.equal(r.report.verifiedThrough, raw.length + 1)
})

interface Child { proc: ChildProcess, stdout: () => string, stderr: () => string, exited: Promise<number | null> }

function startProxy (args: string[]): Child {
  const proc = spawn(process.execPath, [cliPath, 'proxy', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  proc.stdout!.setEncoding('utf8')
  proc.stderr!.setEncoding('utf8')
  proc.stdout!.on('data', (c: string) => { out += c })
  proc.stderr!.on('data', (c: string) => { err += c })
  const exited = new Promise<number | null>(resolve => proc.once('exit', code => { resolve(code) }))
  return { proc, stdout: () => out, stderr: () => err, exited }
}

async function listeningPort (child: Child): Promise<number> {
  let port: number | undefined
  await waitFor(() => {
    for (const line of child.stderr().split('\n')) {
      if (!line.includes('"inbound.listening"')) continue
      port = (JSON.parse(line) as { port: number }).port
    }
    return port !== undefined || child.proc.exitCode !== null
  }, 20_000, 'the proxy to listen')
  if (port === undefined) throw new Error(`proxy exited: ${child.stderr()}`)
  return port
}

t.test('gatehouse proxy process: SIGTERM with a full stdout pipe loses no line, and the file verifies', async t => {
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const app = await startApp(t)
  const server = pki.issue('/ns/server/sa/payments', 'server')
  const client: SvidFiles = pki.issue('/ns/client/sa/caller', 'client')
  const policyFile = join(dir, 'policy.yaml')
  writeFileSync(policyFile, `version: 1\nrules:\n  - name: reads\n    from: ["${CLIENT}"]\n    methods: [GET]\n    paths: ["/ok/**"]\n`)
  const logFile = join(dir, 'decisions.log')
  const child = startProxy([
    '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--outbound', '127.0.0.1:0',
    '--upstream', `127.0.0.1:${app.port}`, '--policy', policyFile, '--trust-bundle', pki.bundleFile,
    '--cert', server.cert, '--key', server.key, '--decision-log', logFile, '--checkpoint-every', '50'
  ])
  t.teardown(async () => { if (child.proc.exitCode === null) { child.proc.kill('SIGKILL'); await child.exited } })
  const port = await listeningPort(child)

  const agent = new Agent({ connect: { ca: pki.ca.bundlePem, cert: client.chainPem, key: client.keyPem, checkServerIdentity: () => undefined } })
  t.teardown(async () => { await agent.destroy() })
  // Long paths make long lines, so the stdout pipe (not read from here on) fills up.
  child.proc.stdout!.pause()
  const pad = 'p'.repeat(3000)
  const statuses = await Promise.all(Array.from({ length: N }, async (_, i) => {
    const path = i % 5 === 0 ? `/denied/${i}/${pad}` : `/ok/${i}/${pad}`
    const res = await undiciRequest(`https://127.0.0.1:${port}${path}`, { headers: { 'x-request-id': `cli-${i}` }, dispatcher: agent })
    await res.body.dump()
    return res.statusCode
  }))
  t.equal(statuses.filter(s => s === 200).length, N - N / 5, 'allowed requests answered 200')
  t.equal(statuses.filter(s => s === 403).length, N / 5, 'denied requests answered 403')
  t.ok(child.stdout().length < N * 3000, `stdout not (fully) read before SIGTERM (${child.stdout().length} bytes read so far)`)

  await agent.close()
  child.proc.kill('SIGTERM')
  // Let the proxy reach its shutdown with stdout still full, then start reading again.
  await new Promise(resolve => setTimeout(resolve, 500))
  child.proc.stdout!.resume()
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([child.exited, new Promise<'hung'>(resolve => { timer = setTimeout(() => { resolve('hung') }, 30_000) })])
  clearTimeout(timer)
  t.equal(code, 0, 'the proxy drains and exits 0 on SIGTERM')
  t.match(child.stderr(), /SIGTERM, draining/)

  const expected = Array.from({ length: N }, (_, i) => `cli-${i}`)
  const fileLines = readLines(logFile)
  const fileIds = new Set(idsIn(fileLines))
  t.same(expected.filter(id => !fileIds.has(id)), [], 'decision-log file: every request has its line')
  t.equal(countDuplicates(idsIn(fileLines)), 0, 'decision-log file: no duplicates')
  t.equal(parse(fileLines.at(-1)!).msg, 'checkpoint', 'the file ends with the checkpoint written on SIGTERM')

  const stdoutLines = child.stdout().split('\n').filter(l => l !== '')
  const stdoutIds = new Set(idsIn(stdoutLines))
  t.same(expected.filter(id => !stdoutIds.has(id)), [], 'stdout (a full pipe at SIGTERM): every request has its line')
  const firstDiff = stdoutLines.findIndex((l, i) => l !== fileLines[i])
  t.equal(stdoutLines.length, fileLines.length, 'stdout has as many lines as the file')
  t.equal(firstDiff, -1, 'stdout carries exactly the lines of the file, in order')

  const v = verifyJson([logFile], pki.bundleFile)
  t.equal(v.status, 0, `audit verify on the file: exit 0 (${JSON.stringify(v.report.break ?? v.report.unverifiedTail ?? null)})`)
  t.match(v.report, { ok: true, writer: 'spiffe://example.org/ns/server/sa/payments', verifiedThrough: fileLines.length })
})
