import type { Logger } from '../log.ts'
import { PolicyStore } from '../policy/policy-store.ts'
import { DecisionLog } from '../audit/record.ts'
import type { DestinationStream } from 'pino'
import { Credentials, loadStaticFiles, watchBundleFile } from '../identity/credentials.ts'
import { Rotator } from '../identity/rotator.ts'
import { RouteTable, watchRoutesFile } from './routes.ts'
import { startOutbound, type Outbound } from './outbound.ts'
import { ConfigInvalidError } from '../errors.ts'
import { pemToDers, parseCertificate } from '../x509/certificate.ts'
import { createProxyMetrics, type ProxyMetrics } from './proxy-metrics.ts'
import { createUpstreamPool, type Upstream } from './forward-h1.ts'
import { createAppUpstream, type UpstreamProtocol } from './app-upstream.ts'
import { startInbound, type Inbound, type InboundLimits } from './inbound.ts'
import { DEFAULT_UPGRADE_PROTOCOLS } from './upgrade.ts'
import { startAdmin, type Admin, type AppProbe } from './admin.ts'
import type { FileWatch } from '../file-watch.ts'
import { followCaQuarantine, watchQuarantineFile, noQuarantine } from '../quarantine/source.ts'
import { Detector, type DetectorSettings, type Suspicion } from '../quarantine/detector.ts'
import { reportSuspicion } from '../quarantine/report.ts'
import { callerOf } from '../policy/decide.ts'
import { useLeanAsyncBind } from './async-bind.ts'

// One sidecar: identity + policy + inbound listener + admin listener, started and stopped together.
// The CLI builds the options from the config schema; tests call this directly.

export interface SidecarOptions extends InboundLimits {
  inbound: { host: string, port: number }
  upstream: Upstream
  /** How requests reach the app (app-upstream.ts): default auto, gRPC over h2c and the rest over HTTP/1.1. */
  upstreamProtocol?: UpstreamProtocol
  admin: { host: string, port: number }
  /** Serve /metrics on the admin listener's non-loopback addresses too (probes always are). */
  adminExposeMetrics?: boolean
  /** Outbound listener (HTTP_PROXY for the app); routes from routesFile, none = every destination refused. */
  outbound?: { host: string, port: number }
  routesFile?: string
  allowConnect?: string[]
  /** The app's HTTP/1.1 calls on kept-alive HTTP/1.1 mTLS connections instead of streams on one HTTP/2 link per destination. */
  meshHttp1?: boolean
  /** Upgrade protocols relayed inbound after authorization (default: websocket; h2c never). */
  upgradeProtocols?: readonly string[]
  policyFile: string
  trustBundleFile: string
  /** Identity from static files (reloaded on change)... */
  certFile?: string
  keyFile?: string
  /** ...or issued and rotated by the CA. */
  ca?: { url: string, tokenFile?: string, caId?: string, expectedId?: string }
  trustDomain?: string
  reloadIntervalMs: number
  upstreamTimeoutMs: number
  upstreamConnectTimeoutMs: number
  logger: Logger
  /** Decision log destinations: a stream (tests), stdout (default) and/or a rotating file. */
  decisionLog?: DestinationStream
  decisionLogStdout?: boolean
  decisionLogFile?: string
  decisionLogMaxBytes?: number
  /** Rotated decision-log files kept (default all). */
  decisionLogMaxFiles?: number
  /** fsync the decision-log file after every line (a machine crash, not only a process kill, loses nothing acted on). */
  decisionLogFsync?: boolean
  checkpointEvery?: number
  checkpointIntervalMs?: number
  /** The app's original HTTP probes, relayed by the admin port (set by the injector). */
  appProbes?: Record<string, AppProbe>
  /** Opaque TCP app ports served inbound (--upstream-tcp): app port -> address. */
  tcpUpstreams?: ReadonlyMap<number, { host: string, port: number }>
  /** Idle timeout of an opaque TCP connection, inbound and outbound (default 1 h). */
  tcpIdleTimeoutMs?: number
  /** Connections per route listener (default 1024). */
  routeMaxConnections?: number
  /** Without a CA: the quarantine list from this file, watched (missing = empty). With a CA it comes from the CA. */
  quarantineFile?: string
  /** The scan detector's thresholds (detector.ts); defaults 20 denials over 10 paths in 10 s. */
  detector?: Partial<DetectorSettings>
}

/** The SPIFFE ID the CA must present: --ca-id, or spiffe://<our trust domain>/gatehouse/ca. */
function caIdFor (o: SidecarOptions, credentials: Credentials): string {
  return o.ca?.caId ?? `spiffe://${credentials.current?.id.trustDomain ?? o.trustDomain ?? 'unknown'}/gatehouse/ca`
}

/** Istio's default for an idle TCP connection: long enough for a database pool's idle connections. */
export const DEFAULT_TCP_IDLE_MS = 3_600_000

export interface Sidecar {
  inbound: Inbound
  outbound: Outbound | undefined
  admin: Admin
  credentials: Credentials
  policy: PolicyStore
  metrics: ProxyMetrics
  decisions: DecisionLog
  reloadPolicy: (trigger: string) => boolean
  stop: (drainMs?: number) => Promise<void>
}

/** Starts every part; if one fails, whatever already started is stopped before the error is rethrown. */
export async function startSidecar (o: SidecarOptions): Promise<Sidecar> {
  // node:http2's client pays for a deprecated property on every request (async-bind.ts).
  useLeanAsyncBind()
  const undo: Array<() => unknown> = []
  try {
    return await buildSidecar(o, undo)
  } catch (err) {
    for (const fn of undo.reverse()) { try { await fn() } catch { /* best effort: the start already failed */ } }
    throw err
  }
}

async function buildSidecar (o: SidecarOptions, undo: Array<() => unknown>): Promise<Sidecar> {
  const logger = o.logger
  const metrics = createProxyMetrics()
  const credentials = new Credentials()
  const onReload = (what: 'identity' | 'bundle', ok: boolean): void => { metrics.credentialReloads.inc({ what, result: ok ? 'success' : 'invalid' }) }
  let watches: FileWatch[]
  let rotator: Rotator | undefined
  if (o.ca !== undefined) {
    watches = [watchBundleFile(credentials, { bundleFile: o.trustBundleFile, ...(o.trustDomain === undefined ? {} : { trustDomain: o.trustDomain }), intervalMs: o.reloadIntervalMs, logger, onReload })]
    const trustDomain = o.trustDomain ?? credentials.bundle?.trustDomains[0]
    rotator = new Rotator({
      url: o.ca.url,
      credentials,
      caId: o.ca.caId ?? `spiffe://${trustDomain ?? 'unknown'}/gatehouse/ca`,
      ...(o.ca.tokenFile === undefined ? {} : { tokenFile: o.ca.tokenFile }),
      ...(o.ca.expectedId === undefined ? {} : { expectedId: o.ca.expectedId }),
      ...(o.trustDomain === undefined ? {} : { trustDomain: o.trustDomain }),
      logger,
      onRotated: () => { metrics.rotations.inc() },
      onFailure: (code) => { metrics.renewalFailures.inc({ code }) }
    })
    const r = rotator
    undo.push(() => { r.stop() })
    await rotator.start()
  } else {
    if (o.certFile === undefined || o.keyFile === undefined) throw new ConfigInvalidError(['an identity source is required: --cert and --key, or --ca-url'])
    watches = loadStaticFiles(credentials, {
      certFile: o.certFile,
      keyFile: o.keyFile,
      bundleFile: o.trustBundleFile,
      ...(o.trustDomain === undefined ? {} : { trustDomain: o.trustDomain }),
      intervalMs: o.reloadIntervalMs,
      logger,
      onReload
    })
  }
  const setExpiry = (): void => {
    metrics.certExpiry.reset()
    const c = credentials.current
    if (c !== undefined) {
      metrics.certExpiry.set({ cert: 'leaf', serial: c.leaf.serialHex }, c.notAfter.getTime() / 1000)
      for (const der of pemToDers(c.chainPem).slice(1)) {
        const issuer = parseCertificate(der)
        metrics.certExpiry.set({ cert: 'issuer', serial: issuer.serialHex }, issuer.notAfter.getTime() / 1000)
      }
    }
    for (const td of credentials.bundle?.trustDomains ?? []) {
      for (const root of credentials.bundle!.authoritiesFor(td)) metrics.certExpiry.set({ cert: 'root', serial: root.serialHex }, root.notAfter.getTime() / 1000)
    }
  }
  undo.push(() => { for (const w of watches) w.stop() })
  setExpiry()
  credentials.on('change', setExpiry)
  // Before any listener opens: an invalid routes file fails the start without leaving the inbound
  // listener serving (and the process unable to exit).
  const routes = new RouteTable()
  if (o.routesFile !== undefined) watches.push(watchRoutesFile(routes, { file: o.routesFile, trustDomain: () => credentials.current?.id.trustDomain, intervalMs: o.reloadIntervalMs, logger }))

  // Quarantine: from the CA when there is one (signed, long-polled), else from --quarantine-file.
  const quarantine = o.ca !== undefined
    ? followCaQuarantine({ url: o.ca.url, caId: caIdFor(o, credentials), credentials, logger })
    : o.quarantineFile !== undefined ? watchQuarantineFile(o.quarantineFile, o.reloadIntervalMs, logger) : noQuarantine()
  undo.push(() => { quarantine.stop() })
  metrics.quarantineEntries.set(quarantine.current.size)
  /** Our own identity is quarantined: this sidecar originates nothing. */
  const selfQuarantined = (): string | undefined => {
    const own = credentials.current?.id
    return own === undefined ? undefined : quarantine.current.holds(callerOf(own))?.reason
  }

  const policy = new PolicyStore({ file: o.policyFile, logger, onResult: (result) => { metrics.policyReloads.inc({ result }) } })
  // Start even with a bad policy file (deny everything, not ready) rather than crash-loop; the
  // operator sees why in the log and /readyz, and a fixed file is picked up without a restart.
  policy.reload('start')
  policy.watchFile(o.reloadIntervalMs)
  undo.push(() => { policy.stop() })

  // The compromise detectors: a suspicion is logged and counted, and reported to the CA if there is one.
  const detector = new Detector(o.detector ?? {})
  const applyCanaries = (): void => { detector.setCanaries(policy.current?.compiled.canaryPaths ?? []) }
  applyCanaries()
  policy.onChange(applyCanaries)
  const suspect = (s: Suspicion): void => {
    metrics.suspicions.inc({ detector: s.detector })
    logger.warn({ event: 'quarantine.suspect', subject: s.subject, detector: s.detector, detail: s.detail, evidence: s.evidence.map(e => `${e.chain}#${e.seq}`) }, 'a caller shows the signs of a compromised workload')
    if (o.ca !== undefined) void reportSuspicion({ url: o.ca.url, caId: caIdFor(o, credentials), credentials, logger }, s)
  }

  const decisions = new DecisionLog({
    ...(o.decisionLog === undefined ? {} : { destination: o.decisionLog }),
    ...(o.decisionLogStdout === undefined ? {} : { stdout: o.decisionLogStdout }),
    ...(o.decisionLogFile === undefined ? {} : { file: o.decisionLogFile }),
    ...(o.decisionLogMaxBytes === undefined ? {} : { maxFileBytes: o.decisionLogMaxBytes }),
    ...(o.decisionLogMaxFiles === undefined ? {} : { maxFiles: o.decisionLogMaxFiles }),
    ...(o.checkpointEvery === undefined ? {} : { checkpointEvery: o.checkpointEvery }),
    ...(o.checkpointIntervalMs === undefined ? {} : { checkpointIntervalMs: o.checkpointIntervalMs }),
    signer: () => {
      const c = credentials.current
      return c === undefined ? undefined : { spiffeId: c.id.toString(), chainDers: pemToDers(c.chainPem), privateKey: c.privateKey }
    },
    ...(o.decisionLogFsync === undefined ? {} : { fsync: o.decisionLogFsync }),
    onLine: (kind) => { metrics.decisionLine(kind) },
    onUnwritable: (reason) => {
      metrics.decisionLogWritable.set(0)
      metrics.decisionLogFailures.inc()
      logger.error({ event: 'decision_log.unwritable', reason }, 'the decision log cannot be written: refusing every request with 503 until it can')
    },
    onLinesLost: (requestIds) => { logger.warn({ event: 'decision_log.line_lost', requestIds }, 'decision lines not written: the decision log cannot be written') },
    onResumed: (info) => {
      metrics.decisionLogWritable.set(1)
      logger.info({ event: 'decision_log.resumed', ...info }, 'the decision log can be written again: forwarding resumed')
    },
    onCheckpointError: (err) => { logger.error({ event: 'decision_log.checkpoint_failed', reason: err.message }, 'could not sign a decision-log checkpoint') }
  })
  if (decisions.problem() === undefined) metrics.decisionLogWritable.set(1)
  const pool = createUpstreamPool(o.upstream, { responseTimeoutMs: o.upstreamTimeoutMs, connectTimeoutMs: o.upstreamConnectTimeoutMs })
  undo.push(async () => { await decisions.close() })
  undo.push(async () => { await pool.close() })
  const app = createAppUpstream(o.upstream, o.upstreamProtocol ?? 'auto', pool, { responseTimeoutMs: o.upstreamTimeoutMs, connectTimeoutMs: o.upstreamConnectTimeoutMs })
  undo.push(async () => { await app.h2c.close() })
  const inbound = await startInbound({
    listen: o.inbound,
    credentials,
    policy,
    decisions,
    metrics,
    logger,
    app,
    tlsMinVersion: o.tlsMinVersion,
    handshakeTimeoutMs: o.handshakeTimeoutMs,
    headersTimeoutMs: o.headersTimeoutMs,
    requestTimeoutMs: o.requestTimeoutMs,
    idleTimeoutMs: o.idleTimeoutMs,
    ...(o.sendTimeoutMs === undefined ? {} : { sendTimeoutMs: o.sendTimeoutMs }),
    maxHeaderSize: o.maxHeaderSize,
    maxConnections: o.maxConnections,
    ...(o.maxPendingHandshakes === undefined ? {} : { maxPendingHandshakes: o.maxPendingHandshakes }),
    ...(o.maxConcurrentStreams === undefined ? {} : { maxConcurrentStreams: o.maxConcurrentStreams }),
    upgradeProtocols: o.upgradeProtocols ?? DEFAULT_UPGRADE_PROTOCOLS,
    ...(o.tcpUpstreams === undefined ? {} : { tcpUpstreams: o.tcpUpstreams }),
    tcpIdleTimeoutMs: o.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_MS,
    upstreamConnectTimeoutMs: o.upstreamConnectTimeoutMs,
    quarantine,
    onDecision: (fields, seq) => {
      const s = detector.observe(fields, seq, decisions.chain)
      if (s !== undefined) suspect(s)
    },
    onQuarantinedPeer: (peer) => {
      const s = detector.quarantinedPeer(peer.id)
      if (s !== undefined) suspect(s)
    }
  })
  undo.push(async () => { await inbound.close(0) })
  const outbound = o.outbound === undefined
    ? undefined
    : await startOutbound({ listen: o.outbound, credentials, routes, logger, connectTimeoutMs: o.upstreamConnectTimeoutMs, responseTimeoutMs: o.upstreamTimeoutMs, allowConnect: o.allowConnect ?? [], tcpIdleTimeoutMs: o.tcpIdleTimeoutMs ?? DEFAULT_TCP_IDLE_MS, routeMaxConnections: o.routeMaxConnections ?? 1024, selfQuarantined, quarantine, ...(o.meshHttp1 === undefined ? {} : { meshHttp1: o.meshHttp1 }) })
  undo.push(async () => { await outbound?.close() })
  const admin = await startAdmin({
    listen: o.admin,
    ...(o.appProbes === undefined ? {} : { appProbes: o.appProbes }),
    ...(o.adminExposeMetrics === undefined ? {} : { exposeMetrics: o.adminExposeMetrics }),
    registry: metrics.registry,
    notReady: () => {
      const reasons: string[] = []
      if (!credentials.ready()) reasons.push('no valid workload certificate')
      if (policy.current === undefined) reasons.push('no valid policy loaded')
      const log = decisions.problem()
      if (log !== undefined) reasons.push(log)
      return reasons
    }
  })
  // Like the other listeners: a newcomer reads from the log where /readyz and /metrics answer.
  logger.info({ event: 'admin.listening', host: o.admin.host, port: admin.port }, 'admin listener ready (/healthz, /readyz, /metrics)')
  let stopping: Promise<void> | undefined
  return {
    inbound,
    outbound,
    admin,
    credentials,
    policy,
    metrics,
    decisions,
    reloadPolicy: (trigger) => policy.reload(trigger),
    // Idempotent: a second stop() (a signal after an explicit stop) waits for the first.
    stop: async (drainMs = 5000) => {
      stopping ??= (async () => {
      rotator?.stop()
      quarantine.stop()
      for (const w of watches) w.stop()
      policy.stop()
      await Promise.all([inbound.close(drainMs), outbound?.close(drainMs)])
      await admin.close()
      await Promise.all([pool.close(), app.h2c.close()])
      await decisions.close()
      })()
      await stopping
    }
  }
}
