import { createServer, type Server } from 'node:https'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import jsonpatch from 'fast-json-patch'
import { Issuer } from '../../src/ca/issuer.ts'
import { SpiffeId } from '../../src/spiffe/id.ts'
import { generateKey } from '../../src/x509/keys.ts'
import type { Pki, Tap } from './mesh.ts'
import { tempDir } from './files.ts'

// A stand-in for kube-apiserver with what the CA's bundle publisher uses: namespaces (list with a
// label selector), ConfigMaps (get, create, update) and MutatingWebhookConfigurations (get, JSON
// patch), over TLS with bearer-token authentication. Its answers have the shapes kube-apiserver
// (1.30) sends: list objects with kind/apiVersion/metadata.resourceVersion/items, objects with
// uid/resourceVersion/creationTimestamp set by the server, and errors as `Status` objects with the
// server's own reason and message wording (NotFound, AlreadyExists, Conflict, Forbidden,
// Unauthorized, Invalid for a failed JSON-patch test). resourceVersion is checked on update, as the
// real server does (optimistic concurrency). Every request is recorded.

export interface KubeRequest { method: string, path: string, query: string, contentType: string | undefined, body: unknown }
type Obj = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

export interface FakeKubeApi {
  url: string
  port: number
  /** A service-account directory (token, ca.crt, namespace) as the kubelet mounts it. */
  saDir: string
  token: string
  requests: KubeRequest[]
  namespaces: Map<string, Record<string, string>>
  configMaps: Map<string, Obj>
  webhooks: Map<string, Obj>
  /** "VERB resource namespace" (e.g. "create configmaps shop") answered 403 as RBAC would. */
  forbidden: Set<string>
  /** Called with each request before it is answered (a test's concurrent change). */
  onRequest?: (r: KubeRequest) => void
  close: () => Promise<void>
}

const status = (code: number, reason: string, message: string, details?: Obj): Obj => ({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details === undefined ? {} : { details }), code })

export async function startFakeKubeApi (t: Tap, pki: Pki, opts: { namespace?: string } = {}): Promise<FakeKubeApi> {
  const key = generateKey('ec-p256')
  const serving = new Issuer(pki.ca).issue({ id: SpiffeId.parse(`spiffe://${pki.ca.trustDomain}/kube-apiserver`), publicKey: key.publicKey, dns: ['kubernetes.default.svc'], ips: ['127.0.0.1'] })
  const token = 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImZha2UifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Z2F0ZWhvdXNlLXN5c3RlbTpnYXRlaG91c2UtY2EifQ.c2ln'
  const saDir = join(tempDir(t, 'gh-kube-sa-'), 'serviceaccount')
  mkdirSync(saDir)
  writeFileSync(join(saDir, 'token'), token)
  writeFileSync(join(saDir, 'ca.crt'), pki.ca.bundlePem)
  writeFileSync(join(saDir, 'namespace'), opts.namespace ?? 'gatehouse-system')
  let version = 1000
  const rv = (): string => String(++version)
  const api: Omit<FakeKubeApi, 'url' | 'port' | 'close'> & { onRequest?: (r: KubeRequest) => void } = { saDir, token, requests: [], namespaces: new Map(), configMaps: new Map(), webhooks: new Map(), forbidden: new Set() }
  const user = 'system:serviceaccount:gatehouse-system:gatehouse-ca'

  const handle = (method: string, path: string, query: URLSearchParams, body: Obj | undefined, contentType: string | undefined): [number, Obj] => {
    let m: RegExpExecArray | null
    if (method === 'GET' && path === '/api/v1/namespaces') {
      if (api.forbidden.has('list namespaces')) return [403, status(403, 'Forbidden', `namespaces is forbidden: User "${user}" cannot list resource "namespaces" in API group "" at the cluster scope`, { kind: 'namespaces' })]
      const selector = query.get('labelSelector')
      const [k, v] = selector === null ? [] : selector.split('=')
      const items = [...api.namespaces].filter(([, labels]) => k === undefined || labels[k] === v).map(([name, labels]) => ({
        metadata: { name, uid: `uid-ns-${name}`, resourceVersion: '17', creationTimestamp: '2026-12-01T09:00:00Z', labels: { 'kubernetes.io/metadata.name': name, ...labels }, managedFields: [] },
        spec: { finalizers: ['kubernetes'] },
        status: { phase: 'Active' }
      }))
      return [200, { kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: String(version) }, items }]
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/configmaps(?:\/([^/]+))?$/.exec(path)) !== null) {
      const [, ns, name] = m as unknown as [string, string, string | undefined]
      const verb = method === 'GET' ? 'get' : method === 'POST' ? 'create' : method === 'PUT' ? 'update' : method.toLowerCase()
      const target = name ?? body?.metadata?.name
      if (api.forbidden.has(`${verb} configmaps ${ns}`)) return [403, status(403, 'Forbidden', `configmaps${target === undefined ? '' : ` "${target}"`} is forbidden: User "${user}" cannot ${verb} resource "configmaps" in API group "" in the namespace "${ns}"`, { name: target, kind: 'configmaps' })]
      if (!api.namespaces.has(ns)) return [404, status(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' })]
      const at = `${ns}/${target ?? ''}`
      const current = api.configMaps.get(at)
      if (method === 'GET' && name !== undefined) return current === undefined ? [404, status(404, 'NotFound', `configmaps "${name}" not found`, { name, kind: 'configmaps' })] : [200, current]
      if (method === 'POST' && name === undefined && body !== undefined) {
        if (current !== undefined) return [409, status(409, 'AlreadyExists', `configmaps "${target}" already exists`, { name: target, kind: 'configmaps' })]
        const created = { ...body, metadata: { ...body.metadata, namespace: ns, uid: `uid-cm-${at}`, resourceVersion: rv(), creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') } }
        api.configMaps.set(at, created)
        return [201, created]
      }
      if (method === 'PUT' && name !== undefined && body !== undefined) {
        if (current === undefined) return [404, status(404, 'NotFound', `configmaps "${name}" not found`, { name, kind: 'configmaps' })]
        if (body.metadata?.resourceVersion !== current.metadata.resourceVersion) return [409, status(409, 'Conflict', `Operation cannot be fulfilled on configmaps "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: 'configmaps' })]
        const updated = { ...body, metadata: { ...body.metadata, uid: current.metadata.uid, creationTimestamp: current.metadata.creationTimestamp, resourceVersion: rv() } }
        api.configMaps.set(at, updated)
        return [200, updated]
      }
    }
    if ((m = /^\/apis\/admissionregistration\.k8s\.io\/v1\/mutatingwebhookconfigurations\/([^/]+)$/.exec(path)) !== null) {
      const name = m[1]!
      const verb = method.toLowerCase()
      if (api.forbidden.has(`${verb} mutatingwebhookconfigurations`)) return [403, status(403, 'Forbidden', `mutatingwebhookconfigurations.admissionregistration.k8s.io "${name}" is forbidden: User "${user}" cannot ${verb} resource "mutatingwebhookconfigurations" in API group "admissionregistration.k8s.io" at the cluster scope`, { name, group: 'admissionregistration.k8s.io', kind: 'mutatingwebhookconfigurations' })]
      const current = api.webhooks.get(name)
      if (current === undefined) return [404, status(404, 'NotFound', `mutatingwebhookconfigurations.admissionregistration.k8s.io "${name}" not found`, { name, group: 'admissionregistration.k8s.io', kind: 'mutatingwebhookconfigurations' })]
      if (method === 'GET') return [200, current]
      if (method === 'PATCH') {
        if (contentType !== 'application/json-patch+json') return [415, status(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`)]
        let patched: Obj
        try { patched = jsonpatch.applyPatch(structuredClone(current), body as unknown as jsonpatch.Operation[], true).newDocument } catch (err) {
          return [422, status(422, 'Invalid', `the server rejected our request due to an error in our request: ${(err as Error).name}`)]
        }
        patched.metadata.resourceVersion = rv()
        api.webhooks.set(name, patched)
        return [200, patched]
      }
    }
    return [404, status(404, 'NotFound', 'the server could not find the requested resource', {})]
  }

  const server: Server = createServer({ cert: serving.chainPem, key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'https://kubernetes.default.svc')
      const text = Buffer.concat(chunks).toString()
      let body: Obj | undefined
      try { body = text === '' ? undefined : JSON.parse(text) as Obj } catch { body = undefined }
      const seen = { method: req.method ?? '', path: url.pathname, query: url.search, contentType: req.headers['content-type'], body }
      api.requests.push(seen)
      api.onRequest?.(seen)
      const [code, answer] = req.headers.authorization !== `Bearer ${api.token}`
        ? [401, status(401, 'Unauthorized', 'Unauthorized')]
        : handle(req.method ?? '', url.pathname, url.searchParams, body, req.headers['content-type'])
      res.writeHead(code, { 'content-type': 'application/json', 'audit-id': `audit-${api.requests.length}` })
      res.end(JSON.stringify(answer))
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const close = async (): Promise<void> => { server.closeAllConnections(); await new Promise<void>(resolve => server.close(() => { resolve() })) }
  t.teardown(close)
  return Object.assign(api, { url: `https://127.0.0.1:${port}`, port, close })
}

/** The webhook configuration deploy/base/injector/webhook.yaml creates, as the API server returns it (no caBundle yet). */
export function injectorWebhook (): Obj {
  const hook = (name: string): Obj => ({ name, clientConfig: { service: { namespace: 'gatehouse-system', name: 'gatehouse-injector', path: '/mutate', port: 443 } }, rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }], failurePolicy: 'Fail', matchPolicy: 'Equivalent', sideEffects: 'None', timeoutSeconds: 5, admissionReviewVersions: ['v1'], reinvocationPolicy: 'Never' })
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: 'gatehouse-injector', uid: 'uid-mwc', resourceVersion: '500', generation: 1, creationTimestamp: '2026-12-01T09:00:00Z', labels: { 'app.kubernetes.io/name': 'gatehouse-injector' } },
    webhooks: [hook('namespace.inject.gatehouse.io'), hook('pod.inject.gatehouse.io')]
  }
}
