import t from 'tap'
import { setImmediate as turn } from 'node:timers/promises'
import { DecisionLog, GENESIS_PREV } from '../src/audit/record.ts'
import { canonicalHash } from '../src/audit/line-hash.ts'
import { DecisionLogUnavailableError } from '../src/errors.ts'
import { decisionFields } from './helpers/audit-log.ts'

// Group commit in the decision log (issue 21): a decision line (its request already answered) waits
// for the next admit line or the end of the event-loop turn and goes in the same write; an admit
// line is never held. A batch the guarantee refuses takes its decision lines with it: they are
// reported by request id, and the chain goes on from the last line that was written, with no hole.

const CALLER = 'spiffe://example.org/ns/a/sa/caller'
const CALLEE = 'spiffe://example.org/ns/b/sa/server'

/** The guarantee sink: every write as one string, failing while `failing` is set (as a full disk would). */
function sink (): { writes: string[], failing: boolean, write: (text: string) => boolean } {
  const s = {
    writes: [] as string[],
    failing: false,
    write (text: string): boolean {
      if (s.failing) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
      s.writes.push(text)
      return true
    }
  }
  return s
}

const linesOf = (writes: readonly string[]): Array<Record<string, any>> => writes.join('').split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, any>)
const fields = (id: string): ReturnType<typeof decisionFields> => decisionFields(id, CALLER, CALLEE)

t.test('decision lines ride with the next admit line; alone, they are written by the end of the turn', async t => {
  const out = sink()
  const log = new DecisionLog({ stdout: false, destination: out, checkpointEvery: 1000, signer: () => undefined })
  t.equal(out.writes.length, 1, 'the genesis line is written at once')
  log.write(fields('d1'))
  log.write(fields('d2'))
  t.equal(out.writes.length, 1, 'two decision lines wait')
  log.admit(fields('a3'))
  t.equal(out.writes.length, 2, 'the admit line is written at once, before the call returns')
  t.same(linesOf(out.writes.slice(1)).map(l => [l.msg, l.requestId, l.seq]), [['decision', 'd1', 2], ['decision', 'd2', 3], ['admit', 'a3', 4]], 'in one write, in order')
  log.write(fields('d4'))
  t.equal(out.writes.length, 2, 'a decision line alone waits')
  await turn()
  t.same(linesOf(out.writes.slice(2)).map(l => l.requestId), ['d4'], 'and is written by the end of the event-loop turn')
  await log.close()
})

t.test('a refused batch: its decision lines are reported lost, the admit refused, and the chain resumes without a hole', async t => {
  const out = sink()
  const lost: string[][] = []
  const log = new DecisionLog({ stdout: false, destination: out, checkpointEvery: 1000, signer: () => undefined, onLinesLost: ids => { lost.push(ids) } })
  log.admit(fields('a1'))
  log.write(fields('d1'))
  log.write(fields('d2'))
  out.failing = true
  t.throws(() => { log.admit(fields('a2')) }, DecisionLogUnavailableError, 'the admit line cannot be written: the request is refused')
  t.same(lost, [['d1', 'd2']], 'the answered requests whose lines went with the batch, by request id')
  t.match(log.problem(), /ENOSPC/, 'the log is failed (readyz)')
  t.throws(() => { log.write(fields('d3')) }, DecisionLogUnavailableError, 'while failed, a decision line is refused at once')
  out.failing = false
  log.admit(fields('a3'))
  t.equal(log.problem(), undefined, 'writing works again')
  const lines = linesOf(out.writes)
  t.same(lines.map(l => l.msg), ['genesis', 'admit', 'resumed', 'admit'], 'what reached the sink: nothing of the refused batch')
  t.same(lines.map(l => l.seq), [1, 2, 3, 4], 'seq goes on from the last line written')
  const holes = lines.filter((l, i) => l.prev !== (i === 0 ? GENESIS_PREV : canonicalHash(lines[i - 1])))
  t.equal(holes.length, 0, 'every prev is the hash of the line before it')
  t.equal(lines[2]!.refused, 1, 'the resumed line counts the refused request')
  await log.close()
})
