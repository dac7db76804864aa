import { readFileSync } from 'node:fs'
import { isMap, isSeq, isScalar, type Node } from 'yaml'
import { GatehouseError, RoutesInvalidError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { parseHostPort } from '../hostport.ts'
import { PORTS } from '../ports.ts'
import { readYamlSource, mapGet, unknownKeys } from '../yaml-source.ts'
import { watchFiles, type FileWatch } from '../file-watch.ts'

// Outbound destinations (docs/architecture.md "Outbound routes" routes file): the host the app names -> where that service's
// sidecar listens and the SPIFFE ID it must present. Anything not listed is refused. A Kubernetes
// service host (name.namespace.svc[.cluster.local]) may give `serviceAccount` instead of `id`, and
// then defaults to address <host>:15006 and ID spiffe://TD/ns/<namespace>/sa/<serviceAccount>.

export interface Route {
  host: string
  port: number | undefined
  address: { host: string, port: number }
  id: string
  /** http (default): requests, through HTTP_PROXY or `listen`; tcp: opaque bytes to the callee's app port `appPort`. */
  protocol: 'http' | 'tcp'
  /** A local plaintext listener for this route (Consul's upstreams): loopback only. */
  listen?: { host: string, port: number }
  appPort?: number
}

/** What a connection to a route's callee is made for and reusable by: its address and the SPIFFE ID it must present. */
export const destinationKey = (r: Route): string => `${r.address.host}:${r.address.port}|${r.id}`

const ROUTE_KEYS = ['host', 'address', 'id', 'serviceAccount', 'protocol', 'listen', 'port']
/** A route's listener is plaintext and unauthenticated: it must be reachable from this pod or host only. */
const LOOPBACK = /^(127(\.\d{1,3}){3}|::1|localhost)$/
const K8S_SERVICE = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(\.[a-z0-9.-]+)?$/
export const DEFAULT_INBOUND_PORT = PORTS.inbound

export function parseRoutes (text: string, source: string, trustDomain: string | undefined): Route[] {
  const { root, at, problems } = readYamlSource(text, source)
  if (problems.length > 0) throw new RoutesInvalidError(problems)
  if (!isMap(root)) throw new RoutesInvalidError([`${at(root)}: expected a mapping with version and routes`])
  problems.push(...unknownKeys(root, ['version', 'routes'], at, ''))
  const version = mapGet(root, 'version')
  if (!isScalar(version) || version.value !== 1) problems.push(`${at(version ?? root)}: version: expected 1`)
  const list = mapGet(root, 'routes')
  const routes: Route[] = []
  if (list !== undefined && !isSeq(list)) problems.push(`${at(list)}: routes: expected a list`)
  const seen = new Set<string>()
  const listening = new Set<string>()
  for (const [i, item] of (isSeq(list) ? list.items : []).entries()) {
    const where = `routes[${i}]`
    if (!isMap(item)) { problems.push(`${at(item as Node)}: ${where}: expected a mapping with host, address, id`); continue }
    problems.push(...unknownKeys(item, ROUTE_KEYS, at, where))
    const str = (key: string): { value?: string, node?: Node } => {
      const node = mapGet(item, key)
      return isScalar(node) && typeof node.value === 'string' ? { value: node.value, node } : node === undefined ? {} : { node }
    }
    const host = str('host')
    const m = host.value === undefined ? null : /^([a-z0-9.-]+)(?::(\d{1,5}))?$/.exec(host.value.toLowerCase())
    if (m === null) { problems.push(`${at(host.node ?? item)}: ${where}.host: expected a host name, optionally with :port`); continue }
    const name = m[1]!
    const port = m[2] === undefined ? undefined : Number(m[2])
    const key = `${name}:${port ?? ''}|${str('protocol').value ?? 'http'}`
    if (seen.has(key)) problems.push(`${at(host.node)}: ${where}.host: "${host.value!}" is listed twice`)
    seen.add(key)
    const k8s = K8S_SERVICE.exec(name)
    const addressText = str('address')
    const address = addressText.value !== undefined ? parseHostPort(addressText.value) : k8s !== null ? { host: name, port: DEFAULT_INBOUND_PORT } : undefined
    if (address === undefined) problems.push(`${at(addressText.node ?? item)}: ${where}.address: expected HOST:PORT of the destination's sidecar${k8s === null ? '' : ''}`)
    const idText = str('id')
    const sa = str('serviceAccount')
    let id: string | undefined
    if (idText.value !== undefined) {
      const parsed = SpiffeId.tryParse(idText.value)
      if (parsed === undefined || parsed.isRoot) problems.push(`${at(idText.node)}: ${where}.id: expected the SPIFFE ID the destination must present, got ${JSON.stringify(idText.value)}`)
      else id = parsed.toString()
    } else if (sa.value !== undefined && k8s !== null && trustDomain !== undefined) {
      try { id = SpiffeId.forServiceAccount(trustDomain, k8s[3]!, sa.value).toString() } catch { problems.push(`${at(sa.node)}: ${where}.serviceAccount: not a valid service account name`) }
    } else {
      problems.push(`${at(item)}: ${where}: expected id (or serviceAccount, for a name.namespace.svc host)`)
    }
    const protocolText = str('protocol')
    const protocol = protocolText.value ?? (protocolText.node === undefined ? 'http' : undefined)
    if (protocol !== 'http' && protocol !== 'tcp') problems.push(`${at(protocolText.node ?? item)}: ${where}.protocol: expected http or tcp`)
    const listenText = str('listen')
    const listen = listenText.value === undefined ? undefined : parseHostPort(listenText.value)
    if (listenText.node !== undefined) {
      if (listen === undefined) problems.push(`${at(listenText.node)}: ${where}.listen: expected HOST:PORT to listen on, e.g. 127.0.0.1:16379`)
      else if (!LOOPBACK.test(listen.host)) problems.push(`${at(listenText.node)}: ${where}.listen: ${listen.host} is not a loopback address: the listener takes plaintext from anyone who reaches it, so it must be 127.0.0.1 (or ::1)`)
      else if (listening.has(`${listen.host}:${listen.port}`)) problems.push(`${at(listenText.node)}: ${where}.listen: ${listenText.value!} is used by another route`)
      else listening.add(`${listen.host}:${listen.port}`)
    }
    const portNode = mapGet(item, 'port')
    const appPort = isScalar(portNode) && typeof portNode.value === 'number' && Number.isInteger(portNode.value) && portNode.value >= 1 && portNode.value <= 65535 ? portNode.value : undefined
    if (protocol === 'tcp') {
      if (portNode === undefined) problems.push(`${at(item)}: ${where}.port: a tcp route needs the callee's app port (port: 6379)`)
      else if (appPort === undefined) problems.push(`${at(portNode)}: ${where}.port: expected a port number from 1 to 65535`)
      if (listenText.node === undefined) problems.push(`${at(item)}: ${where}.listen: a tcp route needs a local address for the app to connect to (listen: 127.0.0.1:16379)`)
    } else if (portNode !== undefined) {
      problems.push(`${at(portNode)}: ${where}.port: only a tcp route names the callee's app port; an http route gives its port in host (name:port)`)
    }
    if (address !== undefined && id !== undefined && protocol !== undefined) {
      routes.push({ host: name, port, address, id, protocol: protocol as 'http' | 'tcp', ...(listen === undefined ? {} : { listen }), ...(appPort === undefined ? {} : { appPort }) })
    }
  }
  if (problems.length > 0) throw new RoutesInvalidError(problems)
  return routes
}

export class RouteTable {
  private byKey = new Map<string, Route>()
  private all: Route[] = []
  private readonly listeners: Array<() => void> = []

  /** Every route, tcp ones included (route-listeners.ts opens their `listen` addresses). */
  get routes (): readonly Route[] { return this.all }

  /** The HTTP route for a host and port the app named: exact host:port first, then the host alone. */
  lookup (host: string, port: number): Route | undefined {
    const h = host.toLowerCase()
    return this.byKey.get(`${h}:${port}`) ?? this.byKey.get(`${h}:`)
  }

  replace (routes: Route[]): void {
    this.all = routes
    // A tcp route is reached only through its listener: an HTTP request never takes it.
    this.byKey = new Map(routes.filter(r => r.protocol === 'http').map(r => [`${r.host}:${r.port ?? ''}`, r]))
    for (const l of this.listeners) l()
  }

  onChange (fn: () => void): void { this.listeners.push(fn) }
}

/** --routes FILE: load now (throwing if invalid at start), then reload on change; a bad file keeps the last good table. */
export function watchRoutesFile (table: RouteTable, opts: { file: string, trustDomain: () => string | undefined, intervalMs: number, logger: Logger }): FileWatch {
  let started = false
  const load = (): void => {
    let text: string
    try { text = readFileSync(opts.file, 'utf8') } catch (err) {
      // Missing at start (an optional ConfigMap not created yet): no destinations, not a failed start.
      // Missing later: a failed reload, so the last good routes stay.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || started) throw err
      table.replace([])
      opts.logger.info({ event: 'routes.absent', file: opts.file }, 'no routes file: every outbound destination is refused until it appears')
      return
    }
    const routes = parseRoutes(text, opts.file, opts.trustDomain())
    table.replace(routes)
    opts.logger.info({ event: 'routes.loaded', file: opts.file, routes: routes.length }, 'outbound routes loaded')
  }
  load()
  started = true
  return watchFiles([opts.file], opts.intervalMs, () => {
    try { load() } catch (err) {
      opts.logger.error({ event: 'routes.reload_failed', code: (err as GatehouseError).code ?? 'GH_INTERNAL', problems: (err as RoutesInvalidError).problems ?? [(err as Error).message] }, 'invalid routes rejected; keeping the current ones')
    }
  })
}
