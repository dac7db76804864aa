import type { Policy, PolicyRule } from './load.ts'
import type { FlipGroup } from './replay.ts'

// `gatehouse policy diff OLD NEW`: rules added, removed and changed (by name, in either list), and
// top-level changes (mode, canary paths). With logs, the replayed flips between the two policies are
// attributed to the changes: a flip whose deciding rule (then or now) is one of them.

export interface RuleChange { rule: string, list: 'rules' | 'deny', change: 'added' | 'removed' | 'changed', fields?: string[] }

export interface PolicyDiff { changes: RuleChange[], mode?: { old: string, new: string }, canary?: { added: string[], removed: string[] }, order: boolean }

const FIELDS: ReadonlyArray<keyof PolicyRule> = ['mode', 'from', 'methods', 'paths', 'ports']

export function diffPolicies (a: Policy, b: Policy): PolicyDiff {
  const changes: RuleChange[] = []
  for (const list of ['deny', 'rules'] as const) {
    const old = new Map(a[list].map(r => [r.name, r]))
    const now = new Map(b[list].map(r => [r.name, r]))
    for (const [name, r] of now) {
      const o = old.get(name)
      if (o === undefined) { changes.push({ rule: name, list, change: 'added' }); continue }
      const fields = FIELDS.filter(f => JSON.stringify(o[f] ?? null) !== JSON.stringify(r[f] ?? null))
      if (fields.length > 0) changes.push({ rule: name, list, change: 'changed', fields })
    }
    for (const name of old.keys()) if (!now.has(name)) changes.push({ rule: name, list, change: 'removed' })
  }
  const d: PolicyDiff = { changes, order: false }
  if (a.mode !== b.mode) d.mode = { old: a.mode, new: b.mode }
  const added = b.canary.filter(p => !a.canary.includes(p))
  const removed = a.canary.filter(p => !b.canary.includes(p))
  if (added.length + removed.length > 0) d.canary = { added, removed }
  // Rules in both, in another order: first match decides, so the order is a change too.
  const kept = (p: Policy, q: Policy): string => p.rules.map(r => r.name).filter(n => q.rules.some(x => x.name === n)).join('\n')
  d.order = kept(a, b) !== kept(b, a)
  return d
}

/** The changes a flip comes from: those naming the rule that decided it then or now (or, for neither, a mode change). */
export function changesBehind (d: PolicyDiff, g: FlipGroup): string[] {
  const names = d.changes.filter(c => c.rule === g.was.rule || c.rule === g.now.rule).map(c => `${c.change} ${c.list === 'deny' ? 'deny ' : ''}rule ${c.rule}`)
  if (g.was.rule === 'canary' || g.now.rule === 'canary') names.push('canary paths')
  return names.length > 0 ? names : ['rule order or mode']
}

export function diffText (d: PolicyDiff): string {
  const out: string[] = []
  for (const c of d.changes) out.push(`${c.change === 'added' ? '+' : c.change === 'removed' ? '-' : '~'} ${c.list === 'deny' ? 'deny' : 'allow'} rule ${c.rule}${c.fields === undefined ? '' : ` (${c.fields.join(', ')})`}`)
  if (d.mode !== undefined) out.push(`~ mode ${d.mode.old} → ${d.mode.new}`)
  if (d.canary !== undefined) out.push(...d.canary.added.map(p => `+ canary ${p}`), ...d.canary.removed.map(p => `- canary ${p}`))
  if (d.order) out.push('~ allow rules reordered')
  return out.length === 0 ? 'no changes\n' : `${out.join('\n')}\n`
}
