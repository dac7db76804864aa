import t from 'tap'
import { Pki } from './helpers/mesh.ts'
import { signerFrom, verifyJson, verifyText, verifyInProcess, tamperBench } from './helpers/audit-log.ts'
import { signCheckpoint, type CheckpointPayload } from '../src/audit/checkpoint.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse audit verify` on a decision log written by a real sidecar: the untouched log verifies
// (exit 0); each way of tampering with a line or a checkpoint (removed, inserted, edited, reordered,
// forged) is reported as the right kind of break at the right seq (exit 1). Missing checkpoints, a
// rotated-away head and a truncated tail: audit-verify-gaps.test.ts; whose log it is:
// audit-verify-writer.test.ts. The log and the tampering checks: tamperBench in helpers/audit-log.ts.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const SERVER = 'spiffe://example.org/ns/server/sa/payments'
const REQUESTS = 100
const EVERY = 5

t.test('audit verify: a real log verifies; every kind of tampering is caught and named', async t => {
  const { mesh, bundle, logFile, allowed, denied, raw, recs, checkpointIdx, tampered, seqAt, decisionIdx, expectBreak } = await tamperBench(t, { client: CLIENT, requests: REQUESTS, every: EVERY })
  t.equal(allowed + denied, REQUESTS, 'every request was answered 200 or 403')
  t.ok(allowed > 0 && denied > 0, `both allowed (${allowed}) and denied (${denied}) requests`)

  const decisions = recs.filter(r => r.msg === 'decision')
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
})
