import { connect as netConnect, type Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Logger } from '../log.ts'
import type { PeerIdentity } from '../spiffe/peer.ts'
import type { DecisionFields } from '../audit/record.ts'
import type { Judge } from './judge.ts'
import type { ProxyMetrics } from './proxy-metrics.ts'
import { readPreamble, relay, type Relay } from './opaque-tcp.ts'

// The opaque TCP stage of the inbound listener (ALPN gatehouse-tcp/1): the preamble names the app
// port, the connection is judged once by the same policy (rules with `ports`), its admit line is
// written, and only then is the app dialled and bytes relayed. A denied connection is closed before
// one byte reaches the app. A live connection is judged again when the policy changes, and closed
// when its peer's certificate expires: its close line says why, with bytes each way and duration.

export interface TcpStageOptions {
  judge: Judge
  /** --upstream-tcp: app port -> where the app listens (the port the caller names is the key). */
  upstreams: ReadonlyMap<number, { host: string, port: number }>
  preambleTimeoutMs: number
  connectTimeoutMs: number
  idleTimeoutMs: number
  metrics: ProxyMetrics
  logger: Logger
}

interface Live { peer: PeerIdentity, fields: DecisionFields, relay: Relay }

export interface TcpStage {
  accept: (socket: TLSSocket, peer: PeerIdentity) => void
  /** After a policy change: close each connection the new policy no longer allows. */
  reevaluate: () => void
  /** Closes the live connections whose caller `held`, naming `reason`; returns how many. */
  cut: (held: (peer: PeerIdentity) => boolean, reason: string) => number
  /** Stop: live connections get `drainMs` to end on their own, then are closed. */
  close: (drainMs: number) => Promise<void>
  readonly live: number
}

export function createTcpStage (o: TcpStageOptions): TcpStage {
  const live = new Set<Live>()

  const accept = async (socket: TLSSocket, peer: PeerIdentity): Promise<void> => {
    const start = performance.now()
    socket.on('error', () => { /* ended below or by the relay */ })
    const port = await readPreamble(socket, o.preambleTimeoutMs)
    if (port === undefined) {
      const fields = o.judge.denied(peer, 'TCP', '', 'bad-request: no valid opaque TCP preamble')
      fields.kind = 'tcp'
      o.metrics.rejected.inc({ reason: 'protocol' })
      o.judge.record(fields, 0, start)
      socket.destroy()
      return
    }
    const v = o.judge.connection(peer, { port })
    if (!v.ok) {
      // Nothing was read past the preamble and the app was never dialled.
      o.judge.record(v.fields, 0, start)
      socket.destroy()
      return
    }
    const fields = v.fields
    const to = o.upstreams.get(port)
    const fail = (error: string): void => {
      fields.closeReason = 'app-unavailable'
      o.metrics.upstreamErrors.inc({ kind: 'upstream-unavailable' })
      o.logger.warn({ event: 'upstream.failed', kind: 'tcp', port, error }, 'app did not accept the TCP connection')
      o.judge.record(fields, 0, start, `upstream-unavailable: ${error}`)
      socket.destroy()
    }
    if (to === undefined) { fail(`no --upstream-tcp for app port ${port}`); return }
    const app: Socket = netConnect({ host: to.host, port: to.port, allowHalfOpen: true })
    const connectTimer = setTimeout(() => { app.destroy(new Error(`connect timeout after ${o.connectTimeoutMs} ms`)) }, o.connectTimeoutMs)
    let connected = false
    // Before it connects, an app error is a failed connection; after, the relay owns the socket's errors.
    app.once('error', (e: NodeJS.ErrnoException) => { clearTimeout(connectTimer); if (!connected) fail(`${e.code ?? e.message} ${to.host}:${to.port}`) })
    app.once('connect', () => {
      connected = true
      clearTimeout(connectTimer)
      if (socket.destroyed) { app.destroy(); fields.closeReason = 'caller-gone'; o.judge.record(fields, 0, start); return }
      const r = relay(socket, app, o.idleTimeoutMs)
      const entry: Live = { peer, fields, relay: r }
      live.add(entry)
      // Continuous verification: the connection does not outlive the caller's certificate.
      const expiry = setTimeout(() => { r.close('peer-certificate-expired') }, Math.min(Math.max(0, peer.notAfter.getTime() - Date.now()), 2 ** 31 - 1))
      expiry.unref()
      void r.ended.then(end => {
        clearTimeout(expiry)
        live.delete(entry)
        fields.bytesIn = end.bytesIn
        fields.bytesOut = end.bytesOut
        fields.closeReason = end.reason
        o.judge.record(fields, 0, start)
      })
      socket.resume()
    })
  }

  return {
    accept: (socket, peer) => { void accept(socket, peer) },
    reevaluate () {
      for (const c of live) {
        const v = o.judge.recheck(c.peer, { port: c.fields.port! })
        if (!v.allowed) {
          o.logger.info({ event: 'tcp.revoked', caller: c.peer.id, port: c.fields.port, rule: v.rule }, 'policy no longer allows this TCP connection; closing it')
          c.relay.close('policy-revoked')
        }
      }
    },
    cut (held, reason) {
      let n = 0
      for (const c of live) if (held(c.peer)) { c.relay.close(reason); n++ }
      return n
    },
    async close (drainMs) {
      if (live.size === 0) return
      const all = Promise.all([...live].map(async c => await c.relay.ended))
      const timer = setTimeout(() => { for (const c of live) c.relay.close('shutdown') }, drainMs)
      await all
      clearTimeout(timer)
    },
    get live () { return live.size }
  }
}
