import type { Test } from 'tap'
import { connect as h2connect } from 'node:http2'
import type { Mesh } from './mesh.ts'
import * as h from './h2-frames.ts'

// Shared by the HTTP/2 attack tests (inbound-h2-floods, inbound-h2-headers): who attacks, who is
// honest, what reached the app, and what the sidecar answered.

/** Paths of every request whose headers reached the app (mesh.app.seen only holds finished ones). */
export function watchApp (mesh: Mesh): string[] {
  const urls: string[] = []
  mesh.app.server.prependListener('request', (req) => { urls.push(req.url ?? '') })
  return urls
}

export async function attacker (t: Test, mesh: Mesh, o: { ackSettings?: boolean } = {}): Promise<h.H2Conn> {
  return await h.connectH2(t, { port: mesh.sidecar.inbound.port, ca: mesh.pki.ca.bundlePem, svid: mesh.client, ...o })
}

/**
 * An honest HTTP/2 caller (node:http2 with the client SVID): GET returns the status. Like a careful
 * client it sends nothing before the server's SETTINGS arrive (before them nghttp2 assumes no stream
 * limit, and a burst past it would be refused with REFUSED_STREAM, which Node does not retry).
 */
export function honest (t: Test, mesh: Mesh): { get: (path: string) => Promise<number> } {
  const session = h2connect(mesh.url, { ca: mesh.pki.ca.bundlePem, cert: mesh.client.chainPem, key: mesh.client.keyPem, checkServerIdentity: () => undefined })
  session.on('error', () => { /* reported through the request that failed */ })
  t.teardown(() => { session.destroy() })
  const ready = new Promise<void>(resolve => { session.once('remoteSettings', () => { resolve() }) })
  return {
    get: async (path) => {
      await ready
      return await new Promise<number>((resolve, reject) => {
        const req = session.request({ ':path': path })
        let status = 0
        req.on('response', (hd) => { status = Number(hd[':status']) })
        req.on('error', reject)
        req.resume()
        req.on('end', () => { resolve(status) })
        req.setTimeout(5000, () => { req.close(); reject(new Error(`GET ${path} timed out`)) })
      })
    }
  }
}

/** After an attack: a new HTTP/2 caller and an HTTP/1.1 caller still get through to the app. */
export async function stillServes (t: Test, mesh: Mesh, app: string[]): Promise<void> {
  t.equal(await honest(t, mesh).get('/after-h2'), 200, 'afterwards a new HTTP/2 caller is served')
  t.ok(app.includes('/after-h2'), 'and its request reaches the app')
  t.equal((await mesh.request('/after-h1')).status, 200, 'afterwards an HTTP/1.1 caller is served')
  const errors = mesh.logs.filter(l => l.level >= 50)
  t.same(errors.map(l => l.msg), [], 'the sidecar logged no error')
}

/** What the server did on stream `id` (or the connection): for the comments. */
export function outcome (c: h.H2Conn, id: number): string {
  const parts: string[] = []
  const status = c.status(id)
  if (status !== undefined) parts.push(`status ${status}`)
  const rst = c.rst(id)
  if (rst !== undefined) parts.push(`RST_STREAM ${h.ERR[rst] ?? rst}`)
  const g = c.goaway()
  if (g !== undefined) parts.push(`GOAWAY ${h.ERR[g.code] ?? g.code} (last stream ${g.lastStreamId}${g.debug === '' ? '' : `, "${g.debug}"`})`)
  if (c.closed) parts.push('connection closed')
  return parts.length === 0 ? 'no answer' : parts.join(', ')
}

/** Refused: a 4xx on the stream, an RST_STREAM with an error, or the connection ended. */
export function refused (c: h.H2Conn, id: number): boolean {
  const status = c.status(id)
  const rst = c.rst(id)
  return (status !== undefined && status >= 400 && status < 500) || (rst !== undefined && rst !== h.E.NO_ERROR) || c.goaway() !== undefined || c.closed
}

