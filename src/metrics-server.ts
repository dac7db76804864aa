import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'
import type { Logger } from './log.ts'
import { MethodNotAllowedError, MetricsUnavailableError, NotFoundError } from './errors.ts'
import { sendError } from './error-body.ts'

// The plain-HTTP `/metrics` listener of `ca serve` and `inject serve` (`--metrics-listen`): below
// both, since the injector must not import the CA's code. The sidecar serves its metrics on its
// admin listener instead (src/proxy/admin.ts).

export interface MetricsServer { server: Server, port: number, close: () => Promise<void> }

/**
 * GET /metrics (and /healthz) over plain HTTP: the CA's and the injector's `--metrics-listen`.
 * Everything on this listener is meant for a scraper; it carries no secret and accepts no input.
 */
export async function startMetricsServer (registry: Registry, listen: { host: string, port: number }, logger: Logger, event: string): Promise<MetricsServer> {
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 30_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    const json = (status: number, body: unknown): void => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)) }
    if (req.method !== 'GET' && req.method !== 'HEAD') { sendError(res, new MethodNotAllowedError()); return }
    if (path === '/healthz') { json(200, { status: 'ok' }); return }
    if (path !== '/metrics') { sendError(res, new NotFoundError()); return }
    registry.metrics().then((text) => {
      res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' })
      res.end(text)
    }, (err: unknown) => {
      logger.error({ err }, 'cannot render metrics')
      sendError(res, new MetricsUnavailableError({ cause: err }))
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(listen.port, listen.host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  logger.info({ event, host: listen.host, port }, 'metrics listening')
  return {
    server,
    port,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    }
  }
}
