import t, { type Test } from 'tap'
import { join } from 'node:path'
import { startMesh, Pki } from './helpers/mesh.ts'
import { readLines, writeLines, parse, rechain, okReadsPolicy, signerFrom, decisionFields, verifyJson, verifyText, verifyInProcess, stopOnce, type LogRecord } from './helpers/audit-log.ts'
import { signCheckpoint, type CheckpointPayload, type Signer } from '../src/audit/checkpoint.ts'
import { DecisionLog } from '../src/audit/record.ts'
import { VERDICT_EXIT, BREAK_VERDICT, type BreakKind } from '../src/audit/verify.ts'
import { gatehouse } from './helpers/cli.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse audit verify` on a decision log written by a real sidecar: the untouched log verifies
// (exit 0); each way of tampering with it is reported as the right kind of break at the right seq
// (exit 1); a log whose last checkpoint is gone is intact but unverified (exit 3), never "valid".

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const SERVER = 'spiffe://example.org/ns/server/sa/payments'
const REQUESTS = 100
const EVERY = 5

t.test('audit verify: a real log verifies; every kind of tampering is caught and named', async t => {
  const dir = tempDir(t)
  const logFile = join(dir, 'decisions.log')
  const mesh = await startMesh(t, {
    policy: okReadsPolicy(CLIENT),
    sidecar: { decisionLogFile: logFile, decisionLogStdout: false, checkpointEvery: EVERY }
  })
  const bundle = mesh.pki.bundleFile

  // Enough lines that a rewritten chain runs past what the genesis cadence allows without a checkpoint.
  let allowed = 0
  let denied = 0
  for (let i = 0; i < REQUESTS; i++) {
    const res = await mesh.request(i % 3 === 0 ? `/secret/${i}` : `/ok/${i}`, { headers: { 'x-request-id': `req-${i}` } })
    if (res.status === 200) allowed++
    if (res.status === 403) denied++
  }
  t.equal(allowed + denied, REQUESTS, 'every request was answered 200 or 403')
  t.ok(allowed > 0 && denied > 0, `both allowed (${allowed}) and denied (${denied}) requests`)
  await stopOnce(mesh.sidecar)

  const raw = readLines(logFile)
  const recs = raw.map(parse)
  const decisions = recs.filter(r => r.msg === 'decision')
  const checkpointIdx = recs.flatMap((r, i) => r.msg === 'checkpoint' ? [i] : [])
  t.equal(decisions.length, REQUESTS, 'one decision line per request in the file')
  t.match(recs[0], { msg: 'genesis', seq: 1, spiffeId: SERVER, checkpointEvery: EVERY })
  t.equal(recs.at(-1)?.msg, 'checkpoint', 'the log ends with the checkpoint written on stop')
  t.ok(checkpointIdx.length >= REQUESTS / EVERY, `a checkpoint at least every ${EVERY} decisions (${checkpointIdx.length})`)
  t.same(recs.map(r => r.seq), recs.map((_, i) => i + 1), 'seq runs 1..n')

  const original = verifyJson([logFile], bundle)
  t.equal(original.status, 0, 'the untouched log: exit 0')
  t.match(original.report, { ok: true, lines: raw.length, writer: SERVER, checkpoints: checkpointIdx.length, verifiedThrough: raw.length })
  t.notOk(original.report.break, 'no break')
  t.notOk(original.report.unverifiedTail, 'no unverified tail')
  t.equal(original.report.signers.length, 1, 'one signer (one certificate)')
  t.match(original.report.signers[0], new RegExp(`^${SERVER} \\([0-9a-f]+\\)$`))
  const text = verifyText([logFile], bundle)
  t.equal(text.status, 0)
  t.match(text.stdout, /^VERIFIED: /, 'text report: VERIFIED')

  let n = 0
  const tampered = (lines: readonly string[]): string => {
    const file = join(dir, `tampered-${++n}.log`)
    writeLines(file, lines)
    return file
  }
  const seqAt = (i: number): number => recs[i]!.seq
  /** Index of a decision line (matching `pred`) that is followed by a decision line, away from the edges. */
  const decisionIdx = (pred: (r: LogRecord) => boolean, from = 10): number => {
    const i = recs.findIndex((r, j) => j >= from && r.msg === 'decision' && pred(r) && (recs[j + 1]?.msg === 'decision' || recs[j + 1]?.msg === 'admit'))
    if (i === -1) throw new Error('no suitable decision line in the log')
    return i
  }
  /**
   * Verifies a tampered copy and checks the break. The first case of each kind goes through the CLI
   * (exit status and --format json); further variants call verifyLog, which is what the CLI runs.
   */
  const expectBreak = async (t: Test, what: string, lines: readonly string[], kind: string, seq: number | null, message?: RegExp, via: 'cli' | 'lib' = 'lib'): Promise<void> => {
    const file = tampered(lines)
    const { status, report } = via === 'cli' ? verifyJson([file], bundle) : await verifyInProcess([file], bundle)
    const exit = VERDICT_EXIT[BREAK_VERDICT[kind as BreakKind]]
    t.equal(status, exit, `${what}: exit ${exit} (${via})`)
    t.equal(report.ok, false, `${what}: not ok`)
    t.match(report.break, { kind, seq, file }, `${what}: reported as ${kind} at seq ${String(seq)}`)
    if (message !== undefined) t.match(report.break?.message, message, `${what}: message ${String(message)}`)
    if (seq !== null && kind !== 'inserted-or-reordered') {
      const lineNo = lines.findIndex(l => parse(l).seq === seq) + 1
      t.equal(report.break?.line, lineNo, `${what}: points at line ${lineNo} of the file`)
    }
  }

  await t.test('a removed decision line', async t => {
    const i = decisionIdx(() => true)
    await expectBreak(t, 'removed line', raw.filter((_, j) => j !== i), 'removed', seqAt(i) + 1, new RegExp(`seq ${seqAt(i)} missing before seq ${seqAt(i) + 1}: 1 line\\(s\\) removed`), 'cli')
    // Several consecutive lines (a checkpoint among them): still "removed", with the count.
    const j = checkpointIdx[3]!
    await expectBreak(t, 'three lines removed around a checkpoint', raw.filter((_, k) => k < j - 1 || k > j + 1), 'removed', seqAt(j + 2), new RegExp(`seq ${seqAt(j - 1)}\\.\\.${seqAt(j + 1)} missing.*3 line\\(s\\) removed`))
    t.end()
  })

  await t.test('an inserted line (a copy of another line)', async t => {
    const i = decisionIdx(() => true, 20)
    // A copy of an earlier line, inserted after line i.
    const copyOfEarlier = [...raw.slice(0, i + 1), raw[5]!, ...raw.slice(i + 1)]
    await expectBreak(t, 'copy of an earlier line inserted', copyOfEarlier, 'inserted-or-reordered', seqAt(5), /inserted or lines were reordered/, 'cli')
    // A replayed line right after itself.
    const duplicated = [...raw.slice(0, i + 1), raw[i]!, ...raw.slice(i + 1)]
    await expectBreak(t, 'a line duplicated', duplicated, 'inserted-or-reordered', seqAt(i), /inserted or lines were reordered/)
    // A copy of a later line, inserted early: the missing seq is still in the file, so not "removed".
    const copyOfLater = [...raw.slice(0, 10), raw[40]!, ...raw.slice(10)]
    await expectBreak(t, 'copy of a later line inserted early', copyOfLater, 'inserted-or-reordered', seqAt(40), /inserted or lines were reordered/)
    t.end()
  })

  await t.test('an edited decision line (status changed)', async t => {
    const i = decisionIdx(r => r.status === 403)
    const edited = [...raw]
    edited[i] = raw[i]!.replace('"status":403', '"status":200')
    t.not(edited[i], raw[i], 'the line was changed')
    await expectBreak(t, '403 edited to 200', edited, 'edited', seqAt(i) + 1, new RegExp(`seq ${seqAt(i)} was edited`), 'cli')
    // An edit that keeps valid JSON and the same seq/prev, in the very line a checkpoint covers.
    const c = checkpointIdx[2]!
    const covered = recs[c]!.covers as number
    const k = recs.findIndex(r => r.seq === covered)
    const edited2 = [...raw]
    edited2[k] = raw[k]!.replace(/"requestId":"[^"]+"/, '"requestId":"forged"')
    await expectBreak(t, 'the covered line edited', edited2, 'edited', covered + 1, new RegExp(`seq ${covered} was edited`))
    // A line that is no longer JSON at all.
    const garbled = [...raw]
    garbled[i] = raw[i]!.slice(0, 40)
    const file = tampered(garbled)
    const { status, report } = verifyJson([file], bundle)
    t.equal(status, 1, 'garbled line: exit 1')
    t.match(report.break, { kind: 'not-json', line: i + 1 }, 'garbled line: not-json at its line number')
    t.end()
  })

  await t.test('two lines reordered', async t => {
    const i = decisionIdx(() => true)
    const swapped = [...raw]
    swapped[i] = raw[i + 1]!
    swapped[i + 1] = raw[i]!
    await expectBreak(t, 'adjacent lines swapped', swapped, 'inserted-or-reordered', seqAt(i + 1), /reordered/, 'cli')
    // A line moved several places later.
    const moved = [...raw.slice(0, i), ...raw.slice(i + 1, i + 4), raw[i]!, ...raw.slice(i + 4)]
    await expectBreak(t, 'a line moved three places later', moved, 'inserted-or-reordered', seqAt(i + 1), /reordered/)
    t.end()
  })

  await t.test('a forged checkpoint', async t => {
    const c1 = checkpointIdx[1]!
    const c2 = checkpointIdx[4]!
    const cp = recs[c2]!
    const withJws = (jws: string): string[] => {
      const out = [...raw]
      out[c2] = raw[c2]!.replace(cp.jws as string, jws)
      if (out[c2] === raw[c2]) throw new Error('jws not replaced')
      return out
    }
    const payloadOf = (jws: string): CheckpointPayload => JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as CheckpointPayload
    const genuine = payloadOf(cp.jws as string)
    t.match(genuine, { iss: SERVER, seq: cp.covers, hash: /^[0-9a-f]{64}$/ }, 'a genuine checkpoint payload names the writer, seq and hash')

    // The signature of another (genuine) checkpoint, copied in.
    await expectBreak(t, 'another checkpoint\'s JWS', withJws(recs[c1]!.jws as string), 'forged-checkpoint', cp.seq, /vouches for seq \d+ with a hash that line does not have/, 'cli')

    // The payload swapped under the original signature.
    const [h, , s] = (cp.jws as string).split('.')
    const altered = Buffer.from(JSON.stringify({ ...genuine, seq: genuine.seq - 1 })).toString('base64url')
    await expectBreak(t, 'payload changed under the signature', withJws(`${h!}.${altered}.${s!}`), 'forged-checkpoint', cp.seq, /does not verify/)

    // Re-signed, for the same SPIFFE ID, by a key certified by another CA (same trust domain name).
    const stranger = new Pki(tempDir(t), 'example.org')
    const strangerSvid = stranger.issue('/ns/server/sa/payments', 'stranger-server')
    const resigned = await signCheckpoint(signerFrom(strangerSvid, SERVER), genuine)
    // A good signature by a certificate the bundle does not vouch for: UNTRUSTED, not TAMPERED (the
    // same as the auditor holding the wrong bundle), and never VERIFIED.
    await expectBreak(t, 're-signed by another CA', withJws(resigned), 'untrusted-signer', cp.seq, /trust bundle does not vouch for \(certificate [0-9a-f]+ is not signed by an authority/, 'cli')

    // Another trust domain altogether.
    const foreign = new Pki(tempDir(t), 'evil.example')
    const foreignId = 'spiffe://evil.example/ns/server/sa/payments'
    const foreignJws = await signCheckpoint(signerFrom(foreign.issue('/ns/server/sa/payments', 'foreign-server'), foreignId), { ...genuine, iss: foreignId })
    await expectBreak(t, 'signed in another trust domain', withJws(foreignJws), 'untrusted-signer', cp.seq, /no trust bundle for trust domain evil.example/)

    // Trusted by the bundle, but not the writer the genesis line names.
    const other = mesh.pki.issue('/ns/client/sa/caller', 'checkpoint-other-id')
    const byOther = await signCheckpoint(signerFrom(other, CLIENT), { ...genuine, iss: CLIENT })
    await expectBreak(t, 'signed by another SPIFFE ID', withJws(byOther), 'forged-checkpoint', cp.seq, new RegExp(`signed by ${CLIENT}, but the log was started by ${SERVER}`), 'cli')
    const claimsWriter = await signCheckpoint(signerFrom(other, SERVER), genuine)
    await expectBreak(t, 'claims the writer, signed by another ID', withJws(claimsWriter), 'forged-checkpoint', cp.seq, new RegExp(`names ${SERVER} but is signed by ${CLIENT}`))

    // The writer's own key, vouching for a hash the covered line does not have.
    const own = signerFrom(mesh.server, SERVER)
    const wrongHash = await signCheckpoint(own, { ...genuine, hash: 'f'.repeat(64) })
    await expectBreak(t, 'right key, wrong hash', withJws(wrongHash), 'forged-checkpoint', cp.seq, /with a hash that line does not have/)
    // The writer's own key re-signing the final checkpoint's payload verifies: only a stolen key can
    // forge, and verification checks the signature, not the bytes of the original one.
    const last = recs.at(-1)!
    const again = await signCheckpoint(own, payloadOf(last.jws as string))
    t.not(again, last.jws, 'a fresh ECDSA signature differs from the original')
    const resignedLast = [...raw.slice(0, -1), raw.at(-1)!.replace(last.jws as string, again)]
    t.equal((await verifyInProcess([tampered(resignedLast)], bundle)).status, 0, 'the writer\'s key re-signing the same payload verifies')
    t.end()
  })

  await t.test('a missing checkpoint (chain rewritten around removed checkpoints)', async t => {
    // Every checkpoint after the first removed, and seq/prev recomputed: the chain itself is consistent.
    const first = checkpointIdx[0]!
    const rewritten = rechain(raw.filter((_, j) => j <= first || recs[j]!.msg !== 'checkpoint'))
    // What the first checkpoint proves: through itself when it directly follows the line it covers.
    const through = recs[first]!.covers === recs[first]!.seq - 1 ? recs[first]!.seq : recs[first]!.covers as number
    // The verifier allows 2 x cadence + 64 lines of slack before it calls a checkpoint missing.
    const limit = through + 2 * EVERY + 64 + 1
    t.ok(rewritten.length > limit, `the rewritten log (${rewritten.length} lines) runs past the allowed gap (seq ${limit})`)
    await expectBreak(t, 'checkpoints removed, chain rewritten', rewritten, 'missing-checkpoint', limit, /checkpoints were removed or the chain was rewritten/, 'cli')
    // All of them removed, the final one too.
    const none = rechain(raw.filter(l => parse(l).msg !== 'checkpoint'))
    await expectBreak(t, 'every checkpoint removed, chain rewritten', none, 'missing-checkpoint', 2 * EVERY + 64 + 1, /since the last valid checkpoint \(seq 0\)/)
    t.end()
  })

  await t.test('a removed head (rotated away): verified from the first checkpoint, or exit 8 with --require-genesis', async t => {
    for (const [what, lines, first] of [['genesis dropped', raw.slice(1), 2], ['first ten lines dropped', raw.slice(10), seqAt(10)]] as const) {
      const file = tampered(lines)
      const { status, report } = await verifyInProcess([file], bundle)
      t.equal(status, 0, `${what}: exit 0`)
      t.match(report.chains, [{ verdict: 'VERIFIED', genesis: false, firstSeq: first, verifiedFrom: first, writer: SERVER, firstCheckpoint: { signer: SERVER } }], `${what}: verified from seq ${first}, the writer named by the first checkpoint`)
      t.equal((await verifyInProcess([file], bundle, { requireGenesis: true })).status, 8, `${what}: --require-genesis: exit 8`)
    }
    const txt = verifyText([tampered(raw.slice(10))], bundle)
    t.match(txt.stdout, new RegExp(`VERIFIED from seq ${seqAt(10)} \\(checkpoint signed by ${SERVER} at [0-9T:.-]+Z\\); lines before seq ${seqAt(10)} not present`), 'the text report says from where, and who signed')
    t.equal(gatehouse(['audit', 'verify', tampered(raw.slice(10)), '--trust-bundle', bundle, '--require-genesis']).status, 8, 'the CLI flag')
    // Rewritten so that it starts at 1 again: the checkpoints no longer match the lines.
    await expectBreak(t, 'genesis dropped, chain rewritten', rechain(raw.slice(1)), 'forged-checkpoint', recs[checkpointIdx[0]!]!.seq - 1, /vouches for seq \d+ with a hash that line does not have/)
    t.end()
  })

  await t.test('a truncated tail: the last checkpoint removed is unverified (exit 3), not valid', async t => {
    const file = tampered(raw.slice(0, -1))
    const lastCovered = recs.at(-1)!.covers as number
    const { status, report } = verifyJson([file], bundle)
    t.equal(status, 3, 'exit 3')
    t.equal(report.ok, false, 'not ok')
    t.notOk(report.break, 'no break: every line present is chained correctly')
    const prevCheckpoint = recs[checkpointIdx.at(-2)!]!
    t.ok(report.verifiedThrough >= (prevCheckpoint.covers as number) && report.verifiedThrough < lastCovered, `verified only through the previous checkpoint (seq ${report.verifiedThrough})`)
    t.match(report.unverifiedTail, { fromSeq: report.verifiedThrough + 1, toSeq: raw.length - 1 }, 'the tail is named')
    const txt = verifyText([file], bundle)
    t.equal(txt.status, 3)
    t.match(txt.stdout, /^UNSIGNED TAIL: .*\n.*UNSIGNED TAIL: seq \d+\.\.\d+ are chained but no checkpoint covers them/, 'text report says not fully verified')
    t.notMatch(txt.stdout, /^VERIFIED/m, 'and never VERIFIED')
    // Decision lines cut after the last checkpoint as well: still unverified at best, never exit 0.
    const cut = tampered(raw.slice(0, -3))
    t.not((await verifyInProcess([cut], bundle)).status, 0, 'a shorter truncation is not verified either')
    t.end()
  })

  await t.test('an empty file is not verified', async t => {
    const empty = tampered([])
    const r = await verifyInProcess([empty], bundle)
    t.equal(r.status, 7, 'empty log: exit 7 (NOT VERIFIED)')
    t.match(r.report.break, { kind: 'no-genesis', message: /no decision-log lines/ })
    t.end()
  })
})

t.test('audit verify: a log is only VERIFIED as the log of the workload that signed it (issue 15.0)', async t => {
  // Workload A (payments) and any other workload B of the same trust domain, certified by the same
  // CA: B's key verifies against the bundle, so only the log's own contents can tell them apart.
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const bundle = pki.bundleFile
  const A = signerFrom(pki.issue('/ns/server/sa/payments', 'payments'), SERVER)
  const B = signerFrom(pki.issue('/ns/client/sa/caller', 'caller'), CLIENT)
  const LINES = 12
  let n = 0
  /**
   * A log written by the real writer (DecisionLog): its genesis names `genesis` (undefined: no
   * identity yet, spiffeId null), its checkpoints are signed by `checkpoints`, and decision line i
   * names `callee(i)`.
   */
  const writeLog = async (o: { genesis: Signer | undefined, checkpoints: Signer, callee: (i: number) => string | null }): Promise<string> => {
    const file = join(dir, `log-${++n}.log`)
    let genesisWritten = false
    const log = new DecisionLog({
      stdout: false,
      file,
      checkpointEvery: 4,
      signer: () => { if (genesisWritten) return o.checkpoints; genesisWritten = true; return o.genesis }
    })
    for (let i = 0; i < LINES; i++) log.write(decisionFields(`req-${i}`, 'spiffe://example.org/ns/web/sa/frontend', o.callee(i)))
    await log.close()
    return file
  }
  const checkpointSeqs = (file: string): number[] => readLines(file).map(parse).filter(r => r.msg === 'checkpoint').map(r => r.seq)

  await t.test('(d) an honest log: genesis, callee and every checkpoint are A', async t => {
    const file = await writeLog({ genesis: A, checkpoints: A, callee: () => SERVER })
    const recs = readLines(file).map(parse)
    t.match(recs[0], { msg: 'genesis', spiffeId: SERVER }, 'the genesis names A')
    t.ok(checkpointSeqs(file).length >= LINES / 4, 'several checkpoints, all by A')
    const { status, report } = verifyJson([file], bundle)
    t.equal(status, 0, 'exit 0')
    t.match(report, { ok: true, writer: SERVER, lines: recs.length, verifiedThrough: recs.length })
    t.notOk(report.break, 'no break')
    const text = verifyText([file], bundle)
    t.equal(text.status, 0)
    t.match(text.stdout, new RegExp(`^VERIFIED: ${recs.length} decision-log lines in 1 chain\\(s\\) from 1 file\\(s\\)\\n  chain \\S+ by ${SERVER}: VERIFIED from its genesis through seq ${recs.length}\\n`), 'text report: VERIFIED, by A')
    t.end()
  })

  await t.test('(a) the forged log: written and signed by B, every line claiming callee A', async t => {
    const file = await writeLog({ genesis: B, checkpoints: B, callee: () => SERVER })
    const { status, report } = verifyJson([file], bundle)
    t.equal(status, 1, 'exit 1')
    t.equal(report.ok, false, 'not ok')
    t.match(report.break, { kind: 'callee-not-signer', seq: 2, file, line: 2 }, 'the first decision line is the forgery')
    t.match(report.break?.message, new RegExp(`callee "${SERVER}", but the log is ${CLIENT}'s`), 'the message names the claimed callee and the real signer')
    const text = verifyText([file], bundle)
    t.equal(text.status, 1)
    t.match(text.stdout, /^TAMPERED: .*\n {2}chain \S+ by \S+: TAMPERED: seq 2 .*\n {4}at .*:2 \(callee-not-signer\)\n/, 'text report: TAMPERED, callee-not-signer')
    t.notMatch(text.stdout, /^VERIFIED/m, 'never VERIFIED')

    // The same forgery with no writer named at all, and with A named but B's key signing.
    const unnamed = await verifyInProcess([await writeLog({ genesis: undefined, checkpoints: B, callee: () => SERVER })], bundle)
    t.equal(unnamed.status, 7, 'genesis naming no writer, B signing, lines for A: exit 7 (NOT VERIFIED)')
    t.match(unnamed.report.break, { kind: 'signer-unknown', seq: 1 })
    const claimsA = await writeLog({ genesis: { ...B, spiffeId: SERVER }, checkpoints: B, callee: () => SERVER })
    const r = await verifyInProcess([claimsA], bundle)
    t.equal(r.status, 1, 'genesis naming A, B signing, lines for A: exit 1')
    t.match(r.report.break, { kind: 'forged-checkpoint', seq: checkpointSeqs(claimsA)[0] }, 'at the first checkpoint')
    t.end()
  })

  await t.test('a decision line naming another callee inside a chain A signs', async t => {
    // Only A's key could have written it (the chain and A's checkpoints cover it): A's sidecar never
    // names another callee, so such a line is a forgery (or a claim about someone else's traffic).
    const file = await writeLog({ genesis: A, checkpoints: A, callee: i => i === 6 ? CLIENT : SERVER })
    const seq = readLines(file).map(parse).find(r => r.requestId === 'req-6')!.seq
    const { status, report } = verifyJson([file], bundle)
    t.equal(status, 1, 'exit 1')
    t.match(report.break, { kind: 'callee-not-signer', seq }, `callee-not-signer at seq ${seq}`)
    t.equal(report.break?.line, seq, 'at its line of the file')
    t.match(report.break?.message, new RegExp(`seq ${seq} \\(decision\\) records a decision for callee "${CLIENT}"`))
    // A decision line with no callee at all in A's log is not A's decision either.
    const noCallee = await verifyInProcess([await writeLog({ genesis: A, checkpoints: A, callee: i => i === 3 ? null : SERVER })], bundle)
    t.equal(noCallee.status, 1, 'callee null: exit 1')
    t.match(noCallee.report.break, { kind: 'callee-not-signer', message: /callee null/ })
    t.end()
  })

  await t.test('(b) a genesis that names no writer (spiffeId null) is never VERIFIED', async t => {
    // Everything else consistent: B signs every checkpoint and every line names B.
    const file = await writeLog({ genesis: undefined, checkpoints: B, callee: () => CLIENT })
    const recs = readLines(file).map(parse)
    t.match(recs[0], { msg: 'genesis', seq: 1, spiffeId: null }, 'the genesis has spiffeId null')
    t.ok(recs.some(r => r.msg === 'checkpoint'), 'its checkpoints are signed by an SVID of the trust domain')
    const { status, report } = verifyJson([file], bundle)
    t.equal(status, 7, 'exit 7 (NOT VERIFIED): not proven, so not a pass')
    t.equal(report.ok, false, 'not ok')
    t.match(report.break, { kind: 'signer-unknown', seq: 1, file, line: 1, message: /genesis line names no writer \(spiffeId null\)/ })
    t.equal(report.writer, null)
    const text = verifyText([file], bundle)
    t.equal(text.status, 7)
    t.match(text.stdout, /^NOT VERIFIED: .*\n {2}chain \S+ by unknown writer: NOT VERIFIED: the genesis line names no writer.*\n {4}at .*:1 \(signer-unknown\)\n/, 'text report: NOT VERIFIED (signer-unknown)')
    t.notMatch(text.stdout, /^(VERIFIED|TAMPERED)/m, 'neither VERIFIED nor called tampered')
    // Even when A itself signs it (a writer with no identity at start, then A's): still unproven.
    const bySigner = await verifyInProcess([await writeLog({ genesis: undefined, checkpoints: A, callee: () => SERVER })], bundle)
    t.equal(bySigner.status, 7, 'null genesis, A signing, lines for A: exit 7')
    t.match(bySigner.report.break, { kind: 'signer-unknown', seq: 1 })
    // A genesis whose spiffeId is missing, or is not a SPIFFE ID, names no writer either.
    const notAnId = await verifyInProcess([await writeLog({ genesis: { ...B, spiffeId: 'caller' }, checkpoints: B, callee: () => 'caller' })], bundle)
    t.match(notAnId.report.break, { kind: 'signer-unknown', seq: 1, message: /spiffeId "caller"/ }, 'spiffeId "caller": signer-unknown')
    const honest = readLines(await writeLog({ genesis: A, checkpoints: A, callee: () => SERVER }))
    const { spiffeId: _, ...withoutId } = parse(honest[0]!)
    const missing = join(dir, 'no-spiffe-id.log')
    writeLines(missing, rechain([JSON.stringify(withoutId), ...honest.slice(1)]))
    const r = await verifyInProcess([missing], bundle)
    t.equal(r.status, 7, 'spiffeId key absent: exit 7')
    t.match(r.report.break, { kind: 'signer-unknown', seq: 1 })
    t.end()
  })

  await t.test('(c) a checkpoint signed by a workload other than the one the genesis names', async t => {
    const file = await writeLog({ genesis: A, checkpoints: B, callee: () => SERVER })
    const first = checkpointSeqs(file)[0]!
    const { status, report } = verifyJson([file], bundle)
    t.equal(status, 1, 'exit 1')
    t.match(report.break, { kind: 'forged-checkpoint', seq: first, message: new RegExp(`signed by ${CLIENT}, but the log was started by ${SERVER}`) })
    // A's checkpoints first, then B's (a key switched mid-log): caught at the first of B's.
    let k = 0
    const mixed = join(dir, 'mixed.log')
    const log = new DecisionLog({ stdout: false, file: mixed, checkpointEvery: 4, signer: () => ++k <= 2 ? A : B })
    for (let i = 0; i < LINES; i++) log.write(decisionFields(`req-${i}`, CLIENT, SERVER))
    await log.close()
    const seqs = checkpointSeqs(mixed)
    const r = await verifyInProcess([mixed], bundle)
    t.equal(r.status, 1, 'A then B: exit 1')
    t.match(r.report.break, { kind: 'forged-checkpoint', seq: seqs[1] }, 'at the first checkpoint B signed')
    t.equal(r.report.checkpoints, 1, 'after one valid checkpoint by A')
    t.end()
  })
})
