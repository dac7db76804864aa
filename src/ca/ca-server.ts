import { readBody } from '../http-body.ts'
import { sendError } from '../error-body.ts'
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { TLSSocket } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { generateKey } from '../x509/keys.ts'
import { verifyCsr } from '../x509/csr.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { verifyX509Svid } from '../spiffe/svid.ts'
import { peerChain } from '../spiffe/peer.ts'
import {
  GatehouseError, asGatehouseError, BadRequestError, CsrInvalidError, MethodNotAllowedError,
  NotFoundError, QuarantinedError, RateLimitedError, TokenInvalidError, UnsupportedMediaTypeError
} from '../errors.ts'
import type { Logger } from '../log.ts'
import { FILES, type CaMaterial } from './ca-directory.ts'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import { watchFiles } from '../file-watch.ts'
import type { Issuer } from './issuer.ts'
import type { Attestor, Attestation } from './attest.ts'
import type { RateLimiter } from './rate-limit.ts'
import { originFor, DEFAULT_MAX_RENEWAL_CHAIN_AGE_MS } from './renewal.ts'
import type { RenewalOrigin } from '../x509/origin.ts'
import { QuarantineBook } from './quarantine-book.ts'
import { ReportDesk, type ReportDeskOptions } from './reports.ts'
import { createCaMetrics, caRoute, reportOutcome, type CaMetrics } from './ca-metrics.ts'
import { startMetricsServer, type MetricsServer } from '../metrics-server.ts'
import { watchExpiry } from './issuer-renewal.ts'
import { BundlePublisher, type BundlePublisherOptions } from './bundle-publisher.ts'

// The CA's HTTPS API:
//   POST /v1/svid   Authorization: Bearer <join or service-account token> (or an mTLS client SVID
//                   for renewal), body {"csr": "<PEM>"} -> {spiffeId, serial, chain, bundle, expiresAt}
//                   An SVID renews only as its original attestation allows (renewal.ts).
//   GET  /v1/bundle PEM trust anchors (or the SPIFFE bundle JSON with Accept: application/json)
//   GET  /v1/quarantine[?revision=R&wait=S]  the quarantine list, signed, long-polled (quarantine.ts)
//   POST /v1/reports  a sidecar reports a suspected compromised caller, by its own SVID (reports.ts)
//   GET  /healthz
// Prometheus metrics (metrics.ts) are served on a separate plain-HTTP listener, `metricsListen`.
// Every issuance and every refusal is one log line; errors become a response in one place.

export const MAX_BODY_BYTES = 64 * 1024
const SERVING_TTL_MS = 24 * 3_600_000

export interface CaServerOptions {
  ca: CaMaterial
  issuer: Issuer
  attestor: Attestor
  limiter: RateLimiter
  logger: Logger
  listen: { host: string, port: number }
  servingId?: string
  servingDns?: string[]
  servingIps?: string[]
  /** How long a join-token identity may renew with its SVID alone, from the join token's use (default 24 h). */
  maxRenewalChainAgeMs?: number
  /** The time renewal chains are started and aged by (tests move it; certificate validity is the issuer's). */
  clock?: () => Date
  /** What a quarantine report may do (reports.ts); default audit, quorum 1, never the CA's own identities, 1 h. */
  autoQuarantine?: Partial<Pick<ReportDeskOptions, 'mode' | 'quorum' | 'neverQuarantine' | 'ttlMs'>>
  /** Re-read the CA directory when its files change (root rotation, issuer renewal). */
  reload?: { intervalMs: number, load: () => { ca: CaMaterial, issuer: Issuer } }
  /** Serve GET /metrics over plain HTTP here (`ca serve --metrics-listen`); none when unset. */
  metricsListen?: { host: string, port: number }
  /** DNS SANs added to the SVIDs of these SPIFFE IDs (`--dns-san`): the injector's webhook serving certificate. */
  dnsSans?: ReadonlyMap<string, string[]>
  /** Publish the trust bundle to Kubernetes (`--publish-trust-bundle`, `--webhook-ca-bundle`). */
  publisher?: Omit<BundlePublisherOptions, 'bundlePem' | 'logger' | 'metrics'>
}

export interface RunningCaServer { server: Server, port: number, quarantine: QuarantineBook, metrics: CaMetrics, metricsPort?: number, publisher?: BundlePublisher, close: () => Promise<void> }

function send (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'application/x-pem-file' : 'application/json', 'cache-control': 'no-store', ...headers })
  res.end(text)
}

export async function startCaServer (opts: CaServerOptions): Promise<RunningCaServer> {
  let { ca, issuer } = opts
  const { attestor, limiter, logger } = opts
  const maxChainAgeMs = opts.maxRenewalChainAgeMs ?? DEFAULT_MAX_RENEWAL_CHAIN_AGE_MS
  const clock = opts.clock ?? (() => new Date())
  const servingId = SpiffeId.parse(opts.servingId ?? `spiffe://${ca.trustDomain}/gatehouse/ca`)
  const quarantine = new QuarantineBook(ca, logger)
  quarantine.start()
  const metrics = createCaMetrics()
  metrics.watch({ ca: () => ca, quarantineEntries: () => quarantine.current.entries.length })
  const auto = opts.autoQuarantine ?? {}
  const reports = new ReportDesk({
    dir: ca.dir,
    trustDomain: ca.trustDomain,
    book: quarantine,
    logger,
    mode: auto.mode ?? 'audit',
    quorum: auto.quorum ?? 1,
    // The CA itself and the injector (spiffe://TD/gatehouse/...) are never quarantined automatically.
    neverQuarantine: auto.neverQuarantine ?? [`spiffe://${ca.trustDomain}/gatehouse/**`],
    ttlMs: auto.ttlMs ?? 3_600_000
  })

  /** A report's sender: its client SVID, and nothing else (a bearer token says nothing about a sidecar). */
  function reporterOf (req: IncomingMessage): SpiffeId {
    const chain = peerChain(req.socket as TLSSocket)
    if (chain.length === 0) throw new TokenInvalidError('a report must come over mTLS with the reporting sidecar\'s SVID')
    return verifyX509Svid([...chain, ca.issuer.der], ca.bundle).id
  }

  // The serving certificate is an SVID from our own issuer with a key that exists only in memory;
  // it renews itself at half-life.
  // No `ca` in the context: OpenSSL would then verify client certificates itself, and Node 24 stops
  // exposing the presented chain (nodejs/node#65579). Client SVIDs are verified by verifyX509Svid.
  const servingContext = (): { key: string, cert: string } => {
    const key = generateKey('ec-p256')
    const svid = issuer.issue({ id: servingId, publicKey: key.publicKey, ttlMs: SERVING_TTL_MS, dns: opts.servingDns ?? ['localhost'], ips: opts.servingIps ?? ['127.0.0.1', '::1'] })
    return { key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), cert: svid.chainPem }
  }

  async function authenticate (req: IncomingMessage): Promise<Attestation> {
    const auth = req.headers.authorization
    if (auth !== undefined) {
      const m = /^Bearer\s+(\S+)$/i.exec(auth)
      if (m === null) throw new TokenInvalidError('Authorization must be "Bearer <token>"')
      return await attestor.fromBearer(m[1]!)
    }
    const chain = peerChain(req.socket as TLSSocket)
    if (chain.length > 0) {
      // Our own issuer is a known intermediate, so a client that sends only its leaf can still renew.
      const svid = verifyX509Svid([...chain, ca.issuer.der], ca.bundle)
      return { method: 'svid', id: svid.id, serial: svid.leaf.serialHex, origin: svid.leaf.profile.renewalOrigin }
    }
    throw new TokenInvalidError('no credentials: send a bearer token or present your current SVID')
  }

  async function issueSvid (req: IncomingMessage, res: ServerResponse, remote: string): Promise<void> {
    let attestation: Attestation | undefined
    try {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
      if (type !== 'application/json') throw new UnsupportedMediaTypeError('application/json')
      const body = await readBody(req, MAX_BODY_BYTES)
      let csr: unknown
      try { csr = (JSON.parse(body.toString('utf8')) as { csr?: unknown })?.csr } catch { throw new BadRequestError('body is not valid JSON') }
      if (typeof csr !== 'string') throw new CsrInvalidError('body must be {"csr": "<PEM certificate request>"}')
      const publicKey = verifyCsr(csr)
      attestation = await authenticate(req)
      // A quarantined identity gets nothing, by token or by SVID: it dies at its certificate's expiry.
      const held = quarantine.holds(attestation.id)
      if (held !== undefined) throw new QuarantinedError(attestation.id.toString(), held.reason)
      const origin = originFor(attestation, clock(), maxChainAgeMs)
      const wait = limiter.take(attestation.id.toString())
      if (wait > 0) throw new RateLimitedError(wait)
      // Only now, with everything else in order, is a single-use join token spent.
      if (attestation.method === 'join-token') attestation.consume()
      const dns = opts.dnsSans?.get(attestation.id.toString())
      const svid = issuer.issue({ id: attestation.id, publicKey, origin, ...(dns === undefined ? {} : { dns }) })
      metrics.svidRequests.inc({ result: 'issued', code: '', attestation: attestation.method })
      logger.info({ event: 'svid.issued', spiffeId: svid.id, serial: svid.serial, notAfter: svid.notAfter.toISOString(), attestation: attestation.method, ...chain(origin), ...detail(attestation), remote }, 'issued SVID')
      send(res, 200, { spiffeId: svid.id, serial: svid.serial, chain: svid.chainPem, bundle: ca.bundlePem, notBefore: svid.notBefore.toISOString(), expiresAt: svid.notAfter.toISOString() })
    } catch (err) {
      const e = asGatehouseError(err)
      const presented = attestation?.method === 'svid' ? { previousSerial: attestation.serial, ...chain(attestation.origin) } : {}
      metrics.svidRequests.inc({ result: 'refused', code: e.code, attestation: attestation?.method ?? 'none' })
      logger.warn({ event: 'svid.refused', code: e.code, reason: e.message, spiffeId: attestation?.id.toString(), attestation: attestation?.method, ...presented, remote, ...(e.status >= 500 ? { err } : {}) }, 'refused SVID request')
      throw e
    }
  }

  /** Where the identity's renewal chain began: logged with every issuance, and with a refused SVID. */
  function chain (o: RenewalOrigin | undefined): Record<string, string> {
    return o === undefined ? {} : { origin: o.method, chainStartedAt: o.startedAt.toISOString() }
  }

  function detail (a: Attestation): Record<string, string> {
    if (a.method === 'k8s-sa-token') return { pod: a.pod, podUid: a.podUid }
    if (a.method === 'svid') return { previousSerial: a.serial }
    return { jti: a.jti }
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`
    const timer = metrics.duration.startTimer({ route: caRoute((req.url ?? '/').split('?')[0]!) })
    res.once('close', () => { timer() })
    try {
      const path = (req.url ?? '/').split('?')[0]
      if (path === '/v1/svid') {
        if (req.method !== 'POST') throw new MethodNotAllowedError()
        await issueSvid(req, res, remote)
      } else if (path === '/v1/bundle') {
        if (req.method !== 'GET' && req.method !== 'HEAD') throw new MethodNotAllowedError()
        if ((req.headers.accept ?? '').includes('application/json')) send(res, 200, ca.bundle.toSpiffeJson(ca.trustDomain))
        else send(res, 200, ca.bundlePem)
      } else if (path === '/v1/reports') {
        if (req.method !== 'POST') throw new MethodNotAllowedError()
        let reporter: SpiffeId
        try { reporter = reporterOf(req) } catch (err) {
          metrics.reports.inc({ outcome: 'refused' })
          logger.warn({ event: 'report.refused', code: asGatehouseError(err).code, reason: (err as Error).message, remote }, 'quarantine report refused')
          throw err
        }
        let body: unknown
        try { body = JSON.parse((await readBody(req, MAX_BODY_BYTES)).toString('utf8')) } catch { metrics.reports.inc({ outcome: 'refused' }); throw new BadRequestError('body is not valid JSON') }
        let outcome: string
        try { outcome = reports.receive(reporter, body) } catch (err) { metrics.reports.inc({ outcome: 'refused' }); throw err }
        metrics.reports.inc({ outcome: reportOutcome(outcome) })
        send(res, 202, { outcome })
      } else if (path === '/v1/quarantine') {
        if (req.method !== 'GET') throw new MethodNotAllowedError()
        quarantine.serve(new URL(req.url ?? '/', 'https://ca'), res)
      } else if (path === '/healthz') {
        send(res, 200, { status: 'ok' })
      } else {
        throw new NotFoundError()
      }
    } catch (err) {
      const e = asGatehouseError(err)
      if (e.status >= 500 && !(e instanceof GatehouseError && e.code !== 'GH_INTERNAL')) logger.error({ err, remote }, 'unexpected error in CA API')
      const headers: Record<string, string> = e instanceof RateLimitedError ? { 'retry-after': String(e.retryAfterSeconds) } : {}
      if (!res.headersSent) sendError(res, e, { ...headers, ...(e.status === 413 ? { connection: 'close' } : {}) })
      else res.destroy()
    }
  }

  const server = createServer({
    ...servingContext(),
    minVersion: 'TLSv1.2',
    requestCert: true, // optional client SVID for renewal; token requests come without one
    rejectUnauthorized: false,
    headersTimeout: 10_000,
    requestTimeout: 30_000,
    keepAliveTimeout: 5_000,
    maxHeaderSize: 16 * 1024
  }, (req, res) => { void handle(req, res) })
  server.on('tlsClientError', (err) => { logger.debug({ err: err.message }, 'TLS handshake failed') })

  // An issuer or root within 30 days of expiry is logged now and daily (and the expiry gauge shows it).
  const expiry = watchExpiry(() => ca, logger)
  const publisher = opts.publisher === undefined ? undefined : new BundlePublisher({ ...opts.publisher, bundlePem: () => ca.bundlePem, logger, metrics })
  // The files as they are now are the baseline: a change made before the first poll (an issuer
  // renewed right after start) is a change, not the starting state.
  const caFiles = [FILES.rootCert, FILES.issuerCert, FILES.issuerKey, FILES.bundle].map(f => join(ca.dir, f))
  const watch = opts.reload === undefined
    ? undefined
    : watchFiles(caFiles, opts.reload.intervalMs, () => {
      try {
        ({ ca, issuer } = opts.reload!.load())
        server.setSecureContext(servingContext())
        quarantine.setCa(ca)
        expiry.check()
        publisher?.poke()
        logger.info({ event: 'ca.reloaded', issuerSerial: ca.issuer.serialHex, roots: ca.bundle.authoritiesFor(ca.trustDomain).map(r => r.serialHex) }, 'CA material reloaded')
      } catch (err) {
        logger.error({ event: 'ca.reload_failed', code: (err as GatehouseError).code ?? 'GH_INTERNAL', reason: (err as Error).message }, 'CA files changed but cannot be loaded; keeping the current material')
      }
    }, { baseline: caFiles.map(f => { try { return readFileSync(f) } catch { return undefined } }) })
  const renew = setInterval(() => {
    try { server.setSecureContext(servingContext()) } catch (err) { logger.error({ err }, 'cannot renew the CA serving certificate; keeping the current one') }
  }, SERVING_TTL_MS / 2)
  renew.unref()

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.listen.port, opts.listen.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  logger.info({ event: 'ca.listening', host: opts.listen.host, port, trustDomain: ca.trustDomain, servingId: servingId.toString() }, 'CA API listening')
  let metricsServer: MetricsServer | undefined
  publisher?.start()
  const close = async (): Promise<void> => {
    clearInterval(renew)
    publisher?.stop()
    expiry.stop()
    watch?.stop()
    quarantine.stop()
    server.closeIdleConnections()
    await Promise.all([new Promise<void>(resolve => server.close(() => { resolve() })), metricsServer?.close()])
  }
  if (opts.metricsListen !== undefined) {
    try { metricsServer = await startMetricsServer(metrics.registry, opts.metricsListen, logger, 'ca.metrics_listening') } catch (err) { await close(); throw err }
  }
  return { server, port, quarantine, metrics, ...(metricsServer === undefined ? {} : { metricsPort: metricsServer.port }), ...(publisher === undefined ? {} : { publisher }), close }
}
