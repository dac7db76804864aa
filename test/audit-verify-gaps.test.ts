import t from 'tap'
import { parse, rechain, verifyJson, verifyText, verifyInProcess, tamperBench } from './helpers/audit-log.ts'
import { gatehouse } from './helpers/run-cli.ts'

// `gatehouse audit verify` on a decision log written by a real sidecar, with parts of it gone:
// checkpoints removed and the chain rewritten around them (exit 1), the head rotated away (verified
// from the first checkpoint, exit 8 with --require-genesis), a log whose last checkpoint is gone is
// intact but unverified (exit 3), never "valid", and an empty file is not verified. Tampering with
// lines and checkpoints: audit-verify-tampering.test.ts; whose log it is: audit-verify-writer.test.ts.

const CLIENT = 'spiffe://example.org/ns/client/sa/caller'
const SERVER = 'spiffe://example.org/ns/server/sa/payments'
const REQUESTS = 100
const EVERY = 5

t.test('audit verify: removed checkpoints, a removed head, a truncated tail, an empty file', async t => {
  const { bundle, raw, recs, checkpointIdx, tampered, seqAt, expectBreak } = await tamperBench(t, { client: CLIENT, requests: REQUESTS, every: EVERY })
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
