import t from 'tap'
import { Pki } from './helpers/mesh.ts'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { writeMeshLogs, tamperOneLine, PAYMENTS, ORDERS, BILLING, CRON, BACKUP, EVIL, WEB } from './helpers/decision-logs.ts'
import { tempDir } from './helpers/files.ts'

// `gatehouse audit graph`: who called whom across the logs of two sidecars, with allowed, denied and
// audit-only (denied, served in audit mode) counts per edge, as JSON, Graphviz dot and Mermaid.

t.test('audit graph: the edges of a two-sidecar mesh', async t => {
  const dir = tempDir(t, 'gh-graph-')
  const pki = new Pki(dir)
  const files = await writeMeshLogs(dir, pki)
  const json = await gatehouseAsync(['audit', 'graph', ...files, '--trust-bundle', pki.bundleFile, '-o', 'json'])
  t.equal(json.status, 0, json.stderr)
  const g = JSON.parse(json.stdout) as { decisions: number, nodes: string[], edges: Array<{ caller: string, callee: string, allowed: number, denied: number, audit: number }> }
  t.equal(g.decisions, 30)
  t.same(g.nodes, [CRON, BILLING, EVIL, BACKUP, ORDERS, PAYMENTS, WEB])
  t.same(g.edges.map(e => [e.caller, e.callee, e.allowed, e.denied, e.audit]), [
    [CRON, PAYMENTS, 0, 0, 3],
    [BILLING, PAYMENTS, 6, 0, 0],
    [EVIL, PAYMENTS, 0, 2, 0],
    [BACKUP, PAYMENTS, 2, 0, 0],
    [ORDERS, PAYMENTS, 12, 0, 0],
    [WEB, ORDERS, 4, 1, 0]
  ], 'one edge per caller and callee, from both sidecars\' logs')

  const dot = await gatehouseAsync(['audit', 'graph', ...files])
  t.equal(dot.status, 0, 'without --trust-bundle: drawn from the logs as they are')
  t.match(dot.stdout, /^digraph gatehouse \{\n/)
  t.match(dot.stdout, `"${WEB}" -> "${ORDERS}" [label="4 allowed, 1 denied", color=red];`)
  const mermaid = await gatehouseAsync(['audit', 'graph', ...files, '--format', 'mermaid'])
  t.match(mermaid.stdout, /^flowchart LR\n/)
  t.match(mermaid.stdout, /n6 -->\|"4 allowed, 1 denied"\| n4\n/)

  tamperOneLine(files[0]!)
  const refused = await gatehouseAsync(['audit', 'graph', ...files, '--trust-bundle', pki.bundleFile])
  t.equal(refused.status, 1, 'with --trust-bundle, a tampered log is refused')
  t.match(refused.stderr, /refused: the logs do not verify \(TAMPERED/)
})
