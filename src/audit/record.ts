import { createHash } from 'node:crypto'
import pino, { type Logger, type DestinationStream } from 'pino'

// The decision log: one JSON line per request, never sampled. Each line carries `seq` and `prev`,
// the SHA-256 (hex) of the previous line exactly as written (without its trailing newline), so a
// removed, inserted, edited or reordered line breaks the chain. The first line's prev is 64 zeros.
// pino calls mixin() and then streamWrite() synchronously within one log call, so seq/prev and
// the hash of the line written always belong together.

export const GENESIS_PREV = '0'.repeat(64)

export interface DecisionFields {
  requestId: string
  decision: 'allow' | 'deny'
  mode: 'enforce' | 'audit'
  enforced: boolean
  rule: string | null
  reason: string
  caller: string | null
  callee: string | null
  method: string
  path: string | null
  rawPath: string
  status: number
  durationMs: number
  policyRevision: string | null
  peerCertSerial: string | null
  /** Set when the app did not answer (502/504) or the request was malformed. */
  error?: string
}

export class DecisionLog {
  private seq = 0
  private prev = GENESIS_PREV
  private readonly logger: Logger
  private readonly destination: DestinationStream

  constructor (destination?: DestinationStream) {
    this.destination = destination ?? pino.destination({ dest: 1, sync: false, minLength: 0 })
    this.logger = pino({
      base: undefined,
      level: 'info',
      timestamp: pino.stdTimeFunctions.isoTime,
      messageKey: 'msg',
      mixin: () => ({ seq: ++this.seq, prev: this.prev }),
      hooks: {
        streamWrite: (line: string) => {
          this.prev = createHash('sha256').update(line.endsWith('\n') ? line.slice(0, -1) : line).digest('hex')
          return line
        }
      }
    }, this.destination)
  }

  write (fields: DecisionFields): void {
    this.logger.info(fields, 'decision')
  }

  /** Flush buffered lines (on shutdown): a decision line is never lost. */
  flush (): void {
    const d = this.destination as { flushSync?: () => void }
    try { d.flushSync?.() } catch { /* not ready yet or a plain stream: nothing buffered */ }
  }
}
