// `gatehouse audit graph`: who called whom across the logs of many sidecars (each decision line names
// its callee), with allowed and denied counts per edge. Streamed: one counter per edge.

import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

export interface Edge { caller: string, callee: string, allowed: number, denied: number, audit: number }

export class CallGraph {
  private readonly edges = new Map<string, Edge>()
  decisions = 0

  add (d: Record<string, unknown>): void {
    if (d.msg !== 'decision') return
    this.decisions++
    const caller = typeof d.caller === 'string' ? d.caller : '(no identity)'
    const callee = typeof d.callee === 'string' ? d.callee : '(unknown)'
    const key = `${caller}\t${callee}`
    let e = this.edges.get(key)
    if (e === undefined) this.edges.set(key, e = { caller, callee, allowed: 0, denied: 0, audit: 0 })
    if (d.decision === 'allow') e.allowed++
    else if (d.enforced === false) e.audit++ // denied by the policy, served in audit mode
    else e.denied++
  }

  result (): { nodes: string[], edges: Edge[] } {
    const edges = [...this.edges.values()].sort((a, b) => a.caller === b.caller ? (a.callee < b.callee ? -1 : 1) : a.caller < b.caller ? -1 : 1)
    const nodes = [...new Set(edges.flatMap(e => [e.caller, e.callee]))].sort()
    return { nodes, edges }
  }
}

const label = (e: Edge): string => `${e.allowed} allowed${e.denied > 0 ? `, ${e.denied} denied` : ''}${e.audit > 0 ? `, ${e.audit} audit-only` : ''}`
/** A node's short name: the SPIFFE ID path without the trust domain. */
const short = (id: string): string => id.replace(/^spiffe:\/\/[^/]+/, '')

export function toDot (g: { nodes: string[], edges: Edge[] }): string {
  const q = (s: string): string => JSON.stringify(s)
  const lines = ['digraph gatehouse {', '  rankdir=LR;', '  node [shape=box, fontname="sans-serif"];']
  for (const n of g.nodes) lines.push(`  ${q(n)} [label=${q(short(n))}];`)
  for (const e of g.edges) lines.push(`  ${q(e.caller)} -> ${q(e.callee)} [label=${q(label(e))}${e.denied > 0 ? ', color=red' : ''}];`)
  lines.push('}')
  return `${lines.join('\n')}\n`
}

export function toMermaid (g: { nodes: string[], edges: Edge[] }): string {
  const ids = new Map(g.nodes.map((n, i) => [n, `n${i}`]))
  // Mermaid labels: quotes and a few characters of its syntax are not allowed inside.
  const safe = (s: string): string => s.replace(/["|[\]{}<>]/g, '_')
  const lines = ['flowchart LR']
  for (const n of g.nodes) lines.push(`  ${ids.get(n)!}["${safe(short(n))}"]`)
  for (const e of g.edges) lines.push(`  ${ids.get(e.caller)!} -->|"${safe(label(e))}"| ${ids.get(e.callee)!}`)
  return `${lines.join('\n')}\n`
}

/** JSON for inside a <script> element: no `<` (so no `</script>` or `<!--`), `>` or `&` survives as such. */
const scriptJson = (v: unknown): string => JSON.stringify(v).replace(/</g, '\\u003c').replace(/>/g, '\\u003e').replace(/&/g, '\\u0026').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029')

/** Cytoscape's browser bundle (a dependency), read from node_modules when a page is drawn. */
function cytoscapeBundle (): string {
  const js = readFileSync(createRequire(import.meta.url).resolve('cytoscape/dist/cytoscape.min.js'), 'utf8')
  // Inline, a script ends at the first `</script`: the bundle holds none, and must not (escaped inside a string, regex or comment, the only places it could be, it means the same).
  return js.replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '<\\!--')
}

/** The page's own script: draws the graph with cytoscape from the JSON in #graph-data (text only, never HTML), then marks <body> with what it drew. */
const PAGE_SCRIPT = `(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('graph-data').textContent);
  var text = function (el, s) { el.textContent = s; return el; };
  text(document.getElementById('summary'), data.decisions + ' decisions, ' + data.nodes.length + ' services, ' + data.edges.length + ' caller -> callee pairs. Red: some calls denied; orange: some denied calls served in audit mode. Click a service or an arrow for its details.');
  var elements = data.nodes.map(function (n, i) { return { group: 'nodes', data: { id: 'n' + i, label: n.label, full: n.id } }; })
    .concat(data.edges.map(function (e, i) {
      return { group: 'edges', data: { id: 'e' + i, source: 'n' + e.source, target: 'n' + e.target, label: e.label, width: 1 + Math.min(6, Math.log10(1 + e.allowed + e.denied + e.audit) * 1.5), color: e.denied > 0 ? '#c62828' : e.audit > 0 ? '#ef6c00' : '#607d8b' } };
    }));
  var details = document.getElementById('details');
  var cy = cytoscape({
    container: document.getElementById('graph'),
    elements: elements,
    minZoom: 0.2, maxZoom: 3, wheelSensitivity: 0.3,
    style: [
      { selector: 'node', style: { 'shape': 'round-rectangle', 'background-color': '#e3f2fd', 'border-color': '#1565c0', 'border-width': 1, 'label': 'data(label)', 'text-valign': 'center', 'text-halign': 'center', 'font-size': 11, 'width': 'label', 'height': 'label', 'padding': '8px' } },
      { selector: 'edge', style: { 'curve-style': 'bezier', 'target-arrow-shape': 'triangle', 'line-color': 'data(color)', 'target-arrow-color': 'data(color)', 'width': 'data(width)', 'label': 'data(label)', 'font-size': 9, 'text-rotation': 'autorotate', 'text-background-color': '#fff', 'text-background-opacity': 0.8, 'text-background-padding': '2px' } },
      { selector: ':selected', style: { 'border-width': 3, 'line-style': 'dashed' } }
    ],
    layout: { name: 'breadthfirst', directed: true, spacingFactor: 1.3, padding: 20, animate: false }
  });
  cy.on('tap', 'node, edge', function (ev) {
    var d = ev.target.data();
    text(details, ev.target.isNode() ? d.full : cy.getElementById(d.source).data('full') + ' -> ' + cy.getElementById(d.target).data('full') + ': ' + d.label);
  });
  var tbody = document.querySelector('#edges tbody');
  data.edges.forEach(function (e) {
    var tr = document.createElement('tr');
    [data.nodes[e.source].id, data.nodes[e.target].id, e.allowed, e.denied, e.audit].forEach(function (v) { tr.appendChild(text(document.createElement('td'), String(v))); });
    tbody.appendChild(tr);
  });
  // What was drawn, for a test (or a person) to read: nodes and edges, and how many distinct places the layout gave the nodes.
  var places = {};
  cy.nodes().forEach(function (n) { var p = n.position(); places[Math.round(p.x) + ',' + Math.round(p.y)] = true; });
  document.body.setAttribute('data-nodes', String(cy.nodes().length));
  document.body.setAttribute('data-edges', String(cy.edges().length));
  document.body.setAttribute('data-places', String(Object.keys(places).length));
})();
`

const STYLE = `body { font-family: sans-serif; margin: 1.5em; color: #222; }
#graph { width: 100%; height: 70vh; min-height: 400px; border: 1px solid #ccc; border-radius: 4px; }
#details { min-height: 1.4em; font-family: monospace; }
table { border-collapse: collapse; margin-top: 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
td:nth-child(n+3) { text-align: right; }`

const cspHash = (script: string): string => `'sha256-${createHash('sha256').update(script, 'utf8').digest('base64')}'`

/**
 * One self-contained HTML page (no network access when opened: its Content-Security-Policy allows
 * only its own two scripts): the graph laid out by cytoscape, and a table of the edges. Every string
 * from the logs reaches the page as JSON data inside a non-executed script element and is shown as
 * text (canvas labels, textContent), never parsed as HTML.
 */
export function toHtml (g: { nodes: string[], edges: Edge[] }, decisions: number): string {
  const index = new Map(g.nodes.map((n, i) => [n, i]))
  const data = {
    decisions,
    nodes: g.nodes.map(id => ({ id, label: short(id) || id })),
    edges: g.edges.map(e => ({ source: index.get(e.caller)!, target: index.get(e.callee)!, allowed: e.allowed, denied: e.denied, audit: e.audit, label: label(e) }))
  }
  const library = cytoscapeBundle()
  const csp = `default-src 'none'; script-src ${cspHash(library)} ${cspHash(PAGE_SCRIPT)}; style-src 'unsafe-inline'; img-src data:`
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gatehouse: who calls whom</title>
<style>
${STYLE}
</style>
</head>
<body>
<h1>Who calls whom</h1>
<p id="summary">This page draws the graph with JavaScript: allow scripts to see it.</p>
<div id="graph"></div>
<p id="details"></p>
<table id="edges"><thead><tr><th>caller</th><th>callee</th><th>allowed</th><th>denied</th><th>audit-only</th></tr></thead><tbody></tbody></table>
<script type="application/json" id="graph-data">${scriptJson(data)}</script>
<script>${library}</script>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`
}
