import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ProxyAgent, request } from 'undici'

// The demo's two toy apps. Neither knows anything about certificates: payments reads who called it
// from x-forwarded-client-cert, and orders calls payments with a plain http:// URL through its
// sidecar (HTTP_PROXY style).

export interface ToyApp { server: Server, port: number, close: () => Promise<void> }

async function listen (server: Server): Promise<ToyApp> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
  }
}

/** payments: answers /v1/charges and /v1/refunds, echoing what it was told about the caller. */
export async function startPayments (): Promise<ToyApp> {
  return await listen(createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const xfcc = String(req.headers['x-forwarded-client-cert'] ?? '')
      const caller = /URI=([^;,]+)/.exec(xfcc)?.[1] ?? null
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ app: 'payments', method: req.method, path: req.url, caller, xfcc }))
    })
  }))
}

/** orders: POST /call?method=M&path=P makes that call to http://payments.internal through `proxyUrl`. */
export async function startOrders (proxyUrl: () => string): Promise<ToyApp> {
  return await listen(createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://orders')
    const method = url.searchParams.get('method') ?? 'GET'
    const path = url.searchParams.get('path') ?? '/'
    const extra: Record<string, string> = {}
    const spoof = url.searchParams.get('spoof-xfcc')
    if (spoof !== null) extra['x-forwarded-client-cert'] = spoof
    req.resume()
    const agent = new ProxyAgent(proxyUrl())
    request(`http://payments.internal${path}`, { method: method as 'GET', headers: extra, dispatcher: agent, ...(method === 'POST' ? { body: '{"amount":42}' } : {}) }).then(async (r) => {
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
