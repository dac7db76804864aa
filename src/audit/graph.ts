// `gatehouse audit graph`: who called whom across the logs of many sidecars (each decision line names
// its callee), with allowed and denied counts per edge. Streamed: one counter per edge.

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
