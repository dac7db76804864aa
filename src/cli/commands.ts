import type { Runner } from './runner.ts'
import type { Schema } from '../config.ts'

// Every subcommand, its one-line purpose and (loaded on demand) its runner and option schema: the CLI
// dispatches from this table, --help prints from it, and docs/cli.md is generated from it (so the
// reference cannot drift). Each command's module is imported only when that command runs: importing
// all of them (the CA, the proxy, the injector…) made every CLI call, even a usage error, take ~0.5 s.

export interface Command { run: Runner, schema: Schema, summary: string }

interface Entry { summary: string, load: () => Promise<{ run: Runner, schema: Schema }> }

export const commands: Record<string, Entry> = {
  'ca init': { summary: 'create a CA (root, issuer, bundle.pem, token key) in a new directory', load: async () => { const m = await import('./ca.ts'); return { run: m.caInit, schema: m.caSchemas['ca init'] } } },
  'ca issue': { summary: 'issue an SVID offline (tests, VMs, serving certificates)', load: async () => { const m = await import('./ca.ts'); return { run: m.caIssue, schema: m.caSchemas['ca issue'] } } },
  'ca token': { summary: 'print a single-use join token for one SPIFFE ID', load: async () => { const m = await import('./ca.ts'); return { run: m.caToken, schema: m.caSchemas['ca token'] } } },
  'ca serve': { summary: 'run the CA\'s HTTPS API (POST /v1/svid, GET /v1/bundle)', load: async () => { const m = await import('./ca.ts'); return { run: m.caServe, schema: m.caSchemas['ca serve'] } } },
  'ca rotate-root': { summary: 'staged root rotation: prepare, activate, retire', load: async () => { const m = await import('./ca.ts'); return { run: m.caRotateRoot, schema: m.caSchemas['ca rotate-root'] } } },
  proxy: { summary: 'the sidecar: inbound mTLS + policy + decision log, outbound mTLS, admin', load: async () => { const m = await import('./proxy.ts'); return { run: m.proxy, schema: m.proxySchema } } },
  'audit verify': { summary: 'prove a decision log was not edited: hash chain and signed checkpoints', load: async () => { const m = await import('./audit.ts'); return { run: m.auditVerify, schema: m.auditSchemas['audit verify'] } } },
  'audit query': { summary: 'filter and summarize decision logs', load: async () => { const m = await import('./audit.ts'); return { run: m.auditQuery, schema: m.auditSchemas['audit query'] } } },
  'policy check': { summary: 'validate a policy file: every problem with line and column', load: async () => { const m = await import('./policy.ts'); return { run: m.policyCheck, schema: m.policySchemas['policy check'] } } },
  'policy explain': { summary: 'the decision for one request, and why every other rule did not match', load: async () => { const m = await import('./policy.ts'); return { run: m.policyExplain, schema: m.policySchemas['policy explain'] } } },
  'policy test': { summary: 'check expected decisions for request fixtures (for CI)', load: async () => { const m = await import('./policy.ts'); return { run: m.policyTest, schema: m.policySchemas['policy test'] } } },
  inject: { summary: 'add the sidecar to Kubernetes manifests offline (prints the patched YAML)', load: async () => { const m = await import('./inject.ts'); return { run: m.inject, schema: m.injectSchemas.inject } } },
  'inject serve': { summary: 'the mutating admission webhook', load: async () => { const m = await import('./inject.ts'); return { run: m.injectServe, schema: m.injectSchemas['inject serve'] } } },
  'capture iptables': { summary: 'redirect the pod\'s inbound TCP to the sidecar (init container)', load: async () => { const m = await import('./capture.ts'); return { run: m.captureIptables, schema: m.captureSchema } } },
  demo: { summary: 'a whole mesh on 127.0.0.1 and a guided tour', load: async () => { const m = await import('./demo.ts'); return { run: m.demo, schema: m.demoSchema } } },
  'docs cli': { summary: 'print this CLI reference as Markdown', load: async () => { const m = await import('./reference.ts'); return { run: m.docsCli, schema: {} } } }
}

/** One command, loaded. */
export async function loadCommand (name: string): Promise<Command> {
  const entry = commands[name]
  if (entry === undefined) throw new Error(`no command "${name}"`)
  return { ...await entry.load(), summary: entry.summary }
}

/** Every command, loaded (for the generated reference). */
export async function loadCommands (): Promise<Record<string, Command>> {
  const out: Record<string, Command> = {}
  for (const name of Object.keys(commands)) out[name] = await loadCommand(name)
  return out
}
