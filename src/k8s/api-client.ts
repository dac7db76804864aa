import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Agent, request, type Dispatcher } from 'undici'
import { KubeApiError } from '../errors.ts'

// The few Kubernetes API calls the CA makes (bundle-publisher.ts): get, list, create, update and
// JSON-patch one object, as the pod's service account (in-cluster config: the API server's address
// from KUBERNETES_SERVICE_HOST/PORT, its CA and the bound token from the service-account mount).
// A dozen lines over undici rather than @kubernetes/client-node: that client brings dozens of
// transitive packages into the process that holds the root and issuer keys, for four verbs.
// The token file is re-read every minute: bound service-account tokens are rotated by the kubelet.

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount'

export interface KubeConfig {
  /** https://host:port of the API server. */
  server: string
  caPem: string
  tokenFile: string
  /** The namespace the pod runs in. */
  namespace: string
}

/** The in-cluster configuration, or undefined outside a pod (no KUBERNETES_SERVICE_HOST). */
export function inClusterConfig (env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR): KubeConfig | undefined {
  const host = env.KUBERNETES_SERVICE_HOST
  if (host === undefined || host === '') return undefined
  const port = env.KUBERNETES_SERVICE_PORT ?? '443'
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    caPem: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    tokenFile: join(dir, 'token'),
    namespace: readFileSync(join(dir, 'namespace'), 'utf8').trim()
  }
}

/** A Kubernetes `Status` body, as the API server sends with every error. */
interface Status { kind?: string, reason?: string, message?: string, code?: number }

export class KubeClient {
  readonly config: KubeConfig
  private readonly dispatcher: Dispatcher
  private token: { value: string, readAt: number } | undefined

  constructor (config: KubeConfig, opts: { timeoutMs?: number } = {}) {
    this.config = config
    const timeout = opts.timeoutMs ?? 10_000
    this.dispatcher = new Agent({ connect: { ca: config.caPem, timeout }, headersTimeout: timeout, bodyTimeout: timeout })
  }

  private bearer (): string {
    if (this.token === undefined || Date.now() - this.token.readAt > 60_000) this.token = { value: readFileSync(this.config.tokenFile, 'utf8').trim(), readAt: Date.now() }
    return this.token.value
  }

  private async call<T> (method: Dispatcher.HttpMethod, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number, body: T | undefined }> {
    let res: Dispatcher.ResponseData
    try {
      res = await request(`${this.config.server}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headers: { authorization: `Bearer ${this.bearer()}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': contentType }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) })
      })
    } catch (err) {
      throw new KubeApiError(0, 'Unreachable', `${method} ${path}: the API server did not answer: ${(err as Error).message}`, { cause: err })
    }
    const text = await res.body.text()
    let parsed: unknown
    try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = undefined }
    if (res.statusCode >= 400 && res.statusCode !== 404) {
      const s = (parsed ?? {}) as Status
      throw new KubeApiError(res.statusCode, s.reason ?? `HTTP${res.statusCode}`, `${method} ${path}: ${res.statusCode} ${s.reason ?? ''}: ${s.message ?? text.slice(0, 200)}`.replace(/ +/g, ' '))
    }
    return { status: res.statusCode, body: res.statusCode === 404 ? undefined : parsed as T }
  }

  /** The object, or undefined when it does not exist (404). */
  async get<T> (path: string): Promise<T | undefined> { return (await this.call<T>('GET', path)).body }

  async list<T> (path: string, labelSelector?: string): Promise<T[]> {
    const r = await this.call<{ items?: T[] }>('GET', labelSelector === undefined ? path : `${path}?labelSelector=${encodeURIComponent(labelSelector)}`)
    if (r.body === undefined) throw new KubeApiError(404, 'NotFound', `GET ${path}: 404`)
    return r.body.items ?? []
  }

  async create<T> (path: string, object: T): Promise<T> { return await this.required('POST', path, object) }

  /** PUT: the object carries the resourceVersion it was read at, so a concurrent change is a 409 Conflict, not lost. */
  async update<T> (path: string, object: T): Promise<T> { return await this.required('PUT', path, object) }

  /** RFC 6902 JSON Patch (a `test` op first makes it conditional). */
  async jsonPatch<T> (path: string, ops: unknown[]): Promise<T> { return await this.required('PATCH', path, ops, 'application/json-patch+json') }

  private async required<T> (method: Dispatcher.HttpMethod, path: string, body: unknown, contentType?: string): Promise<T> {
    const r = await this.call<T>(method, path, body, contentType)
    if (r.body === undefined) throw new KubeApiError(404, 'NotFound', `${method} ${path}: 404 NotFound`)
    return r.body
  }

  async close (): Promise<void> { await this.dispatcher.close() }
}
