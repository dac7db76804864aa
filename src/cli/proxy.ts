import { existsSync } from 'node:fs'
import type { X509Certificate } from 'node:crypto'
import { loadConfig, type Schema } from '../config.ts'
import { parseHostPort } from '../hostport.ts'
import { PORTS } from '../ports.ts'
import { ConfigInvalidError } from '../errors.ts'
import { createLogger } from '../log.ts'
import { startSidecar } from '../proxy/sidecar.ts'
import { parseAppProbes } from '../proxy/admin.ts'
import { parseRoutes } from '../proxy/routes.ts'
import { DEFAULT_UPGRADE_PROTOCOLS, upgradeListProblems } from '../proxy/upgrade.ts'
import { UNBOUNDED_LIMITS, limitsForMemory } from '../proxy/connection-budget.ts'
import { UPSTREAM_PROTOCOLS, type UpstreamProtocol } from '../proxy/app-upstream.ts'
import { DEFAULT_MAX_CONCURRENT_STREAMS } from '../proxy/inbound-h2.ts'
import { checkReadable, checkKeyPair, checkListen, nameListenFailure, readArg, readBundleArg } from './check.ts'
import type { Runner } from './runner.ts'

/** The trust domain of a certificate's spiffe:// URI SAN, if it has one. */
function spiffeTrustDomain (cert: X509Certificate): string | undefined {
  return /URI:spiffe:\/\/([^/,\s]+)/.exec(cert.subjectAltName ?? '')?.[1]
}

/** --upstream-tcp HOST:PORT…: keyed by the app port, the port a caller's route names. */
function parseTcpUpstreams (list: string[]): Map<number, { host: string, port: number }> {
  const out = new Map<number, { host: string, port: number }>()
  const problems: string[] = []
  for (const item of list) {
    const hp = parseHostPort(item)
    if (hp === undefined || hp.port === 0) problems.push(`--upstream-tcp: expected HOST:PORT of an app port (e.g. 127.0.0.1:6379), got ${JSON.stringify(item)}`)
    else if (out.has(hp.port)) problems.push(`--upstream-tcp: app port ${hp.port} is given twice`)
    else out.set(hp.port, hp)
  }
  if (problems.length > 0) throw new ConfigInvalidError(problems)
  return out
}

export const proxySchema = {
  inbound: { kind: 'hostport', default: `0.0.0.0:${PORTS.inbound}`, help: 'mTLS listener for inbound calls' },
  upstream: { kind: 'hostport', default: '127.0.0.1:8080', help: 'the app' },
  'upstream-tcp': { kind: 'list', default: [], help: 'opaque TCP app ports served through the inbound listener, HOST:PORT each (e.g. 127.0.0.1:6379); callers name the port, policy rules with ports: [6379] authorize them' },
  'tcp-idle-timeout': { kind: 'duration', default: '1h', help: 'an opaque TCP connection with no byte either way for this long is closed (inbound and route listeners)' },
  'quarantine-file': { kind: 'string', help: 'without --ca-url: the quarantine list (YAML, docs/quarantine.md), watched like the policy; a missing file means no one is quarantined. With --ca-url the list comes from the CA, signed' },
  'scan-denials': { kind: 'int', default: 20, min: 1, help: 'the scan detector trips on this many denials from one caller... (docs/quarantine.md)' },
  'scan-distinct-paths': { kind: 'int', default: 10, min: 1, help: '... over at least this many distinct paths ...' },
  'scan-window': { kind: 'duration', default: '10s', help: '... within this long; a tripped detector is logged, counted and reported to the CA' },
  'route-max-connections': { kind: 'int', default: 1024, min: 1, help: 'connections each route listener (routes with listen:) accepts at once' },
  'upstream-protocol': { kind: 'enum', values: UPSTREAM_PROTOCOLS, default: 'auto', help: 'how requests reach the app: auto (gRPC over h2c, the rest over HTTP/1.1), http1, or h2c (everything over h2c, prior knowledge)' },
  admin: { kind: 'hostport', default: `127.0.0.1:${PORTS.admin}`, help: 'healthz, readyz, metrics; off loopback (e.g. 0.0.0.0 in a pod, for the kubelet) only the probe paths answer' },
  'admin-expose-metrics': { kind: 'bool', default: false, help: 'also serve /metrics on the admin listener\'s non-loopback addresses (for a Prometheus scraping the pod IP)' },
  outbound: { kind: 'hostport', default: `127.0.0.1:${PORTS.outbound}`, help: 'HTTP proxy for the app\'s outbound calls (HTTP_PROXY)' },
  routes: { kind: 'string', help: 'outbound destinations (YAML), reloaded on change; without it every destination is refused' },
  'allow-connect': { kind: 'list', default: [], help: 'host:port pairs the app may CONNECT to (opaque, outside the mesh)' },
  'mesh-http1': { kind: 'bool', default: false, help: 'carry the app\'s HTTP/1.1 calls to other sidecars on kept-alive HTTP/1.1 mTLS connections (as Istio does) instead of streams on one HTTP/2 link per destination (as Linkerd does): less CPU (bench/README.md), but a burst, cold start or rotation opens a connection per call in flight; gRPC always takes the link' },
  'upgrade-protocols': { kind: 'list', default: [...DEFAULT_UPGRADE_PROTOCOLS], help: 'Upgrade protocols relayed inbound after authorization; any other Upgrade gets 400 (h2c can never be listed)' },
  policy: { kind: 'string', required: true, help: 'policy file (YAML), reloaded on change and SIGHUP' },
  'trust-bundle': { kind: 'string', required: true, help: 'PEM trust bundle, reloaded on change; may hold several roots' },
  cert: { kind: 'string', help: 'workload certificate chain (PEM), reloaded on change (or use --ca-url)' },
  key: { kind: 'string', help: 'workload private key (PEM), reloaded on change' },
  'ca-url': { kind: 'string', help: 'gatehouse CA, e.g. https://gatehouse-ca.gatehouse-system.svc:15443: identity issued and rotated by it' },
  'token-file': { kind: 'string', help: 'join token or projected service-account token, re-read at each request to the CA' },
  'ca-id': { kind: 'string', help: 'SPIFFE ID the CA must present (default spiffe://<trust domain>/gatehouse/ca)' },
  'spiffe-id': { kind: 'string', help: 'if set, the CA must issue exactly this ID' },
  'trust-domain': { kind: 'string', help: 'trust domain for bundle roots without a spiffe:// SAN' },
  'reload-interval': { kind: 'duration', default: '2s', help: 'how often cert, key, bundle and policy files are checked for changes' },
  'tls-min-version': { kind: 'enum', values: ['1.3', '1.2'], default: '1.3', help: 'lowest TLS version accepted inbound' },
  'memory-limit': { kind: 'string', help: 'the container\'s memory limit (e.g. 256Mi; set by the injector): max-connections, max-pending-handshakes and the handshake and idle timeouts are derived from it unless given' },
  'handshake-timeout': { kind: 'duration', help: 'TLS handshake deadline (default 10s; 5s under a --memory-limit below 512Mi)' },
  'headers-timeout': { kind: 'duration', default: '10s', help: 'deadline for a request\'s headers (slowloris)' },
  'request-timeout': { kind: 'duration', default: '300s', help: 'deadline for a whole request, body included' },
  'idle-timeout': { kind: 'duration', help: 'keep-alive idle timeout (default 60s; 30s under a --memory-limit below 512Mi)' },
  'send-timeout': { kind: 'duration', default: '60s', min: 0, help: 'a caller that takes none of its answer for this long loses its HTTP/1.1 connection or HTTP/2 stream (against slow reads holding app connections, as nginx\'s send_timeout; 0s: never)' },
  'max-header-size': { kind: 'int', default: 16384, min: 1024, help: 'max request header bytes (431 beyond)' },
  'max-connections': { kind: 'int', min: 1, help: 'max concurrent inbound connections (default 10000, or derived from --memory-limit)' },
  'max-concurrent-streams': { kind: 'int', default: DEFAULT_MAX_CONCURRENT_STREAMS, min: 1, help: 'HTTP/2 streams one inbound connection may have open at once; more are refused (REFUSED_STREAM)' },
  'max-pending-handshakes': { kind: 'int', min: 1, help: 'max inbound connections still in their TLS handshake; past it the oldest is cut (default 1024, or derived from --memory-limit)' },
  'upstream-timeout': { kind: 'duration', default: '30s', help: 'time for the app to start answering (504 beyond)' },
  'upstream-connect-timeout': { kind: 'duration', default: '2s', help: 'time to connect to the app (502 beyond)' },
  'decision-log': { kind: 'string', help: 'also write the decision log to this file (size-rotated, chain kept across files)' },
  'decision-log-stdout': { kind: 'bool', default: true, help: 'write the decision log to stdout' },
  'decision-log-max-bytes': { kind: 'int', default: 104857600, min: 4096, help: 'rotate the decision-log file at this size' },
  'decision-log-max-files': { kind: 'int', default: 0, min: 0, help: 'rotated decision-log files kept (0: all); the oldest is deleted past it, for a size-limited volume whose lines are also shipped from stdout' },
  'decision-log-fsync': { kind: 'bool', default: false, help: 'fsync the decision-log file after every line: survives a machine crash, not only a sidecar kill (costs a disk flush per line)' },
  'checkpoint-every': { kind: 'int', default: 1000, min: 1, help: 'sign a decision-log checkpoint every N lines' },
  'checkpoint-interval': { kind: 'duration', default: '5s', help: '... or at least this often while lines are written' },
  'app-probes': { kind: 'string', help: 'JSON of the app\'s HTTP probes to relay at /app-health/... (set by the injector)' },
  'drain-timeout': { kind: 'duration', default: '10s', help: 'on SIGTERM, how long in-flight requests may finish' }
} as const satisfies Schema

export const proxy: Runner = async (argv, io) => {
  const c = loadConfig('proxy', proxySchema, { argv, maxPositionals: 0 })
  const sources = [c.caUrl !== undefined, c.cert !== undefined || c.key !== undefined].filter(Boolean).length
  if (sources !== 1 || (c.caUrl === undefined && (c.cert === undefined || c.key === undefined))) {
    throw new ConfigInvalidError(['exactly one identity source is required: --cert FILE --key FILE (static, reloaded on change), or --ca-url URL [--token-file FILE] (issued and rotated by the CA)'])
  }
  const tcpUpstreams = parseTcpUpstreams(c.upstreamTcp)
  const upgradeProblems = upgradeListProblems(c.upgradeProtocols)
  if (upgradeProblems.length > 0) throw new ConfigInvalidError(upgradeProblems.map(p => `--upgrade-protocols: ${p}`))
  const limits = (() => { try { return c.memoryLimit === undefined ? UNBOUNDED_LIMITS : limitsForMemory(c.memoryLimit) } catch (err) { throw new ConfigInvalidError([`--memory-limit: expected a memory quantity such as 256Mi or 1Gi, got ${JSON.stringify(c.memoryLimit)} (${(err as Error).message})`]) } })()
  const appProbes = (() => { try { return parseAppProbes(c.appProbes) } catch (err) { throw new ConfigInvalidError([`--app-probes: ${(err as Error).message}`]) } })()
  // Before anything is loaded or logged: every named file readable, the key the certificate's, each
  // listen address free. (A policy that is present but invalid is not refused here: the sidecar then
  // starts not ready and keeps relaying the app's probes, and picks up the fixed file when it changes.)
  checkReadable('--policy', c.policy)
  const bundle = readBundleArg('--trust-bundle', c.trustBundle, c.trustDomain)
  const cert = c.cert === undefined ? undefined : checkKeyPair('--cert', c.cert, '--key', c.key!)
  if (c.tokenFile !== undefined) checkReadable('--token-file', c.tokenFile)
  if (c.routes !== undefined && existsSync(c.routes)) {
    // Missing is allowed (an optional ConfigMap not created yet); present but invalid fails the start.
    const trustDomain = c.trustDomain ?? (cert === undefined ? undefined : spiffeTrustDomain(cert)) ?? bundle.trustDomains[0]
    parseRoutes(readArg('--routes', c.routes), c.routes, trustDomain)
  }
  const listeners: Array<[string, { host: string, port: number }]> = [['--inbound', c.inbound], ['--outbound', c.outbound], ['--admin', c.admin]]
  await checkListen(listeners)
  const logger = createLogger('gatehouse-proxy')
  const sidecar = await startSidecar({
    inbound: c.inbound,
    upstream: c.upstream,
    upstreamProtocol: c.upstreamProtocol as UpstreamProtocol, // one of the enum's values: the schema checked it
    admin: c.admin,
    adminExposeMetrics: c.adminExposeMetrics,
    outbound: c.outbound,
    ...(c.routes === undefined ? {} : { routesFile: c.routes }),
    allowConnect: c.allowConnect,
    meshHttp1: c.meshHttp1,
    upgradeProtocols: c.upgradeProtocols,
    policyFile: c.policy,
    trustBundleFile: c.trustBundle,
    ...(c.cert === undefined ? {} : { certFile: c.cert }),
    ...(c.key === undefined ? {} : { keyFile: c.key }),
    ...(c.caUrl === undefined ? {} : { ca: { url: c.caUrl, ...(c.tokenFile === undefined ? {} : { tokenFile: c.tokenFile }), ...(c.caId === undefined ? {} : { caId: c.caId }), ...(c.spiffeId === undefined ? {} : { expectedId: c.spiffeId }) } }),
    ...(c.trustDomain === undefined ? {} : { trustDomain: c.trustDomain }),
    reloadIntervalMs: c.reloadInterval,
    tlsMinVersion: c.tlsMinVersion === '1.2' ? 'TLSv1.2' : 'TLSv1.3',
    handshakeTimeoutMs: c.handshakeTimeout ?? limits.handshakeTimeoutMs,
    headersTimeoutMs: c.headersTimeout,
    requestTimeoutMs: c.requestTimeout,
    idleTimeoutMs: c.idleTimeout ?? limits.idleTimeoutMs,
    sendTimeoutMs: c.sendTimeout,
    maxHeaderSize: c.maxHeaderSize,
    maxConnections: c.maxConnections ?? limits.maxConnections,
    maxPendingHandshakes: c.maxPendingHandshakes ?? limits.maxPendingHandshakes,
    maxConcurrentStreams: c.maxConcurrentStreams,
    upstreamTimeoutMs: c.upstreamTimeout,
    upstreamConnectTimeoutMs: c.upstreamConnectTimeout,
    logger,
    ...(c.decisionLog === undefined ? {} : { decisionLogFile: c.decisionLog }),
    decisionLogStdout: c.decisionLogStdout,
    decisionLogMaxBytes: c.decisionLogMaxBytes,
    decisionLogMaxFiles: c.decisionLogMaxFiles,
    decisionLogFsync: c.decisionLogFsync,
    checkpointEvery: c.checkpointEvery,
    checkpointIntervalMs: c.checkpointInterval,
    appProbes,
    tcpUpstreams,
    ...(c.quarantineFile === undefined ? {} : { quarantineFile: c.quarantineFile }),
    tcpIdleTimeoutMs: c.tcpIdleTimeout,
    detector: { scanDenials: c.scanDenials, scanDistinctPaths: c.scanDistinctPaths, scanWindowMs: c.scanWindow },
    routeMaxConnections: c.routeMaxConnections
  }).catch((err: unknown) => { throw nameListenFailure(listeners, err) })
  process.on('SIGHUP', () => { sidecar.reloadPolicy('SIGHUP') })
  io.onShutdown(async () => { await sidecar.stop(c.drainTimeout) })
  return undefined
}
