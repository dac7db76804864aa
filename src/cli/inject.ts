import { loadConfig, type Schema } from '../config.ts'
import { ConfigInvalidError } from '../errors.ts'
import { createLogger } from '../log.ts'
import { injectorConfig, DEFAULT_INJECTOR_CONFIG as D, NAMESPACE_LABEL, type InjectorConfig } from '../inject/injector-config.ts'
import { injectManifest } from '../inject/manifest.ts'
import { startInjectorServer, DEFAULT_DNS_NAME, type InjectorServerOptions } from '../inject/webhook-server.ts'
import { Credentials, watchBundleFile } from '../identity/credentials.ts'
import { Rotator } from '../identity/rotator.ts'
import { parseQuantity } from '../quantity.ts'
import { readArg, checkKeyPair, checkListen, checkReadable, nameListenFailure, readBundleArg } from './check.ts'
import { parseAllDocuments } from 'yaml'
import { formatData, type Runner } from './runner.ts'

// `gatehouse inject [-f FILE|-]`: offline injection of a manifest, printed to stdout (a summary of
// what happened to each object goes to stderr, so the output can be piped to kubectl apply; so do
// warnings, as "gatehouse inject: warning: ..." lines, and the exit status stays 0).
// `gatehouse inject serve`: the mutating webhook.

const injectorFlags = {
  image: { kind: 'string', default: D.image, help: 'proxy image' },
  'capture-image': { kind: 'string', default: D.captureImage, help: 'image of the iptables capture init container (pods annotated gatehouse.io/capture: iptables)' },
  'image-pull-policy': { kind: 'enum', values: ['Always', 'IfNotPresent', 'Never'], default: D.imagePullPolicy, help: 'proxy image pull policy' },
  'ca-url': { kind: 'string', default: D.caUrl, help: 'gatehouse CA URL given to each proxy' },
  'trust-domain': { kind: 'string', default: D.trustDomain, help: 'SPIFFE trust domain' },
  'bundle-configmap': { kind: 'string', default: D.bundleConfigMap, help: 'ConfigMap (in each namespace) holding the trust bundle as bundle.pem' },
  'inbound-port': { kind: 'int', default: D.inboundPort, min: 1, help: 'proxy inbound (mTLS) port' },
  'outbound-port': { kind: 'int', default: D.outboundPort, min: 1, help: 'proxy outbound (HTTP_PROXY) port' },
  'admin-port': { kind: 'int', default: D.adminPort, min: 1, help: 'proxy admin port (probes)' },
  'proxy-expose-metrics': { kind: 'bool', default: D.exposeMetrics, help: 'serve each proxy\'s /metrics on the pod IP too (proxy --admin-expose-metrics), for a Prometheus scraping pods' },
  'proxy-cpu-request': { kind: 'string', default: D.resources.cpuRequest, help: 'default proxy CPU request (pod annotation gatehouse.io/proxy-cpu-request)' },
  'proxy-memory-request': { kind: 'string', default: D.resources.memoryRequest, help: 'default proxy memory request' },
  'proxy-cpu-limit': { kind: 'string', default: D.resources.cpuLimit, help: 'default proxy CPU limit' },
  'proxy-memory-limit': { kind: 'string', default: D.resources.memoryLimit, help: 'default proxy memory limit' }
} as const satisfies Schema

export const injectSchemas = {
  inject: {
    file: { kind: 'string', default: '-', aliases: ['f'], help: 'manifest to inject (multi-document YAML); - for stdin' },
    // YAML is what kubectl apply -f reads; json prints the same objects (one, or a kubectl-style List).
    output: { kind: 'enum', values: ['yaml', 'json'], default: 'yaml', aliases: ['o'], help: 'output format of the patched manifests' },
    'namespace-labels': { kind: 'list', default: [`${NAMESPACE_LABEL}=enabled`], help: 'labels of the target namespace, k=v (repeat or comma-separate); the default opts every object in; "" evaluates pod annotations only' },
    ...injectorFlags
  },
  'inject serve': {
    listen: { kind: 'hostport', default: '0.0.0.0:15017', help: 'HTTPS address of the webhook' },
    'metrics-listen': { kind: 'hostport', help: 'serve Prometheus metrics (GET /metrics) over plain HTTP here, e.g. 127.0.0.1:15018, or 0.0.0.0:15018 in a pod (docs/metrics.md); off when unset' },
    cert: { kind: 'string', help: 'serving certificate chain (PEM), reloaded on change (cert-manager); without --cert and --key, the certificate comes from the Gatehouse CA (--k8s-token-file)' },
    key: { kind: 'string', help: 'serving private key (PEM), reloaded on change' },
    'k8s-token-file': { kind: 'string', help: 'projected service-account token (audience gatehouse-ca): the injector gets its serving certificate from the CA at --ca-url, an SVID carrying --dns-name (the CA\'s --dns-san), and rotates it itself' },
    'trust-bundle': { kind: 'string', help: 'with --k8s-token-file: the trust bundle (PEM) the CA\'s certificate is checked against, reloaded on change' },
    'dns-name': { kind: 'string', default: DEFAULT_DNS_NAME, help: 'the name the API server calls the webhook by: the serving certificate must carry it (an error is logged when it does not)' },
    'cert-warn-before': { kind: 'duration', default: '720h', help: 'log inject.cert_expiring this long before the serving certificate expires (or once half its lifetime passed unrenewed, if later)' },
    'max-body-bytes': { kind: 'int', default: 4 * 1024 * 1024, min: 1024, help: 'largest AdmissionReview accepted' },
    'reload-interval': { kind: 'duration', default: '5s', help: 'how often the cert and key files are checked for changes' },
    ...injectorFlags
  }
} as const satisfies Record<string, Schema>

type InjectorFlagValues = ReturnType<typeof loadConfig<typeof injectorFlags>>

function configFrom (c: InjectorFlagValues): InjectorConfig {
  const problems: string[] = []
  try {
    const u = new URL(c.caUrl)
    if (u.protocol !== 'https:') problems.push(`--ca-url must be an https:// URL, got ${JSON.stringify(c.caUrl)}`)
  } catch { problems.push(`--ca-url is not a URL: ${JSON.stringify(c.caUrl)}`) }
  for (const [flag, v] of [['proxy-cpu-request', c.proxyCpuRequest], ['proxy-memory-request', c.proxyMemoryRequest], ['proxy-cpu-limit', c.proxyCpuLimit], ['proxy-memory-limit', c.proxyMemoryLimit]] as const) {
    if (parseQuantity(v) === undefined) problems.push(`--${flag} must be a Kubernetes quantity such as 100m or 128Mi, got ${JSON.stringify(v)}`)
  }
  for (const [flag, p] of [['inbound-port', c.inboundPort], ['outbound-port', c.outboundPort], ['admin-port', c.adminPort]] as const) {
    if (p > 65535) problems.push(`--${flag} must be a port number, got ${p}`)
  }
  if (new Set([c.inboundPort, c.outboundPort, c.adminPort]).size !== 3) problems.push('--inbound-port, --outbound-port and --admin-port must differ')
  if (problems.length > 0) throw new ConfigInvalidError(problems)
  return injectorConfig({
    image: c.image,
    captureImage: c.captureImage,
    imagePullPolicy: c.imagePullPolicy as InjectorConfig['imagePullPolicy'],
    caUrl: c.caUrl,
    trustDomain: c.trustDomain,
    bundleConfigMap: c.bundleConfigmap,
    inboundPort: c.inboundPort,
    outboundPort: c.outboundPort,
    adminPort: c.adminPort,
    exposeMetrics: c.proxyExposeMetrics,
    resources: { cpuRequest: c.proxyCpuRequest, memoryRequest: c.proxyMemoryRequest, cpuLimit: c.proxyCpuLimit, memoryLimit: c.proxyMemoryLimit }
  })
}

function labelsFrom (list: string[]): Record<string, string> {
  const labels: Record<string, string> = {}
  const bad: string[] = []
  for (const item of list) {
    const eq = item.indexOf('=')
    if (eq <= 0) bad.push(item)
    else labels[item.slice(0, eq)] = item.slice(eq + 1)
  }
  if (bad.length > 0) throw new ConfigInvalidError([`--namespace-labels expects key=value items, got ${bad.map(b => JSON.stringify(b)).join(', ')}`])
  return labels
}

async function readInput (file: string, label: string): Promise<{ text: string, source: string }> {
  if (file !== '-') {
    return { text: readArg(label, file), source: file }
  }
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return { text: Buffer.concat(chunks).toString('utf8'), source: 'stdin' }
}

/** The patched manifests as JSON: the one object, or a List of them (what kubectl get -o json prints for several). */
function asJson (yamlText: string): unknown {
  const items = parseAllDocuments(yamlText).map(d => d.toJS() as unknown).filter(o => o !== null && o !== undefined)
  return items.length === 1 ? items[0] : { apiVersion: 'v1', kind: 'List', items }
}

export const inject: Runner = async (argv, io) => {
  // kubectl's spelling: -f FILE (an alias of --file), and a bare "-" or path.
  const c = loadConfig('inject', injectSchemas.inject, { argv })
  if (c.positionals.length > 1) throw new ConfigInvalidError([`expected at most one manifest, got ${c.positionals.join(' ')}`])
  const file = c.positionals[0] ?? c.file
  const config = configFrom(c)
  const { text, source } = await readInput(file, c.positionals[0] === undefined ? '--file' : 'manifest')
  const result = injectManifest(text, { namespaceLabels: labelsFrom(c.namespaceLabels), config }, source)
  io.out(c.output === 'json' ? formatData('json', asJson(result.text)) : result.text)
  for (const e of result.entries) {
    process.stderr.write(`${e.ref} ${e.injected ? 'injected' : `skipped (${e.reason}: ${e.detail})`}\n`)
    for (const w of e.warnings) process.stderr.write(`gatehouse inject: warning: ${e.ref}: ${w.replace(/^gatehouse: /, '')}\n`)
  }
  return 0
}

export const injectServe: Runner = async (argv, io) => {
  const c = loadConfig('inject serve', injectSchemas['inject serve'], { argv, maxPositionals: 0 })
  const config = configFrom(c)
  const tls = await servingTls(c, config)
  const listeners: Array<[string, { host: string, port: number }]> = [['--listen', c.listen], ...(c.metricsListen === undefined ? [] : [['--metrics-listen', c.metricsListen] as [string, { host: string, port: number }]])]
  await checkListen(listeners)
  const running = await startInjectorServer({
    listen: c.listen,
    ...(c.metricsListen === undefined ? {} : { metricsListen: c.metricsListen }),
    tls: tls.source,
    dnsName: c.dnsName,
    certWarnBeforeMs: c.certWarnBefore,
    config,
    logger: createLogger('gatehouse-injector'),
    maxBodyBytes: c.maxBodyBytes,
    reloadIntervalMs: c.reloadInterval
  }).catch((err: unknown) => { tls.stop(); throw nameListenFailure(listeners, err) })
  io.onShutdown(async () => { tls.stop(); await running.close() })
  return undefined
}

/** The serving certificate: --cert/--key files, or an SVID from the CA (--k8s-token-file, --trust-bundle), obtained before serving and then rotated. */
async function servingTls (c: { cert?: string | undefined, key?: string | undefined, k8sTokenFile?: string | undefined, trustBundle?: string | undefined, reloadInterval: number }, config: InjectorConfig): Promise<{ source: InjectorServerOptions['tls'], stop: () => void }> {
  if (c.cert !== undefined || c.key !== undefined) {
    if (c.k8sTokenFile !== undefined) throw new ConfigInvalidError(['give either --cert and --key (files, e.g. from cert-manager) or --k8s-token-file (a certificate from the Gatehouse CA), not both'])
    if (c.cert === undefined || c.key === undefined) throw new ConfigInvalidError([`--cert and --key go together: --${c.cert === undefined ? 'cert' : 'key'} is required with --${c.cert === undefined ? 'key' : 'cert'}`])
    checkKeyPair('--cert', c.cert, '--key', c.key)
    return { source: { certFile: c.cert, keyFile: c.key }, stop: () => {} }
  }
  if (c.k8sTokenFile === undefined || c.trustBundle === undefined) throw new ConfigInvalidError(['a serving certificate is required: --cert and --key (files), or --k8s-token-file and --trust-bundle (a certificate from the Gatehouse CA at --ca-url)'])
  checkReadable('--k8s-token-file', c.k8sTokenFile)
  readBundleArg('--trust-bundle', c.trustBundle)
  const logger = createLogger('gatehouse-injector')
  const credentials = new Credentials()
  const bundle = watchBundleFile(credentials, { bundleFile: c.trustBundle, trustDomain: config.trustDomain, intervalMs: c.reloadInterval, logger })
  const rotator = new Rotator({ url: config.caUrl, credentials, caId: `spiffe://${config.trustDomain}/gatehouse/ca`, tokenFile: c.k8sTokenFile, trustDomain: config.trustDomain, logger })
  const stop = (): void => { rotator.stop(); bundle.stop() }
  try { await rotator.start() } catch (err) { stop(); throw err }
  return { source: { credentials }, stop }
}
