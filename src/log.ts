import pino, { type Logger, type DestinationStream } from 'pino'

// Two loggers: the operational log (level-filtered, may be quiet) and, later, the decision log
// (never sampled, never dropped). Both are pino writing JSON lines, to stderr and stdout respectively,
// so a log shipper can tell them apart without parsing.

export type { Logger }

export interface LogOptions {
  level?: string
  destination?: DestinationStream
}

export function createLogger (name: string, opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.GATEHOUSE_LOG_LEVEL ?? 'info'
  return pino({
    name,
    level,
    base: { name },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Defence in depth: even if a caller logs a whole object, these never reach the log.
    redact: { paths: ['token', 'key', 'privateKey', 'authorization', 'headers.authorization', '*.token', '*.privateKey'], censor: '[redacted]' }
  }, opts.destination ?? pino.destination({ dest: 2, sync: true }))
}

/** A logger that writes nothing: for library callers and tests that do not care. */
export const silentLogger: Logger = pino({ level: 'silent' })

/**
 * A gate for log lines an attacker can cause at will (refused handshakes, dropped connections): at
 * most `max` lines per `intervalMs`; the next line written says how many were left out. The metrics
 * still count every event.
 */
export function rateLimited (max = 10, intervalMs = 1000): (write: (suppressed: number) => void) => void {
  let windowStart = 0
  let inWindow = 0
  let suppressed = 0
  return (write) => {
    const now = Date.now()
    if (now - windowStart >= intervalMs) { windowStart = now; inWindow = 0 }
    if (inWindow >= max) { suppressed++; return }
    inWindow++
    const s = suppressed
    suppressed = 0
    write(s)
  }
}
