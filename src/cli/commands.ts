import type { Runner } from './runner.ts'
import type { Schema } from '../config.ts'

// Every subcommand, its one-line purpose and (loaded on demand) its runner and option schema: the CLI
// dispatches from this table, --help prints from it, and docs/cli.md is generated from it (so the
// reference cannot drift). Each command's module is imported only when that command runs: importing
// all of them (the CA, the proxy, the injector…) made every CLI call, even a usage error, take ~0.5 s.

/** A positional argument as help and docs show it ("FILE", "LOG…"); `values` when it is one of a few words (completion offers them). */
export interface Positional { name: string, help: string, values?: readonly string[] }

export interface Command { run: Runner, schema: Schema, summary: string, args: Positional[], exits?: string }

/** `args`: the positional arguments (declared here, not in the option schema: they have no env or config key). `exits`: exit statuses beyond 0 ok, 1 error, 2 usage. */
interface Entry { summary: string, args?: Positional[], exits?: string, load: () => Promise<{ run: Runner, schema: Schema }> }

const POLICY_FILE: Positional = { name: 'FILE', help: 'the policy file (YAML)' }
const LOGS: Positional = { name: 'LOG…', help: 'one or more decision-log files' }

export const commands: Record<string, Entry> = {
  'ca init': { summary: 'create a CA (root, issuer, bundle.pem, token key) in a new directory', load: async () => { const m = await import('./ca.ts'); return { run: m.caInit, schema: m.caSchemas['ca init'] } } },
  'ca issue': { summary: 'issue an SVID offline (tests, VMs, serving certificates)', load: async () => { const m = await import('./ca.ts'); return { run: m.caIssue, schema: m.caSchemas['ca issue'] } } },
  'ca token': { summary: 'print a single-use join token for one SPIFFE ID', load: async () => { const m = await import('./ca.ts'); return { run: m.caToken, schema: m.caSchemas['ca token'] } } },
  'ca serve': { summary: 'run the CA\'s HTTPS API (POST /v1/svid, GET /v1/bundle)', load: async () => { const m = await import('./ca.ts'); return { run: m.caServe, schema: m.caSchemas['ca serve'] } } },
  'ca rotate-root': { summary: 'staged root rotation: prepare, activate, retire', load: async () => { const m = await import('./ca.ts'); return { run: m.caRotateRoot, schema: m.caSchemas['ca rotate-root'] } } },
  'ca issuer renew': { summary: 'renew (rotate) the issuer offline with the root key: always a new key; the CA and sidecars follow without a restart', load: async () => { const m = await import('./ca.ts'); return { run: m.caIssuerRenew, schema: m.caSchemas['ca issuer renew'] } } },
  'ca quarantine add': { summary: 'quarantine an identity or pattern everywhere: denied at every sidecar, no SVID from the CA', load: async () => { const m = await import('./ca-quarantine.ts'); return { run: m.quarantineAdd, schema: m.quarantineSchemas['ca quarantine add'] } } },
  'ca quarantine remove': { summary: 'release a quarantined identity or pattern', load: async () => { const m = await import('./ca-quarantine.ts'); return { run: m.quarantineRemove, schema: m.quarantineSchemas['ca quarantine remove'] } } },
  'ca quarantine list': { summary: 'the quarantine list, with reasons and expiry', load: async () => { const m = await import('./ca-quarantine.ts'); return { run: m.quarantineList, schema: m.quarantineSchemas['ca quarantine list'] } } },
  proxy: { summary: 'the sidecar: inbound mTLS + policy + decision log, outbound mTLS, admin', load: async () => { const m = await import('./proxy.ts'); return { run: m.proxy, schema: m.proxySchema } } },
  'audit verify': { summary: 'prove a decision log was not edited: hash chain and signed checkpoints', args: [LOGS], exits: '0 verified, 1 tampered (or an error), 3 unsigned tail, 4 gap, 5 reordered, 6 untrusted signer, 7 not verified (no signer), 8 no genesis (with --require-genesis), 2 usage', load: async () => { const m = await import('./audit.ts'); return { run: m.auditVerify, schema: m.auditSchemas['audit verify'] } } },
  'audit query': { summary: 'filter and summarize decision logs', args: [LOGS], load: async () => { const m = await import('./audit.ts'); return { run: m.auditQuery, schema: m.auditSchemas['audit query'] } } },
  'policy check': { summary: 'validate a policy file: every problem with line and column', args: [POLICY_FILE], exits: '0 valid, 1 invalid (every problem is printed) or an error, 2 usage', load: async () => { const m = await import('./policy.ts'); return { run: m.policyCheck, schema: m.policySchemas['policy check'] } } },
  'policy explain': { summary: 'the decision for one request, and why every other rule did not match', args: [POLICY_FILE], exits: '0 allow, 3 deny (or refused with 400 before the policy), 1 error, 2 usage', load: async () => { const m = await import('./policy.ts'); return { run: m.policyExplain, schema: m.policySchemas['policy explain'] } } },
  'policy test': { summary: 'check expected decisions for request fixtures (for CI)', args: [POLICY_FILE], exits: '0 every case holds, 1 a case failed (or an error), 2 usage (a malformed case too)', load: async () => { const m = await import('./policy.ts'); return { run: m.policyTest, schema: m.policySchemas['policy test'] } } },
  'policy suggest': { summary: 'a least-privilege policy for one service, from the traffic its verified decision logs recorded', args: [LOGS], exits: '0 printed, 1 the logs do not verify (or an error), 2 usage', load: async () => { const m = await import('./evidence.ts'); return { run: m.policySuggest, schema: m.evidenceSchemas['policy suggest'] } } },
  'policy replay': { summary: 'what a policy would have done to the logged traffic: allow→deny and deny→allow flips', args: [POLICY_FILE, LOGS], exits: '0 nothing served would be denied, 3 something flips allow→deny, 1 the logs do not verify (or an error), 2 usage', load: async () => { const m = await import('./evidence.ts'); return { run: m.policyReplay, schema: m.evidenceSchemas['policy replay'] } } },
  'policy diff': { summary: 'rules added, removed and changed between two policies; with --replay, the traffic each change affects', args: [{ name: 'OLD', help: 'the policy file now in force' }, { name: 'NEW', help: 'the policy file proposed' }], exits: '0 compared, 1 the logs do not verify (or an error), 2 usage', load: async () => { const m = await import('./evidence.ts'); return { run: m.policyDiff, schema: m.evidenceSchemas['policy diff'] } } },
  'audit graph': { summary: 'who calls whom across many sidecars\' logs, with allowed and denied counts per edge', args: [LOGS], exits: '0 printed, 1 the logs do not verify (with --trust-bundle) or an error, 2 usage', load: async () => { const m = await import('./evidence.ts'); return { run: m.auditGraph, schema: m.evidenceSchemas['audit graph'] } } },
  inject: { summary: 'add the sidecar to Kubernetes manifests offline (prints the patched YAML)', args: [{ name: '[FILE]', help: 'manifest to inject, - for stdin (the same as --file)' }], load: async () => { const m = await import('./inject.ts'); return { run: m.inject, schema: m.injectSchemas.inject } } },
  'inject serve': { summary: 'the mutating admission webhook', load: async () => { const m = await import('./inject.ts'); return { run: m.injectServe, schema: m.injectSchemas['inject serve'] } } },
  'capture iptables': { summary: 'redirect the pod\'s inbound TCP to the sidecar (init container)', load: async () => { const m = await import('./capture.ts'); return { run: m.captureIptables, schema: m.captureSchema } } },
  demo: { summary: 'a whole mesh on 127.0.0.1 and a guided tour', load: async () => { const m = await import('./demo.ts'); return { run: m.demo, schema: m.demoSchema } } },
  'docs cli': { summary: 'print this CLI reference as Markdown', load: async () => { const m = await import('./reference.ts'); return { run: m.docsCli, schema: {} } } },
  version: { summary: 'print the version (also: gatehouse --version)', load: async () => { const m = await import('./reference.ts'); return { run: m.version, schema: m.versionSchema } } },
  completion: { summary: 'print a shell completion script: source <(gatehouse completion bash)', args: [{ name: 'SHELL', help: 'bash, zsh or fish', values: ['bash', 'zsh', 'fish'] }], load: async () => { const m = await import('./completion.ts'); return { run: m.completion, schema: {} } } },
  help: { summary: 'help for a command or group, e.g. gatehouse help ca serve', args: [{ name: '[COMMAND…]', help: 'a command or group, e.g. policy explain, or ca' }], load: async () => { const m = await import('./reference.ts'); return { run: m.helpCommand, schema: {} } } }
}

/** One command, loaded. */
export async function loadCommand (name: string): Promise<Command> {
  const entry = commands[name]
  if (entry === undefined) throw new Error(`no command "${name}"`)
  return { ...await entry.load(), summary: entry.summary, args: entry.args ?? [], ...(entry.exits === undefined ? {} : { exits: entry.exits }) }
}

/** Every command, loaded (for the generated reference). */
export async function loadCommands (): Promise<Record<string, Command>> {
  const out: Record<string, Command> = {}
  for (const name of Object.keys(commands)) out[name] = await loadCommand(name)
  return out
}
