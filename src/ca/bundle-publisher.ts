import { createHash } from 'node:crypto'
import type { Logger } from '../log.ts'
import { KubeApiError } from '../errors.ts'
import type { KubeClient } from '../k8s/api-client.ts'
import type { CaMetrics } from './ca-metrics.ts'

// The CA puts its trust bundle where the cluster needs it, so nobody copies it by hand (and nobody
// forgets a namespace at a root-rotation step): a ConfigMap (key bundle.pem) in the CA's own
// namespace and in every namespace a label selector picks (the injected sidecars mount it), and
// the caBundle of every webhook of the injector's MutatingWebhookConfiguration (the API server
// checks the injector's serving certificate, issued by this CA, against it). A loop, as Linkerd's
// and Istio's controllers do, rather than a watch: at most one interval late (30 s by default),
// one list call per selector, and it needs no more than get/list/create/update/patch. A bundle
// change (root rotation, the CA directory reloaded) syncs at once. Failures are logged and counted,
// what was published stays, and the next round tries again: the publisher never blocks issuance.

export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'gatehouse-ca' }
export const BUNDLE_KEY = 'bundle.pem'

export interface BundlePublisherOptions {
  client: KubeClient
  /** The bundle as it is now (the CA reloads it). */
  bundlePem: () => string
  /** ConfigMap name, in every namespace. */
  configMap: string
  /** Keep the ConfigMaps (false: only the webhook's caBundle, e.g. where trust-manager distributes the bundle). */
  publishConfigMaps: boolean
  /** Label selectors of the namespaces that get it besides the CA's own (each one a list call; a namespace matching any). */
  namespaceSelectors: string[]
  /** MutatingWebhookConfiguration whose webhooks' caBundle is kept equal to the bundle. */
  webhook?: string
  intervalMs: number
  logger: Logger
  metrics?: CaMetrics
}

interface ConfigMap { apiVersion?: string, kind?: string, metadata: { name: string, namespace: string, resourceVersion?: string, labels?: Record<string, string>, annotations?: Record<string, string> }, data?: Record<string, string> }
interface WebhookConfiguration { metadata: { name: string, resourceVersion?: string }, webhooks?: Array<{ name: string, clientConfig?: { caBundle?: string } }> }

export type PublishResult = 'created' | 'updated' | 'unchanged' | 'failed'
export interface SyncReport { namespaces: Record<string, PublishResult>, webhook?: PublishResult, errors: string[] }

export class BundlePublisher {
  private readonly o: BundlePublisherOptions
  private timer: NodeJS.Timeout | undefined
  private running: Promise<SyncReport> | undefined
  private again = false
  private stopped = false

  constructor (o: BundlePublisherOptions) { this.o = o }

  /** Syncs now, then every interval. */
  start (): void {
    const tick = (): void => {
      if (this.stopped) return
      void this.sync().finally(() => { if (!this.stopped) this.timer = setTimeout(tick, this.o.intervalMs).unref() })
    }
    tick()
  }

  /** The bundle changed: sync as soon as the round in flight (if any) ends. */
  poke (): void { void this.sync() }

  stop (): void { this.stopped = true; clearTimeout(this.timer) }

  /** One round; a call during a round runs one more round after it (never two at once). */
  async sync (): Promise<SyncReport> {
    if (this.running !== undefined) { this.again = true; return await this.running }
    this.running = this.round()
    try { return await this.running } finally {
      this.running = undefined
      if (this.again && !this.stopped) { this.again = false; void this.sync() }
    }
  }

  private async round (): Promise<SyncReport> {
    const { client, logger } = this.o
    const pem = this.o.bundlePem()
    const report: SyncReport = { namespaces: {}, errors: [] }
    const failed = (what: string, err: unknown): void => {
      const e = err as KubeApiError
      report.errors.push(`${what}: ${e.message}`)
      logger.warn({ event: 'bundle.publish_failed', target: what, code: e.code ?? 'GH_INTERNAL', status: e.httpStatus, reason: e.reason, message: e.message }, 'could not publish the trust bundle; what was published stays, retrying at the next round')
    }
    // The CA's own namespace always (the injector there mounts the bundle), even when listing fails.
    const namespaces = new Set<string>(this.o.publishConfigMaps ? [client.config.namespace] : [])
    if (this.o.publishConfigMaps) {
      try {
        for (const selector of this.o.namespaceSelectors) {
          for (const ns of await client.list<{ metadata: { name: string } }>('/api/v1/namespaces', selector)) namespaces.add(ns.metadata.name)
        }
      } catch (err) { failed('namespaces', err) }
    }
    for (const ns of [...namespaces].sort()) {
      let result: PublishResult
      try { result = await this.configMap(ns, pem) } catch (err) { failed(`configmap ${ns}/${this.o.configMap}`, err); result = 'failed' }
      report.namespaces[ns] = result
      this.o.metrics?.bundlePublish.inc({ target: 'configmap', result })
    }
    if (this.o.webhook !== undefined) {
      try { report.webhook = await this.caBundle(this.o.webhook, pem) } catch (err) { failed(`mutatingwebhookconfiguration ${this.o.webhook}`, err); report.webhook = 'failed' }
      this.o.metrics?.bundlePublish.inc({ target: 'webhook', result: report.webhook })
    }
    const changed = Object.entries(report.namespaces).filter(([, r]) => r === 'created' || r === 'updated').map(([ns, r]) => `${ns} (${r})`)
    if (changed.length > 0 || report.webhook === 'updated') {
      logger.info({ event: 'bundle.published', sha256: sha256(pem), configMaps: changed, webhook: report.webhook ?? null }, 'trust bundle published')
    }
    if (report.errors.length === 0) this.o.metrics?.bundlePublishedAt.set(Date.now() / 1000)
    return report
  }

  private async configMap (namespace: string, pem: string): Promise<PublishResult> {
    const { client, configMap: name } = this.o
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`
    const current = await client.get<ConfigMap>(`${path}/${encodeURIComponent(name)}`)
    const annotations = { 'gatehouse.io/bundle-sha256': sha256(pem) }
    if (current === undefined) {
      await client.create<ConfigMap>(path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace, labels: { ...MANAGED_BY }, annotations }, data: { [BUNDLE_KEY]: pem } })
      return 'created'
    }
    if (current.data?.[BUNDLE_KEY] === pem) return 'unchanged'
    // Keeps its resourceVersion: a change made meanwhile is a 409, and the next round reads it again.
    await client.update<ConfigMap>(`${path}/${encodeURIComponent(name)}`, {
      ...current,
      metadata: { ...current.metadata, labels: { ...current.metadata.labels, ...MANAGED_BY }, annotations: { ...current.metadata.annotations, ...annotations } },
      data: { ...current.data, [BUNDLE_KEY]: pem }
    })
    return 'updated'
  }

  private async caBundle (name: string, pem: string): Promise<PublishResult> {
    const { client } = this.o
    const path = `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${encodeURIComponent(name)}`
    const current = await client.get<WebhookConfiguration>(path)
    if (current === undefined) throw new KubeApiError(404, 'NotFound', `mutatingwebhookconfiguration ${name} does not exist (is --webhook-ca-bundle its name?)`)
    const b64 = Buffer.from(pem).toString('base64')
    const ops = (current.webhooks ?? []).flatMap((w, i) => w.clientConfig?.caBundle === b64 ? [] : [{ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: b64 }])
    if (ops.length === 0) return 'unchanged'
    // The test op pins the version read: webhooks reordered meanwhile cannot get the wrong caBundle.
    await client.jsonPatch(path, [{ op: 'test', path: '/metadata/resourceVersion', value: current.metadata.resourceVersion }, ...ops])
    return 'updated'
  }
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex')
