import { readBody } from '../http-body.ts'
import { sendError } from '../error-body.ts'
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { asGatehouseError, MethodNotAllowedError, NotFoundError, UnsupportedMediaTypeError } from '../errors.ts'
import { watchFiles, type FileWatch } from '../file-watch.ts'
import type { Logger } from '../log.ts'
import { admit } from './admission.ts'
import { NAMESPACE_LABEL, type InjectorConfig } from './injector-config.ts'
import { admissionOutcome, createInjectorMetrics, type InjectorMetrics } from './injector-metrics.ts'
import { startMetricsServer, type MetricsServer } from '../metrics-server.ts'
import type { Credentials } from '../identity/credentials.ts'
import { watchServingCert, DEFAULT_WARN_BEFORE_MS } from './serving-cert.ts'

/** The name the API server calls the webhook by, in deploy/ (Service gatehouse-injector in gatehouse-system). */
export const DEFAULT_DNS_NAME = 'gatehouse-injector.gatehouse-system.svc'

// The mutating webhook over HTTPS:
//   POST /mutate                     AdmissionReview v1 -> AdmissionReview v1 (pod annotation opt-in)
//   POST /mutate/namespace-enabled   the same, for the webhook entry whose namespaceSelector matched
//                                    gatehouse.io/inject=enabled (a review carries no namespace labels,
//                                    and this server never calls the Kubernetes API to look them up)
//   GET  /healthz
// Prometheus metrics (metrics.ts) are served on a separate plain-HTTP listener, `metricsListen`.
// Every decision is one log line. A review it cannot read is still answered "allowed" (HTTP 200);
// only HTTP-level misuse (wrong path, method, media type, oversize body) gets a 4xx.

/** Pod objects are bounded by etcd's 1.5 MiB request limit; the review wraps one with little else. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

export const ROUTES: Record<string, Record<string, string>> = {
  '/mutate': {},
  '/mutate/namespace-enabled': { [NAMESPACE_LABEL]: 'enabled' }
}

export interface InjectorServerOptions {
  listen: { host: string, port: number }
  /** The serving certificate: files (reloaded on change: cert-manager renews them), or the SVID rotated from the Gatehouse CA. */
  tls: { certFile: string, keyFile: string } | { credentials: Credentials }
  /** The DNS name the API server calls the webhook by (checked in the certificate). */
  dnsName?: string
  /** Warn this long before the certificate expires (default 30 days; later for short-lived certificates). */
  certWarnBeforeMs?: number
  config: InjectorConfig
  logger: Logger
  maxBodyBytes?: number
  /** How often the serving cert/key files are checked for changes (cert-manager renews them). */
  reloadIntervalMs?: number
  /** Serve GET /metrics over plain HTTP here (`inject serve --metrics-listen`); none when unset. */
  metricsListen?: { host: string, port: number }
}

export interface RunningInjector { server: Server, port: number, metrics: InjectorMetrics, metricsPort?: number, close: () => Promise<void> }

function send (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers })
  res.end(JSON.stringify(body))
}

const servingTls = (o: InjectorServerOptions): { cert: string, key: string } => {
  if ('credentials' in o.tls) { const { cert, key } = o.tls.credentials.tls(); return { cert, key } }
  return { cert: readFileSync(o.tls.certFile, 'utf8'), key: readFileSync(o.tls.keyFile, 'utf8') }
}

export async function startInjectorServer (opts: InjectorServerOptions): Promise<RunningInjector> {
  const { logger, config } = opts
  const limit = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  const metrics = createInjectorMetrics()

  async function mutate (req: IncomingMessage, res: ServerResponse, namespaceLabels: Record<string, string>): Promise<void> {
    const started = performance.now()
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
    if (type !== 'application/json') throw new UnsupportedMediaTypeError('application/json')
    const text = (await readBody(req, limit)).toString('utf8')
    let body: unknown
    try { body = JSON.parse(text) } catch { body = undefined }
    const { review, decision } = admit(body, { namespaceLabels, config })
    const durationMs = Math.round((performance.now() - started) * 1000) / 1000
    const outcome = admissionOutcome(decision)
    metrics.admissions.inc({ outcome, reason: decision.reason })
    metrics.duration.observe({ outcome }, durationMs / 1000)
    metrics.warnings.inc(decision.warnings.length)
    logger.info({ event: 'inject.decision', ...decision, durationMs }, decision.injected ? 'injected' : 'not injected')
    send(res, 200, review)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`
    try {
      const path = (req.url ?? '/').split('?')[0]!
      const namespaceLabels = ROUTES[path]
      if (namespaceLabels !== undefined) {
        if (req.method !== 'POST') throw new MethodNotAllowedError()
        await mutate(req, res, namespaceLabels)
      } else if (path === '/healthz') {
        if (req.method !== 'GET' && req.method !== 'HEAD') throw new MethodNotAllowedError()
        send(res, 200, { status: 'ok' })
      } else {
        throw new NotFoundError()
      }
    } catch (err) {
      const e = asGatehouseError(err)
      if (e.code === 'GH_INTERNAL') logger.error({ err, remote }, 'unexpected error in the injector')
      else logger.warn({ event: 'inject.refused', code: e.code, reason: e.message, remote }, 'request refused')
      if (ROUTES[(req.url ?? '/').split('?')[0]!] !== undefined) metrics.admissions.inc({ outcome: 'refused', reason: e.code })
      if (!res.headersSent) sendError(res, e, e.status === 413 ? { connection: 'close' } : {})
      else res.destroy()
    }
  }

  const server = createServer({
    ...servingTls(opts),
    minVersion: 'TLSv1.2',
    // The API server's webhook timeout is 10 s at most by default; nothing legitimate is slower.
    headersTimeout: 10_000,
    requestTimeout: 30_000,
    keepAliveTimeout: 30_000,
    maxHeaderSize: 16 * 1024
  }, (req, res) => { void handle(req, res) })
  server.on('tlsClientError', (err) => { logger.debug({ err: err.message }, 'TLS handshake failed') })

  const reload = (): void => {
    try {
      server.setSecureContext(servingTls(opts))
      logger.info({ event: 'inject.cert_reloaded' }, 'serving certificate reloaded')
      expiry.check()
    } catch (err) {
      // cert and key are written one after the other: a mismatched pair now is fixed at the next check.
      logger.warn({ event: 'inject.cert_reload_failed', reason: (err as Error).message }, 'serving certificate changed but cannot be loaded; keeping the current one')
    }
  }
  const tls = opts.tls
  const watch: FileWatch | undefined = 'credentials' in tls
    ? undefined
    : opts.reloadIntervalMs === undefined ? undefined : watchFiles([tls.certFile, tls.keyFile], opts.reloadIntervalMs, reload)
  // A rotated SVID replaces the context at once (the Credentials only ever hold a verified one).
  if ('credentials' in tls) tls.credentials.on('change', reload)
  const expiry = watchServingCert({
    current: () => { try { return servingTls(opts).cert } catch { return undefined } },
    dnsName: opts.dnsName ?? DEFAULT_DNS_NAME,
    warnBeforeMs: opts.certWarnBeforeMs ?? DEFAULT_WARN_BEFORE_MS,
    gauge: metrics.certExpiry,
    logger
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.listen.port, opts.listen.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  logger.info({ event: 'inject.listening', host: opts.listen.host, port, image: config.image, caUrl: config.caUrl, trustDomain: config.trustDomain }, 'injector webhook listening')
  let metricsServer: MetricsServer | undefined
  const close = async (): Promise<void> => {
    watch?.stop()
    expiry.stop()
    if ('credentials' in tls) tls.credentials.off('change', reload)
    server.closeIdleConnections()
    await Promise.all([new Promise<void>(resolve => server.close(() => { resolve() })), metricsServer?.close()])
  }
  if (opts.metricsListen !== undefined) {
    try { metricsServer = await startMetricsServer(metrics.registry, opts.metricsListen, logger, 'inject.metrics_listening') } catch (err) { await close(); throw err }
  }
  return { server, port, metrics, ...(metricsServer === undefined ? {} : { metricsPort: metricsServer.port }), close }
}
