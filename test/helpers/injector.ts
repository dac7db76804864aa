import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import pino from 'pino'
import { Issuer } from '../../src/ca/issuer.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { generateKey } from '../../src/x509/keys.ts'
import { startInjectorServer, type RunningInjector } from '../../src/inject/webhook-server.ts'
import { DEFAULT_INJECTOR_CONFIG, type InjectorConfig } from '../../src/inject/injector-config.ts'
import { Pki, captureLines, type Tap } from './mesh.ts'
import { tempDir } from './files.ts'

// The real webhook on 127.0.0.1:<random port> over HTTPS. Its serving certificate comes from the
// project's own CA (IP SAN 127.0.0.1), and the client verifies it against that CA's bundle, as the
// API server does with the webhook's caBundle. Log lines are captured as parsed JSON.

export interface InjectorFixture {
  running: RunningInjector
  url: string
  logs: Array<Record<string, any>>
  /** POSTs `body` (JSON-encoded unless a string) to `path`. */
  post: (path: string, body: unknown, headers?: Record<string, string>) => Promise<{ status: number, json: any, text: string }>
  get: (path: string) => Promise<{ status: number, json: any, text: string }>
}

export async function startInjector (t: Tap, opts: { config?: InjectorConfig, maxBodyBytes?: number } = {}): Promise<InjectorFixture> {
  const dir = tempDir(t, 'gh-inject-')
  const pki = new Pki(dir)
  const key = generateKey('ec-p256')
  const svid = new Issuer(pki.ca).issue({ id: SpiffeId.parse('spiffe://example.org/gatehouse/injector'), publicKey: key.publicKey, dns: ['localhost'], ips: ['127.0.0.1'] })
  const certFile = join(dir, 'injector.pem')
  const keyFile = join(dir, 'injector-key.pem')
  writeFileSync(certFile, svid.chainPem)
  writeFileSync(keyFile, key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600 })
  const capture = captureLines()
  const running = await startInjectorServer({
    listen: { host: '127.0.0.1', port: 0 },
    tls: { certFile, keyFile },
    dnsName: 'localhost',
    config: opts.config ?? DEFAULT_INJECTOR_CONFIG,
    logger: pino({ level: 'debug' }, capture.stream),
    ...(opts.maxBodyBytes === undefined ? {} : { maxBodyBytes: opts.maxBodyBytes })
  })
  const agent = new Agent({ connect: { ca: pki.ca.bundlePem } })
  t.teardown(async () => {
    await agent.destroy()
    await running.close()
  })
  const url = `https://127.0.0.1:${running.port}`
  const call = async (method: 'GET' | 'POST', path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number, json: any, text: string }> => {
    const res = await request(`${url}${path}`, {
      method,
      dispatcher: agent,
      headers: method === 'POST' ? { 'content-type': 'application/json', ...headers } : headers,
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) })
    })
    const text = await res.body.text()
    let json: any
    try { json = JSON.parse(text) } catch { json = undefined }
    return { status: res.statusCode, json, text }
  }
  return {
    running,
    url,
    logs: capture.lines,
    post: async (path, body, headers) => await call('POST', path, body, headers),
    get: async path => await call('GET', path)
  }
}
