import t from 'tap'
import { join, basename } from 'node:path'
import { readdirSync, statSync, renameSync, writeFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { decodeProtectedHeader } from 'jose'
import { startMesh } from './helpers/mesh.ts'
import { readLines, parse, sha256, verifyJson, verifyInProcess, stopOnce } from './helpers/audit-log.ts'
import { waitFor } from './helpers/wait.ts'
import { tempDir } from './helpers/files.ts'

// The decision-log chain survives rotation of both kinds: the file rotated by size (FILE.000001,
// FILE.000002, ... then FILE, checked together in any order, with a missing file reported), and the
// sidecar's identity rotated while it writes (checkpoints switch to the new key and certificate,
// and the whole log still verifies, naming both certificates).

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const SERVER = 'spiffe://example.org/ns/server/sa/payments'
const MAX_BYTES = 6000

function shuffled<T> (xs: readonly T[]): T[] {
  const out = [...xs]
  // Deterministic: reversed, then the first two swapped, so no file stays where sorting would put it.
  out.reverse()
  if (out.length > 2) [out[0], out[1]] = [out[1]!, out[0]!]
  return out
}

t.test('size rotation: the chain runs across FILE.000001.. and FILE; a missing file is removed lines', async t => {
  const dir = tempDir(t)
  const logFile = join(dir, 'decisions.log')
  const mesh = await startMesh(t, { sidecar: { decisionLogFile: logFile, decisionLogStdout: false, decisionLogMaxBytes: MAX_BYTES, checkpointEvery: 5 } })
  for (let i = 0; i < 40; i++) {
    const res = await mesh.request(`/v1/items/${i}`, { headers: { 'x-request-id': `rot-${i}` } })
    t.equal(res.status, 200, `request ${i}`)
  }
  await stopOnce(mesh.sidecar)

  const rotated = readdirSync(dir).filter(f => /^decisions\.log\.\d{6}$/.test(f)).sort()
  t.ok(rotated.length >= 3, `the log spans several files (${rotated.length} rotated + the current one)`)
  t.same(rotated, rotated.map((_, i) => `decisions.log.${String(i + 1).padStart(6, '0')}`), 'rotated files are numbered 000001.. without gaps')
  // Oldest first: FILE.000001 holds the genesis line, FILE the newest lines.
  const ordered = [...rotated.map(f => join(dir, f)), logFile]
  for (const f of ordered) {
    const lines = readLines(f)
    const size = statSync(f).size
    t.ok(size <= MAX_BYTES || lines.length === 1, `${basename(f)}: ${size} bytes, within ${MAX_BYTES} (or a single long line)`)
  }
  const all = ordered.flatMap(f => readLines(f))
  t.same(all.map(l => parse(l).seq), all.map((_, i) => i + 1), 'read oldest to newest, seq runs 1..n across the files')
  t.equal(parse(all[0]!).msg, 'genesis', 'the first rotated file starts with the genesis line')
  t.equal(parse(all.at(-1)!).msg, 'checkpoint', 'the current file ends with the final checkpoint')
  for (let k = 1; k < ordered.length; k++) {
    const prevLast = readLines(ordered[k - 1]!).at(-1)!
    const first = readLines(ordered[k]!)[0]!
    t.equal(parse(first).prev, sha256(prevLast), `${basename(ordered[k]!)} continues the chain of ${basename(ordered[k - 1]!)}`)
  }
  t.equal(all.filter(l => parse(l).msg === 'decision').length, 40, 'one decision line per request across the files')

  const given = shuffled(ordered)
  t.not(given.join(), ordered.join(), 'files are given out of order')
  const ok = verifyJson(given, mesh.pki.bundleFile)
  t.equal(ok.status, 0, 'audit verify on every file (shuffled): exit 0')
  t.match(ok.report, { ok: true, lines: all.length, writer: SERVER, verifiedThrough: all.length })

  // One file missing from the middle: the lines it held are reported removed, where the next file starts.
  const middle = ordered[Math.floor(ordered.length / 2)]!
  const after = ordered[ordered.indexOf(middle) + 1]!
  const firstAfter = parse(readLines(after)[0]!).seq
  const firstMissing = parse(readLines(middle)[0]!).seq
  const missing = verifyJson(given.filter(f => f !== middle), mesh.pki.bundleFile)
  t.equal(missing.status, 4, `${basename(middle)} left out: exit 4 (GAP)`)
  t.match(missing.report.break, { kind: 'removed', seq: firstAfter, file: after, line: 1 }, 'reported as removed lines at the start of the next file')
  t.match(missing.report.break?.message, `seq ${firstMissing}..${firstAfter - 1} missing before seq ${firstAfter}`)

  // The oldest file rotated away, as a kubelet or logrotate does: the genesis is gone, and what is
  // left verifies from its first checkpoint on (exit 8 only if the auditor demands the genesis).
  const headless = await verifyInProcess(ordered.slice(1), mesh.pki.bundleFile)
  const firstKept = parse(readLines(ordered[1]!)[0]!).seq
  t.equal(headless.status, 0, `oldest file left out: exit 0 (${JSON.stringify(headless.report.break ?? null)})`)
  t.match(headless.report.chains, [{ verdict: 'VERIFIED', genesis: false, firstSeq: firstKept, verifiedFrom: firstKept, writer: SERVER }], `verified from seq ${firstKept}, the first line kept`)
  t.equal((await verifyInProcess(ordered.slice(1), mesh.pki.bundleFile, { requireGenesis: true })).status, 8, 'with --require-genesis: exit 8')

  // The same file given twice: its lines come round again.
  const twice = await verifyInProcess([...ordered, middle], mesh.pki.bundleFile)
  t.equal(twice.status, 5, 'a file given twice: exit 5 (REORDERED)')
  t.match(twice.report.break, { kind: 'inserted-or-reordered' })
})

t.test('identity rotation: checkpoints after the rotation carry the new certificate, and the log verifies', async t => {
  const dir = tempDir(t)
  const logFile = join(dir, 'decisions.log')
  const mesh = await startMesh(t, { sidecar: { decisionLogFile: logFile, decisionLogStdout: false, checkpointEvery: 5 } })
  const oldSerial = mesh.sidecar.credentials.current!.leaf.serialHex
  for (let i = 0; i < 12; i++) t.equal((await mesh.request(`/before/${i}`)).status, 200)

  // New key and certificate for the same identity (key first, then certificate; each renamed into place).
  const fresh = mesh.pki.issue('/ns/server/sa/payments', 'server-next', 2 * 3_600_000)
  const newSerial = new X509Certificate(fresh.chainPem).serialNumber.toLowerCase()
  for (const [file, content] of [[mesh.server.key, fresh.keyPem], [mesh.server.cert, fresh.chainPem]] as const) {
    writeFileSync(`${file}.tmp`, content, { mode: 0o600 })
    renameSync(`${file}.tmp`, file)
  }
  await waitFor(() => mesh.sidecar.credentials.current?.leaf.serialHex === newSerial, 10_000, 'the new certificate to be loaded')
  t.not(newSerial, oldSerial, 'a new serial is loaded')
  for (let i = 0; i < 12; i++) t.equal((await mesh.request(`/after/${i}`)).status, 200)
  await stopOnce(mesh.sidecar)

  const recs = readLines(logFile).map(parse)
  const leafSerial = (x5c: unknown): string => new X509Certificate(Buffer.from((x5c as string[])[0]!, 'base64')).serialNumber.toLowerCase()
  t.equal(leafSerial(recs[0]!.x5c), oldSerial, 'the genesis line names the certificate at start')
  const checkpoints = recs.filter(r => r.msg === 'checkpoint').map(r => ({ seq: r.seq, covers: r.covers as number, serial: leafSerial(decodeProtectedHeader(r.jws as string).x5c) }))
  const firstAfter = recs.find(r => r.msg === 'decision' && String(r.path).startsWith('/after/'))!.seq
  const lastBefore = recs.findLast(r => r.msg === 'decision' && String(r.path).startsWith('/before/'))!.seq
  t.ok(checkpoints.filter(c => c.covers <= lastBefore).length >= 2, 'checkpoints before the rotation')
  t.ok(checkpoints.filter(c => c.covers <= lastBefore).every(c => c.serial === oldSerial), 'checkpoints before the rotation carry the old leaf')
  const afterRotation = checkpoints.filter(c => c.covers >= firstAfter)
  t.ok(afterRotation.length >= 2, `checkpoints after the rotation (${afterRotation.length})`)
  t.ok(afterRotation.every(c => c.serial === newSerial), 'every checkpoint after the rotation carries the new leaf')

  const r = verifyJson([logFile], mesh.pki.bundleFile)
  t.equal(r.status, 0, 'audit verify: exit 0 across the rotation')
  t.match(r.report, { ok: true, writer: SERVER, checkpoints: checkpoints.length })
  t.same([...r.report.signers].sort(), [`${SERVER} (${newSerial})`, `${SERVER} (${oldSerial})`].sort(), 'signers: one identity, two certificates')
  t.ok(mesh.decisions.every(d => d.caller === CLIENT), 'all requests from the client')
})

t.test('--decision-log-max-files: only the newest rotated files are kept; what is left verifies from its first checkpoint', async t => {
  const dir = tempDir(t)
  const logFile = join(dir, 'decisions.log')
  const mesh = await startMesh(t, { sidecar: { decisionLogFile: logFile, decisionLogStdout: false, decisionLogMaxBytes: MAX_BYTES, decisionLogMaxFiles: 2, checkpointEvery: 5 } })
  for (let i = 0; i < 40; i++) t.equal((await mesh.request(`/v1/items/${i}`)).status, 200)
  await stopOnce(mesh.sidecar)
  const rotated = readdirSync(dir).filter(f => /^decisions\.log\.\d{6}$/.test(f)).sort()
  t.equal(rotated.length, 2, `two rotated files kept: ${rotated.join(', ')}`)
  t.notOk(rotated.includes('decisions.log.000001'), 'the oldest went')
  const { status, report } = await verifyInProcess([...rotated.map(f => join(dir, f)), logFile], mesh.pki.bundleFile)
  t.equal(status, 0, `the kept files verify from their first checkpoint: ${report.verdict}`)
})
