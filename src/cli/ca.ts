import { writeFileSync, existsSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { createPublicKey } from 'node:crypto'
import { loadConfig, type Schema } from '../config.ts'
import { PORTS } from '../ports.ts'
import { createLogger } from '../log.ts'
import { ConfigInvalidError, OutputExistsError } from '../errors.ts'
import { readArg, checkReadable, checkDirArg, checkListen, nameListenFailure } from './check.ts'
import { SpiffeId } from '../spiffe/id.ts'
import { initCa, loadCa, FILES } from '../ca/ca-directory.ts'
import { Issuer } from '../ca/issuer.ts'
import { mintJoinToken, JoinTokenVerifier, UsedTokenLog } from '../ca/join-token.ts'
import { K8sTokenVerifier, jwksFromFile, jwksFromUrl } from '../ca/k8s-token.ts'
import { Attestor } from '../ca/attest.ts'
import { RateLimiter } from '../ca/rate-limit.ts'
import { callerPatternProblem } from '../policy/patterns.ts'
import { AUTO_QUARANTINE_MODES, type AutoQuarantineMode } from '../ca/reports.ts'
import { startCaServer } from '../ca/ca-server.ts'
import { KubeClient, inClusterConfig, SERVICE_ACCOUNT_DIR } from '../k8s/api-client.ts'
import { rotateRoot, type RotationStep } from '../ca/root-rotation.ts'
import { renewIssuer } from '../ca/issuer-renewal.ts'
import { generateKey, KEY_TYPES, type KeyType } from '../x509/keys.ts'
import { verifyCsr } from '../x509/csr.ts'
import type { Runner } from './runner.ts'

export const caSchemas = {
  'ca init': {
    dir: { kind: 'string', required: true, help: 'directory for the new CA (created; must not hold a CA)' },
    'trust-domain': { kind: 'string', required: true, help: 'SPIFFE trust domain, e.g. cluster.local' },
    'key-type': { kind: 'enum', values: KEY_TYPES, default: 'ec-p256', help: 'root and issuer key type' },
    'root-ttl': { kind: 'duration', default: '87600h', help: 'root certificate lifetime' },
    'issuer-ttl': { kind: 'duration', default: '8760h', help: 'issuer certificate lifetime (capped at the root\'s)' }
  },
  'ca issue': {
    dir: { kind: 'string', required: true, help: 'CA directory' },
    'spiffe-id': { kind: 'string', required: true, help: 'SPIFFE ID of the workload' },
    out: { kind: 'string', required: true, help: 'output prefix: writes PREFIX.pem (chain) and PREFIX-key.pem' },
    ttl: { kind: 'duration', default: '1h', help: 'leaf lifetime' },
    dns: { kind: 'list', default: [], help: 'DNS SANs (repeat or comma-separate), for serving certificates' },
    ip: { kind: 'list', default: [], help: 'IP SANs' },
    csr: { kind: 'string', help: 'certify the key of this PEM CSR instead of generating a key' },
    'key-type': { kind: 'enum', values: KEY_TYPES, default: 'ec-p256', help: 'type of the generated key' }
  },
  'ca token': {
    dir: { kind: 'string', required: true, help: 'CA directory' },
    'spiffe-id': { kind: 'string', required: true, help: 'SPIFFE ID the token may obtain' },
    ttl: { kind: 'duration', default: '10m', help: 'token lifetime' }
  },
  'ca rotate-root': {
    dir: { kind: 'string', required: true, help: 'CA directory' },
    step: { kind: 'enum', values: ['prepare', 'activate', 'retire'], required: true, help: 'prepare (add a new root to the bundle), activate (issue under it), retire (drop the old root)' },
    'leaf-ttl': { kind: 'duration', default: '1h', help: 'leaf lifetime used by ca serve: the minimum wait between steps' },
    force: { kind: 'bool', default: false, help: 'skip the wait between steps (sidecars that have not renewed will refuse new peers)' }
  },
  'ca issuer renew': {
    dir: { kind: 'string', required: true, help: 'CA directory, with root-key.pem (offline: where the root key is kept)' },
    ttl: { kind: 'duration', default: '365d', help: 'lifetime of the new issuer (must end before the root does)' }
  },
  'ca serve': {
    dir: { kind: 'string', required: true, help: 'CA directory' },
    listen: { kind: 'hostport', default: `0.0.0.0:${PORTS.ca}`, help: 'HTTPS API address' },
    'metrics-listen': { kind: 'hostport', help: 'serve Prometheus metrics (GET /metrics) over plain HTTP here, e.g. 127.0.0.1:15444, or 0.0.0.0:15444 in a pod (docs/metrics.md); off when unset' },
    'leaf-ttl': { kind: 'duration', default: '1h', min: 1000, help: 'lifetime of issued leaves (seconds allowed, for tests)' },
    'jwks-file': { kind: 'string', help: 'JWKS of the Kubernetes service-account issuer (file)' },
    'jwks-url': { kind: 'string', help: 'JWKS URL, e.g. https://kubernetes.default.svc/openid/v1/jwks' },
    'jwks-ca-file': { kind: 'string', help: 'CA bundle for --jwks-url' },
    'jwks-token-file': { kind: 'string', help: 'bearer token file for --jwks-url' },
    issuer: { kind: 'string', help: 'expected "iss" of service-account tokens (required with --jwks-*)' },
    'rate-burst': { kind: 'int', default: 50, min: 1, help: 'issuance burst per identity' },
    'rate-per-minute': { kind: 'int', default: 30, min: 1, help: 'sustained issuances per identity per minute' },
    'serving-dns': { kind: 'list', default: ['localhost'], help: 'DNS SANs of the CA serving certificate' },
    'serving-ip': { kind: 'list', default: ['127.0.0.1', '::1'], help: 'IP SANs of the CA serving certificate' },
    'reload-interval': { kind: 'duration', default: '2s', help: 'how often the CA files are checked for changes (root rotation)' },
    'used-tokens-file': { kind: 'string', help: 'where spent join-token IDs are recorded (default DIR/join-tokens-used.log; set it when DIR is read-only)' },
    'max-renewal-chain-age': { kind: 'duration', default: '24h', min: 1000, help: 'how long an identity first issued from a join token may renew with its SVID alone, counted from the join token\'s use; then a new join token is needed (service-account identities always renew with a fresh token)' },
    'auto-quarantine': { kind: 'enum', values: AUTO_QUARANTINE_MODES, default: 'audit', help: 'what sidecars\' reports of a compromised caller do (POST /v1/reports): off (recorded), audit (logged as "would quarantine"), enforce (added to DIR/quarantine.yaml with --auto-quarantine-ttl)' },
    quorum: { kind: 'int', default: 1, min: 1, help: 'distinct sidecars that must report the same identity within 10 minutes before --auto-quarantine acts' },
    'never-quarantine': { kind: 'list', default: [], help: 'SPIFFE IDs or patterns never quarantined automatically (the CA\'s own spiffe://TD/gatehouse/** always is exempt)' },
    'auto-quarantine-ttl': { kind: 'duration', default: '1h', min: 1000, help: 'how long an automatic quarantine lasts (a person removes or extends it)' },
    'dns-san': { kind: 'list', default: [], help: 'ID=DNS: add the DNS name to the SVIDs issued to that SPIFFE ID (repeat for more names), e.g. spiffe://cluster.local/ns/gatehouse-system/sa/gatehouse-injector=gatehouse-injector.gatehouse-system.svc: the injector\'s webhook serving certificate' },
    'publish-trust-bundle': { kind: 'bool', default: false, help: 'in Kubernetes: keep a ConfigMap with the trust bundle (key bundle.pem) in this pod\'s namespace and in every namespace --publish-namespace-selector picks' },
    'trust-bundle-configmap': { kind: 'string', default: 'gatehouse-trust-bundle', help: 'name of the ConfigMap --publish-trust-bundle keeps' },
    'publish-namespace-selector': { kind: 'list', default: ['gatehouse.io/inject=enabled', 'gatehouse.io/trust-bundle=enabled'], help: 'label selectors of the namespaces that get the ConfigMap (a namespace matching any one)' },
    'webhook-ca-bundle': { kind: 'string', help: 'in Kubernetes: keep the caBundle of every webhook of this MutatingWebhookConfiguration equal to the trust bundle, e.g. gatehouse-injector' },
    'publish-interval': { kind: 'duration', default: '30s', min: 1000, help: 'how often the ConfigMaps and caBundle are checked (a bundle change publishes at once)' },
    'kube-service-account-dir': { kind: 'string', default: SERVICE_ACCOUNT_DIR, help: 'the pod\'s service-account token, ca.crt and namespace, used with KUBERNETES_SERVICE_HOST/PORT to reach the API server' }
  }
} as const satisfies Record<string, Schema>

const keyPem = (k: import('node:crypto').KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()

export const caInit: Runner = async (argv, io) => {
  const c = loadConfig('ca init', caSchemas['ca init'], { argv, maxPositionals: 0 })
  checkDirArg('--dir', c.dir)
  const { files } = initCa({ dir: c.dir, trustDomain: c.trustDomain, keyType: c.keyType as KeyType, rootTtlMs: c.rootTtl, issuerTtlMs: c.issuerTtl })
  io.out(`created CA for trust domain ${c.trustDomain} in ${c.dir}\n${files.map(f => `  ${f}`).join('\n')}\n`)
  return 0
}

export const caIssue: Runner = async (argv, io) => {
  const c = loadConfig('ca issue', caSchemas['ca issue'], { argv, maxPositionals: 0 })
  const outDir = dirname(c.out)
  if (!existsSync(outDir)) throw new ConfigInvalidError([`--out ${c.out}: directory ${outDir} does not exist; create it first or choose another prefix`])
  const ca = loadCa(c.dir)
  const id = SpiffeId.parse(c.spiffeId)
  const key = c.csr === undefined ? generateKey(c.keyType as KeyType) : undefined
  const publicKey = key === undefined ? verifyCsr(readArg('--csr', c.csr!)) : createPublicKey(key.privateKey)
  const keyFile = key === undefined ? undefined : `${c.out}-key.pem`
  if (keyFile !== undefined && existsSync(keyFile)) throw new OutputExistsError(`--out ${c.out}: ${keyFile} exists; refusing to overwrite a private key (choose another --out prefix, or remove the old files)`)
  const svid = new Issuer(ca).issue({ id, publicKey, ttlMs: c.ttl, dns: c.dns, ips: c.ip })
  if (key !== undefined) writeFileSync(keyFile!, keyPem(key.privateKey), { mode: 0o600, flag: 'wx' })
  writeFileSync(`${c.out}.pem`, svid.chainPem)
  io.out(`issued ${svid.id} serial ${svid.serial}, valid until ${svid.notAfter.toISOString()}\n  ${c.out}.pem${keyFile === undefined ? '' : `\n  ${keyFile}`}\n`)
  return 0
}

export const caToken: Runner = async (argv, io) => {
  const c = loadConfig('ca token', caSchemas['ca token'], { argv, maxPositionals: 0 })
  const ca = loadCa(c.dir)
  io.out(`${await mintJoinToken({ tokenKey: ca.tokenKey, trustDomain: ca.trustDomain, id: SpiffeId.parse(c.spiffeId), ttlMs: c.ttl })}\n`)
  return 0
}

export const caRotateRoot: Runner = async (argv, io) => {
  const c = loadConfig('ca rotate-root', caSchemas['ca rotate-root'], { argv, maxPositionals: 0 })
  loadCa(c.dir) // a missing or damaged CA is reported as such, before any step starts
  io.out(`${rotateRoot(c.dir, c.step as RotationStep, { leafTtlMs: c.leafTtl, force: c.force })}\n`)
  return 0
}

export const caIssuerRenew: Runner = async (argv, io) => {
  const c = loadConfig('ca issuer renew', caSchemas['ca issuer renew'], { argv, maxPositionals: 0 })
  const r = renewIssuer(c.dir, { ttlMs: c.ttl })
  io.out(`new issuer serial ${r.serial}, valid until ${r.notAfter.toISOString()}, signed by the root in ${c.dir}
  ${join(c.dir, FILES.issuerCert)}
  ${join(c.dir, FILES.issuerKey)}
the old issuer (serial ${r.previousSerial}) is kept as ${r.archived}; its leaves stay valid until they expire
a running 'ca serve' on this directory issues from the new issuer at its next poll (--reload-interval); no sidecar needs anything
`)
  return 0
}

export const caServe: Runner = async (argv, io) => {
  const c = loadConfig('ca serve', caSchemas['ca serve'], { argv, maxPositionals: 0 })
  const ca = loadCa(c.dir)
  let k8s: K8sTokenVerifier | undefined
  if (c.jwksFile !== undefined || c.jwksUrl !== undefined) {
    if (c.issuer === undefined) throw new ConfigInvalidError(['--issuer is required with --jwks-file or --jwks-url (the "iss" of your cluster\'s service-account tokens)'])
    for (const [flag, file] of [['--jwks-file', c.jwksFile], ['--jwks-ca-file', c.jwksCaFile], ['--jwks-token-file', c.jwksTokenFile]] as const) {
      if (file !== undefined) checkReadable(flag, file)
    }
    const jwks = c.jwksFile !== undefined ? jwksFromFile(c.jwksFile) : jwksFromUrl(c.jwksUrl!, { caFile: c.jwksCaFile, tokenFile: c.jwksTokenFile })
    k8s = new K8sTokenVerifier({ jwks, issuer: c.issuer, trustDomain: ca.trustDomain })
  }
  const listeners: Array<[string, { host: string, port: number }]> = [['--listen', c.listen], ...(c.metricsListen === undefined ? [] : [['--metrics-listen', c.metricsListen] as [string, { host: string, port: number }]])]
  await checkListen(listeners)
  const logger = createLogger('gatehouse-ca')
  const badPatterns = c.neverQuarantine.map(p => [p, callerPatternProblem(p)] as const).filter(([, problem]) => problem !== undefined)
  if (badPatterns.length > 0) throw new ConfigInvalidError(badPatterns.map(([p, problem]) => `--never-quarantine: ${problem!}, got ${JSON.stringify(p)}`))
  const dnsSans = parseDnsSans(c.dnsSan, ca.trustDomain)
  const publishing = c.publishTrustBundle || c.webhookCaBundle !== undefined
  const kube = publishing ? kubeClient(c.kubeServiceAccountDir) : undefined
  const running = await startCaServer({
    ca,
    dnsSans,
    ...(kube === undefined ? {} : { publisher: { client: kube, configMap: c.trustBundleConfigmap, namespaceSelectors: c.publishTrustBundle ? c.publishNamespaceSelector : [], publishConfigMaps: c.publishTrustBundle, ...(c.webhookCaBundle === undefined ? {} : { webhook: c.webhookCaBundle }), intervalMs: c.publishInterval } }),
    issuer: new Issuer(ca, { defaultTtlMs: c.leafTtl }),
    attestor: new Attestor({ join: new JoinTokenVerifier({ tokenKey: ca.tokenKey, trustDomain: ca.trustDomain, used: new UsedTokenLog(c.usedTokensFile ?? join(c.dir, FILES.usedTokens)) }), ...(k8s === undefined ? {} : { k8s }) }),
    limiter: new RateLimiter({ burst: c.rateBurst, perMinute: c.ratePerMinute }),
    maxRenewalChainAgeMs: c.maxRenewalChainAge,
    autoQuarantine: { mode: c.autoQuarantine as AutoQuarantineMode, quorum: c.quorum, neverQuarantine: [`spiffe://${ca.trustDomain}/gatehouse/**`, ...c.neverQuarantine], ttlMs: c.autoQuarantineTtl },
    logger,
    listen: c.listen,
    ...(c.metricsListen === undefined ? {} : { metricsListen: c.metricsListen }),
    servingDns: c.servingDns,
    servingIps: c.servingIp,
    reload: { intervalMs: c.reloadInterval, load: () => { const m = loadCa(c.dir); return { ca: m, issuer: new Issuer(m, { defaultTtlMs: c.leafTtl }) } } }
  }).catch(async (err: unknown) => { await kube?.close(); throw nameListenFailure(listeners, err) })
  io.onShutdown(async () => { await running.close(); await kube?.close() })
  return undefined // keep running
}

/** `--dns-san ID=DNS` items: DNS names per SPIFFE ID of this trust domain. */
function parseDnsSans (items: string[], trustDomain: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  const problems: string[] = []
  for (const item of items) {
    const at = item.lastIndexOf('=')
    const id = at === -1 ? undefined : SpiffeId.tryParse(item.slice(0, at))
    const dns = item.slice(at + 1)
    if (id === undefined || id.trustDomain !== trustDomain) problems.push(`--dns-san: expected ID=DNS with a SPIFFE ID of trust domain ${trustDomain}, e.g. spiffe://${trustDomain}/ns/gatehouse-system/sa/gatehouse-injector=gatehouse-injector.gatehouse-system.svc, got ${JSON.stringify(item)}`)
    else if (!/^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/.test(dns)) problems.push(`--dns-san: ${JSON.stringify(dns)} is not a lower-case DNS name (in ${JSON.stringify(item)})`)
    else out.set(id.toString(), [...(out.get(id.toString()) ?? []), dns])
  }
  if (problems.length > 0) throw new ConfigInvalidError(problems)
  return out
}

/** The API server as this pod's service account: only inside a pod (or with its environment set up). */
function kubeClient (dir: string): KubeClient {
  let config
  try { config = inClusterConfig(process.env, dir) } catch (err) {
    throw new ConfigInvalidError([`--publish-trust-bundle/--webhook-ca-bundle: cannot read the service account in ${dir} (--kube-service-account-dir): ${(err as Error).message}`])
  }
  if (config === undefined) throw new ConfigInvalidError(['--publish-trust-bundle/--webhook-ca-bundle talk to the Kubernetes API server: run them in a pod (KUBERNETES_SERVICE_HOST is not set)'])
  return new KubeClient(config)
}
