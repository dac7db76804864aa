import type { Socket } from 'node:net'

// Opaque TCP between two sidecars (docs/opaque-tcp.md): the caller's sidecar opens mTLS to the
// callee's inbound listener with ALPN `gatehouse-tcp/1`, then, inside TLS, sends a 6-byte preamble
// naming the callee's app port. ALPN picks the stage at handshake time (no sniffing of app bytes);
// the port travels encrypted (a ClientHello's ALPN list is readable on the wire), as in Linkerd's
// transport header. Everything after the preamble is the app's bytes, relayed as they are.

export const TCP_ALPN = 'gatehouse-tcp/1'
const MAGIC = Buffer.from('GHT1')
export const PREAMBLE_BYTES = MAGIC.length + 2

export function encodePreamble (port: number): Buffer {
  const b = Buffer.alloc(PREAMBLE_BYTES)
  MAGIC.copy(b)
  b.writeUInt16BE(port, MAGIC.length)
  return b
}

/** The app port a preamble names, or undefined when it is not one. */
export function decodePreamble (b: Buffer): number | undefined {
  if (b.length < PREAMBLE_BYTES || !b.subarray(0, MAGIC.length).equals(MAGIC)) return undefined
  const port = b.readUInt16BE(MAGIC.length)
  return port === 0 ? undefined : port
}

/**
 * Reads exactly the preamble from a paused socket (whatever follows is unshifted for the relay).
 * Resolves undefined on a bad preamble, a timeout, or a socket that ends first.
 */
export async function readPreamble (socket: Socket, timeoutMs: number): Promise<number | undefined> {
  return await new Promise(resolve => {
    let got = Buffer.alloc(0)
    const done = (port: number | undefined): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('end', onEnd)
      socket.off('close', onEnd)
      socket.pause()
      resolve(port)
    }
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk])
      if (got.length < PREAMBLE_BYTES) return
      const rest = got.subarray(PREAMBLE_BYTES)
      if (rest.length > 0) socket.unshift(rest)
      done(decodePreamble(got))
    }
    const onEnd = (): void => { done(undefined) }
    const timer = setTimeout(() => { done(undefined) }, timeoutMs)
    socket.on('data', onData)
    socket.once('end', onEnd)
    socket.once('close', onEnd)
    socket.resume()
  })
}

/** How a relayed connection ended, for its close line. */
export interface RelayEnd { bytesIn: number, bytesOut: number, reason: string }

export interface Relay {
  /** Ends both sides now (policy revoked, certificate expired, quarantine, shutdown), naming why. */
  close: (reason: string) => void
  readonly ended: Promise<RelayEnd>
}

/**
 * Both directions at once with backpressure (pipe pauses the faster side) and half-close (one side's
 * FIN is passed on and the other direction keeps flowing until it ends too). `caller` is the side
 * the connection came from; bytesIn counts caller -> app.
 */
export function relay (caller: Socket, app: Socket, idleTimeoutMs: number): Relay {
  caller.allowHalfOpen = true
  app.allowHalfOpen = true
  let bytesIn = 0
  let bytesOut = 0
  let reason: string | undefined
  let last = performance.now()
  const end = (why: string): void => {
    reason ??= why
    caller.destroy()
    app.destroy()
  }
  caller.on('data', (c: Buffer) => { bytesIn += c.length; last = performance.now() })
  app.on('data', (c: Buffer) => { bytesOut += c.length; last = performance.now() })
  caller.pipe(app)
  app.pipe(caller)
  caller.on('error', (e: NodeJS.ErrnoException) => { end(`caller-error: ${e.code ?? e.message}`) })
  app.on('error', (e: NodeJS.ErrnoException) => { end(`app-error: ${e.code ?? e.message}`) })
  // A socket's timer fires idleTimeoutMs after its own last byte; the relay is idle when both are.
  const onTimeout = (): void => { if (performance.now() - last >= idleTimeoutMs - 5) end('idle-timeout') }
  if (idleTimeoutMs > 0) { caller.setTimeout(idleTimeoutMs, onTimeout); app.setTimeout(idleTimeoutMs, onTimeout) }
  const closed = (s: Socket): Promise<void> => new Promise(resolve => { if (s.closed) resolve(); else s.once('close', () => { resolve() }) })
  const ended = Promise.all([closed(caller), closed(app)]).then(() => ({ bytesIn, bytesOut, reason: reason ?? 'closed' }))
  // One side closed: what it sent is still flushed to the other (whose end() pipe has called), then
  // the other goes too, since nothing it sends could be delivered.
  const drop = (s: Socket): void => {
    if (s.destroyed) return
    if (s.writableFinished) s.destroy()
    else { s.end(); s.once('finish', () => { s.destroy() }) }
  }
  caller.once('close', () => { drop(app) })
  app.once('close', () => { drop(caller) })
  return { close: end, ended }
}
