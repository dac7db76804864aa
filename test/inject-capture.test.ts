import t from 'tap'
import { injectPod } from '../src/inject/patch.ts'
import { podProblems, optedInPod as pod } from './helpers/k8s-pod.ts'


t.test('gatehouse.io/capture: iptables adds the capture init container first, with only NET_ADMIN/NET_RAW', async t => {
  const r = injectPod(pod({ 'gatehouse.io/capture': 'iptables', 'gatehouse.io/capture-exclude-ports': '9090, 9091' }), { namespaceLabels: {} }) as { pod: any, injected: boolean, warnings: string[] }
  t.ok(r.injected)
  t.same(podProblems(r.pod), [], 'a valid pod')
  const [capture, proxy] = r.pod.spec.initContainers
  t.equal(capture.name, 'gatehouse-capture', 'capture runs before everything')
  t.equal(proxy.name, 'gatehouse-proxy')
  t.same(capture.args, ['capture', 'iptables', '--inbound-port', '15006', '--exclude-ports', '15020,9090,9091'], 'admin port (kubelet probes) and annotated ports are left alone')
  t.same(capture.securityContext.capabilities, { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] })
  t.equal(capture.restartPolicy, undefined, 'a plain init container: it runs once and exits')
  t.same(r.warnings, [])
})

t.test('without the annotation there is no capture container; an unknown mode is a warning, not a failure', async t => {
  const plain = injectPod(pod({}), { namespaceLabels: {} }) as { pod: any }
  t.same(plain.pod.spec.initContainers.map((c: { name: string }) => c.name), ['gatehouse-proxy'])
  const odd = injectPod(pod({ 'gatehouse.io/capture': 'ebpf', 'gatehouse.io/capture-exclude-ports': 'x' }), { namespaceLabels: {} }) as { pod: any, injected: boolean, warnings: string[] }
  t.ok(odd.injected)
  t.same(odd.pod.spec.initContainers.map((c: { name: string }) => c.name), ['gatehouse-proxy'])
  t.match(odd.warnings, [/is not a capture mode/])
})
