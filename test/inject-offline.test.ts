import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { gatehouse } from './helpers/run-cli.ts'
import { gatehouseWithInput } from './helpers/cli-stdin.ts'
import { podProblems } from './helpers/k8s-pod.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse inject -f FILE|-` on a multi-document manifest: Pods and the pod templates of workloads
// are injected, everything else comes out as it went in, and the output can be injected again
// without change.

const MANIFEST = `# the shop, as a service owner writes it
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: web
      containers:
        - name: web
          image: web:1.2
          ports: [{containerPort: 3000}]
          readinessProbe: {httpGet: {path: /ready, port: 3000}}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {gatehouse.io/upstream-port: "9090"}
        spec:
          restartPolicy: OnFailure
          containers:
            - name: report
              image: report:7
---
apiVersion: v1
kind: Service
metadata:
  name: web   # targets the sidecar port
spec:
  selector: {app: web}
  ports:
    - port: 443
      targetPort: 15006
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
  annotations:
    gatehouse.io/inject: enabled
spec:
  containers:
    - name: shell
      image: busybox
      command: [sleep, "3600"]
`

const docsOf = (text: string): any[] => parseAllDocuments(text).map(d => d.toJS())
const podOf = (template: any): any => ({ apiVersion: 'v1', kind: 'Pod', metadata: template.metadata, spec: template.spec })
const proxyOf = (spec: any): any => spec.initContainers?.find((c: any) => c.name === 'gatehouse-proxy')
const argOf = (proxy: any, flag: string): string => proxy.args[proxy.args.indexOf(flag) + 1]

t.test('a manifest from a file and the same from stdin', async t => {
  const dir = tempDir(t, 'gh-inject-offline-')
  const file = join(dir, 'shop.yaml')
  writeFileSync(file, MANIFEST)
  const fromFile = gatehouse(['inject', '-f', file])
  t.equal(fromFile.status, 0, fromFile.stderr)
  const fromStdin = gatehouseWithInput(['inject', '-f', '-'], MANIFEST)
  t.equal(fromStdin.status, 0, fromStdin.stderr)
  t.equal(fromStdin.stdout, fromFile.stdout, 'stdin and file give the same output')
  const bare = gatehouseWithInput(['inject'], MANIFEST)
  t.equal(bare.stdout, fromFile.stdout, 'stdin is the default')

  const input = docsOf(MANIFEST)
  const out = docsOf(fromFile.stdout)
  t.same(out.map(d => d.kind), ['Deployment', 'CronJob', 'Service', 'Pod'], 'every document, in order')
  t.same(out[2], input[2], 'the Service is unchanged')
  t.match(fromFile.stdout, '# targets the sidecar port', 'an untouched document keeps its comments')

  const deployment = out[0].spec.template
  t.same(podProblems(podOf(deployment)), [], 'the Deployment template is a valid pod')
  t.equal(argOf(proxyOf(deployment.spec), '--upstream'), '127.0.0.1:3000', 'upstream from the container port')
  t.equal(deployment.spec.volumes.find((v: any) => v.name === 'gatehouse-policy').configMap.name, 'web-gatehouse-policy', 'policy ConfigMap named after the service account')
  t.equal(deployment.spec.containers[0].readinessProbe.httpGet.path, '/app-health/web/readyz')
  t.ok(deployment.metadata.annotations['gatehouse.io/status'], 'the template carries the status, so the webhook leaves its pods alone')
  t.same({ ...out[0], spec: { ...out[0].spec, template: undefined } }, { ...input[0], spec: { ...input[0].spec, template: undefined } }, 'the rest of the Deployment unchanged')

  const cron = out[1].spec.jobTemplate.spec.template
  t.same(podProblems(podOf(cron)), [], 'the CronJob template is a valid pod')
  t.equal(proxyOf(cron.spec).restartPolicy, 'Always', 'native sidecar: the Job completes when its container does')
  t.equal(argOf(proxyOf(cron.spec), '--upstream'), '127.0.0.1:9090', 'upstream from the annotation')
  t.equal(out[1].spec.schedule, '0 3 * * *')

  const pod = out[3]
  t.same(podProblems(pod), [], 'the Pod is valid')
  t.equal(proxyOf(pod.spec).name, 'gatehouse-proxy')
  t.equal(argOf(proxyOf(pod.spec), '--upstream'), '127.0.0.1:8080', 'no port anywhere: 8080')

  t.match(fromFile.stderr, /^deployment\/web injected$/m)
  t.match(fromFile.stderr, /^cronjob\/nightly injected$/m)
  t.match(fromFile.stderr, /^service\/web skipped \(not-a-workload/m)
  t.match(fromFile.stderr, /^pod\/debug injected$/m)

  const again = gatehouseWithInput(['inject'], fromFile.stdout)
  t.equal(again.status, 0)
  t.equal(again.stdout, fromFile.stdout, 'injecting the output again changes nothing')
  t.match(again.stderr, /^deployment\/web skipped \(already-injected/m)
})

t.test('flags: image, CA URL, trust domain; --namespace-labels "" leaves only annotated pods to inject', async t => {
  const r = gatehouseWithInput(['inject', '--image', 'registry.example/gatehouse:1.0', '--ca-url', 'https://ca.mesh.svc:8443', '--trust-domain', 'prod.example', '--namespace-labels', ''], MANIFEST.replace('  namespace: shop\n', '  namespace: shop\n  annotations: {gatehouse.io/inject: enabled}\n'))
  t.equal(r.status, 0, r.stderr)
  const out = docsOf(r.stdout)
  t.notOk(proxyOf(out[0].spec.template.spec), 'the Deployment did not opt its pods in')
  t.match(r.stderr, /gatehouse\.io\/inject on the Deployment's metadata has no effect; set it on \.spec\.template\.metadata\.annotations/, 'and is told where the annotation belongs')
  t.notOk(proxyOf(out[1].spec.jobTemplate.spec.template.spec), 'nor the CronJob')
  const proxy = proxyOf(out[3].spec)
  t.equal(proxy.image, 'registry.example/gatehouse:1.0')
  t.equal(argOf(proxy, '--ca-url'), 'https://ca.mesh.svc:8443')
  t.equal(argOf(proxy, '--trust-domain'), 'prod.example')
  t.equal(argOf(proxy, '--spiffe-id'), 'spiffe://prod.example/ns/$(POD_NAMESPACE)/sa/$(POD_SERVICE_ACCOUNT)')
  t.equal(out[3].spec.containers[0].env.find((e: any) => e.name === 'NO_PROXY').value, 'localhost,127.0.0.1,::1,ca.mesh.svc', 'NO_PROXY names the CA')
})

t.test('a disabled pod template and a broken manifest', async t => {
  const disabled = MANIFEST.replace('      labels: {app: web}\n', '      labels: {app: web}\n      annotations: {gatehouse.io/inject: disabled}\n')
  const r = gatehouseWithInput(['inject'], disabled)
  t.equal(r.status, 0)
  t.notOk(proxyOf(docsOf(r.stdout)[0].spec.template.spec), 'disabled wins even offline')
  t.match(r.stderr, /^deployment\/web skipped \(disabled-by-annotation/m)

  const broken = gatehouseWithInput(['inject'], 'kind: Pod\nmetadata: {name: [\n')
  t.equal(broken.status, 1)
  t.match(broken.stderr, /^gatehouse inject: GH_INJECT_INVALID: cannot read the manifest: stdin:\d+:\d+: [^\n]*; fix the manifest\n$/)
  t.equal(broken.stdout, '', 'nothing half-written to stdout')

  const missing = gatehouse(['inject', '-f', '/nonexistent/shop.yaml'])
  t.equal(missing.status, 1)
  t.equal(missing.stderr, 'gatehouse inject: GH_FILE_UNREADABLE: --file /nonexistent/shop.yaml: no such file; check the path\n')

  const badFlag = gatehouseWithInput(['inject', '--ca-url', 'http://plain', '--proxy-cpu-limit', 'lots'], MANIFEST)
  t.equal(badFlag.status, 2)
  t.match(badFlag.stderr, /GH_CONFIG_INVALID/)
  t.match(badFlag.stderr, /--ca-url must be an https:\/\/ URL/)
  t.match(badFlag.stderr, /--proxy-cpu-limit must be a Kubernetes quantity/)
})
