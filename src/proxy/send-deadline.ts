// The send deadline (--send-timeout, nginx's send_timeout) of one answer: a caller that takes none
// of the bytes waiting for it for that long is cut off. Without it, a caller that stops reading holds
// its connection or stream, and the app connection its answer comes from, for as long as it likes
// (a slow-read attack on the app pool). Any progress (fewer bytes waiting than when the stall was
// first seen) starts it again, so a slow but reading caller is not cut; an answer with nothing
// waiting (the app is quiet: a long poll, a stream between messages) is never stalled.

/** --send-timeout's default, as nginx's send_timeout. */
export const DEFAULT_SEND_TIMEOUT_MS = 60_000

/** How often the deadlines of live answers are checked: a quarter of the shortest, between 50 ms and 1 s. */
export const sweepInterval = (deadlinesMs: readonly number[]): number =>
  Math.max(50, Math.min(1000, Math.floor(Math.min(...deadlinesMs) / 4)))

export class SendDeadline {
  private since = 0
  private bytes = 0
  private readonly ms: number

  constructor (ms: number) { this.ms = ms }

  /** Called by a sweep with the bytes still waiting for the caller: true once they have not gone down for longer than the deadline. */
  expired (now: number, waiting: number): boolean {
    if (waiting === 0) { this.since = 0; return false }
    if (this.since === 0 || waiting < this.bytes) { this.since = now; this.bytes = waiting; return false }
    return now - this.since > this.ms
  }
}
