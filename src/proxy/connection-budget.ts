import { parseQuantity } from '../quantity.ts'

// Connection limits that fit a memory limit. A flood of connections that never finish a handshake
// (idle TCP, a partial ClientHello) costs memory per connection (a TLS socket, OpenSSL's state and
// read buffer); about 9,900 of them took a sidecar past the injector's 256Mi limit, and the pod was
// OOM-killed: a denial of service for its legitimate callers. With a memory limit known (the injector
// passes the container's as --memory-limit), the limits below are derived from it; a flag given
// explicitly still wins.

/**
 * The sidecar's own RSS before connections (heap, code, TLS contexts, pools): test/inbound-flood
 * measured ~105 MiB for the CLI process at rest with the injector's NODE_OPTIONS; the rest is margin.
 */
export const RESERVED_BYTES = 128 * 2 ** 20
/**
 * Per connection, rounded up from test/inbound-flood.test.ts: 9,900 unfinished handshakes under the
 * old limits took RSS from ~105 to ~395 MiB (~30 KiB each, the TLS socket, OpenSSL's state and a
 * record buffer); an established mTLS connection adds the HTTP parser and its buffers.
 */
export const BYTES_PER_CONNECTION = 48 * 1024
export const BYTES_PER_PENDING = 40 * 1024

export interface ConnectionLimits {
  maxConnections: number
  maxPendingHandshakes: number
  handshakeTimeoutMs: number
  idleTimeoutMs: number
}

/** Without a memory limit: the defaults of `gatehouse proxy`. */
export const UNBOUNDED_LIMITS: ConnectionLimits = { maxConnections: 10_000, maxPendingHandshakes: 1024, handshakeTimeoutMs: 10_000, idleTimeoutMs: 60_000 }

/**
 * Limits for a memory limit ("256Mi", or bytes): pending handshakes get a quarter of what is left
 * after the reserve, established connections the rest, so both at their caps stay under the limit.
 * A tight budget also shortens the handshake and idle timeouts, so the table turns over faster.
 */
export function limitsForMemory (memoryLimit: string | number): ConnectionLimits {
  const bytes = typeof memoryLimit === 'number' ? memoryLimit : parseQuantity(memoryLimit)
  if (bytes === undefined || !Number.isFinite(bytes) || bytes <= 0) throw new Error(`not a memory quantity: ${JSON.stringify(memoryLimit)} (e.g. 256Mi)`)
  const budget = Math.max(0, bytes - RESERVED_BYTES)
  const maxPendingHandshakes = Math.max(64, Math.floor(budget / 4 / BYTES_PER_PENDING))
  const maxConnections = Math.max(128, Math.floor(budget * 3 / 4 / BYTES_PER_CONNECTION))
  const tight = bytes < 512 * 2 ** 20
  return {
    maxConnections: Math.min(maxConnections, UNBOUNDED_LIMITS.maxConnections),
    maxPendingHandshakes: Math.min(maxPendingHandshakes, UNBOUNDED_LIMITS.maxPendingHandshakes),
    handshakeTimeoutMs: tight ? 5000 : UNBOUNDED_LIMITS.handshakeTimeoutMs,
    idleTimeoutMs: tight ? 30_000 : UNBOUNDED_LIMITS.idleTimeoutMs
  }
}
