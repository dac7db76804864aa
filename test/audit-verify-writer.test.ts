import t from 'tap'
import { join } from 'node:path'
import { Pki } from './helpers/mesh.ts'
import { readLines, writeLines, parse, rechain, signerFrom, decisionFields, verifyJson, verifyText, verifyInProcess } from './helpers/audit-log.ts'
import type { Signer } from '../src/audit/checkpoint.ts'
import { DecisionLog } from '../src/audit/record.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse audit verify`: a log is only VERIFIED as the log of the workload that signed it (issue
// 15.0): decision logs written by the real writer, with genesis, callee and checkpoint signers mixed
// between two workloads of one trust domain. Tampering: audit-verify-tampering.test.ts; missing
// checkpoints and truncation: audit-verify-gaps.test.ts.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const SERVER = 'spiffe://example.org/ns/server/sa/payments'

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
