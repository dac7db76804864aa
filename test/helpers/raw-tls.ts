import { connect, type TLSSocket } from 'node:tls'
import type { Mesh, SvidFiles } from './mesh.ts'

// Raw bytes over an authenticated mTLS connection to the sidecar, for what an HTTP client library
// would refuse to send (smuggling probes, hop-by-hop headers, Upgrade), plus a small parser for
// the HTTP/1.1 responses that come back.

/** Opens an mTLS connection to the mesh's sidecar presenting `svid` (default: the client SVID). */
export async function connectRaw (mesh: Mesh, svid: SvidFiles = mesh.client): Promise<TLSSocket> {
  return await new Promise<TLSSocket>((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port: mesh.sidecar.inbound.port,
      ca: mesh.pki.ca.bundlePem,
      cert: svid.chainPem,
      key: svid.keyPem,
      checkServerIdentity: () => undefined
    })
    socket.once('secureConnect', () => { socket.off('error', reject); resolve(socket) })
    socket.once('error', reject)
  })
}

export interface RawExchange {
  /** Every byte the sidecar sent back. */
  response: Buffer
  /** True when the sidecar closed (or ended) the connection before we gave up waiting. */
  serverClosed: boolean
  /** True when the connection ended with an error (e.g. a reset) rather than a clean close. */
  error: string | undefined
}

export interface RawOptions {
  svid?: SvidFiles
  /** After the first response bytes: wait this long without new bytes before half-closing (default 400 ms). */
  idleMs?: number
  /** After writing: wait at most this long for the first response byte before half-closing (default 2000 ms). */
  firstByteMs?: number
  /** After half-closing: wait at most this long for the server to close (default 3000 ms). */
  closeWaitMs?: number
}

/**
 * Writes `bytes`, reads until the server closes or, once it has answered, has been silent for
 * `idleMs` (or has not answered at all within `firstByteMs`), then half-closes and keeps reading
 * until the server closes (or `closeWaitMs` passes; then the socket is destroyed). Half-closing
 * only after the answer matters: Node's HTTP server aborts requests still in flight on 'end'.
 */
export async function rawExchange (mesh: Mesh, bytes: Buffer | string, o: RawOptions = {}): Promise<RawExchange> {
  const socket = await connectRaw(mesh, o.svid)
  const idleMs = o.idleMs ?? 400
  const firstByteMs = o.firstByteMs ?? 2000
  const closeWaitMs = o.closeWaitMs ?? 3000
  const chunks: Buffer[] = []
  let error: string | undefined
  let serverClosed = false
  let last = 0
  const closed = new Promise<void>(resolve => {
    socket.on('data', (c: Buffer) => { chunks.push(c); last = Date.now() })
    socket.on('error', (err: NodeJS.ErrnoException) => { error = err.code ?? err.message })
    socket.on('end', () => { serverClosed = true })
    socket.on('close', () => { serverClosed = true; resolve() })
  })
  socket.write(bytes)
  const written = Date.now()
  // Phase 1: let the sidecar answer (or close) while the connection is still fully open.
  while (!serverClosed && (chunks.length === 0 ? Date.now() - written < firstByteMs : Date.now() - last < idleMs)) await sleep(25)
  // Phase 2: half-close and wait for the close.
  if (!serverClosed) {
    socket.end()
    await Promise.race([closed, sleep(closeWaitMs)])
  }
  const gaveUp = !serverClosed
  socket.destroy()
  await closed
  return { response: Buffer.concat(chunks), serverClosed: !gaveUp, error }
}

export async function sleep (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}

export interface ParsedResponse { status: number, reason: string, headers: Array<[string, string]>, body: Buffer }

/**
 * Parses every HTTP/1.1 response in `buf` (pipelined responses included). Bodies are framed by
 * content-length or chunked encoding; otherwise the body runs to the end of the bytes. A 1xx
 * (e.g. 101) response ends the parse: what follows it is another protocol.
 */
export function parseResponses (buf: Buffer): ParsedResponse[] {
  const out: ParsedResponse[] = []
  let pos = 0
  while (pos < buf.length) {
    const end = buf.indexOf('\r\n\r\n', pos, 'latin1')
    if (end === -1) break
    const lines = buf.subarray(pos, end).toString('latin1').split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0] ?? '')
    if (m === null) break
    const headers: Array<[string, string]> = []
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':')
      headers.push([line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()])
    }
    const status = Number(m[1])
    let bodyStart = end + 4
    const get = (name: string): string | undefined => headers.find(([k]) => k === name)?.[1]
    let body: Buffer
    if (status < 200 || status === 204 || status === 304) {
      body = Buffer.alloc(0)
      if (status < 200) { out.push({ status, reason: m[2] ?? '', headers, body: buf.subarray(bodyStart) }); break }
    } else if (get('content-length') !== undefined) {
      const n = Number(get('content-length'))
      body = buf.subarray(bodyStart, bodyStart + n)
      bodyStart += n
    } else if ((get('transfer-encoding') ?? '').toLowerCase() === 'chunked') {
      const parts: Buffer[] = []
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', bodyStart, 'latin1')
        if (lineEnd === -1) { bodyStart = buf.length; break }
        const size = parseInt(buf.subarray(bodyStart, lineEnd).toString('latin1'), 16)
        bodyStart = lineEnd + 2
        if (!(size > 0)) {
          const trailerEnd = buf.indexOf('\r\n\r\n', bodyStart - 2, 'latin1')
          bodyStart = trailerEnd === -1 ? buf.length : trailerEnd + 4
          break
        }
        parts.push(buf.subarray(bodyStart, bodyStart + size))
        bodyStart += size + 2
      }
      body = Buffer.concat(parts)
    } else {
      body = buf.subarray(bodyStart)
      bodyStart = buf.length
    }
    out.push({ status, reason: m[2] ?? '', headers, body })
    pos = bodyStart
  }
  return out
}

/** Header value(s) by lower-case name. */
export function headerValues (r: ParsedResponse, name: string): string[] {
  return r.headers.filter(([k]) => k === name).map(([, v]) => v)
}
