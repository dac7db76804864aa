import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ProxyAgent, request } from 'undici'

// The demo's toy apps. None knows anything about certificates: payments (and inventory) read who
// called them from x-forwarded-client-cert, and orders calls them with a plain http:// URL through
// its sidecar (HTTP_PROXY style).

export interface ToyApp { server: Server, port: number, close: () => Promise<void> }

async function listen (server: Server): Promise<ToyApp> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
  }
}

/** A service that answers every request, echoing what it was told about the caller: payments, inventory. */
export async function startService (app: string): Promise<ToyApp> {
  return await listen(createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const xfcc = String(req.headers['x-forwarded-client-cert'] ?? '')
      const caller = /URI=([^;,]+)/.exec(xfcc)?.[1] ?? null
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ app, method: req.method, path: req.url, caller, xfcc }))
    })
  }))
}

/** orders: POST /call?method=M&path=P[&host=H] makes that call to http://H (default payments.internal) through `proxyUrl`. */
export async function startOrders (proxyUrl: () => string): Promise<ToyApp> {
  return await listen(createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://orders')
    const method = url.searchParams.get('method') ?? 'GET'
    const path = url.searchParams.get('path') ?? '/'
    const host = url.searchParams.get('host') ?? 'payments.internal'
    const extra: Record<string, string> = {}
    const spoof = url.searchParams.get('spoof-xfcc')
    if (spoof !== null) extra['x-forwarded-client-cert'] = spoof
    req.resume()
    const agent = new ProxyAgent(proxyUrl())
    request(`http://${host}${path}`, { method: method as 'GET', headers: extra, dispatcher: agent, ...(method === 'POST' ? { body: '{"amount":42}' } : {}) }).then(async (r) => {
      const body = await r.body.text()
      res.writeHead(r.statusCode, { 'content-type': 'application/json' })
      res.end(body)
      await agent.close()
    }, async (err: Error) => {
      res.writeHead(502, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: err.message }))
      await agent.close()
    })
  }))
}
