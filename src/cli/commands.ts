import type { Runner } from './runner.ts'
import type { Schema } from '../config.ts'
import { caSchemas, caInit, caIssue, caToken, caServe, caRotateRoot } from './ca.ts'
import { proxy, proxySchema } from './proxy.ts'
import { inject, injectServe, injectSchemas } from './inject.ts'
import { auditSchemas, auditVerify, auditQuery } from './audit.ts'
import { demo, demoSchema } from './demo.ts'
import { policySchemas, policyCheck, policyExplain, policyTest } from './policy.ts'
import { captureSchema, captureIptables } from './capture.ts'
import { docsCli } from './reference.ts'

// Every subcommand, its one-line purpose and its option schema: the CLI dispatches from this table,
// --help prints from it, and docs/cli.md is generated from it (so the reference cannot drift).

export interface Command { run: Runner, schema: Schema, summary: string }

export const commands: Record<string, Command> = {
  'ca init': { run: caInit, schema: caSchemas['ca init'], summary: 'create a CA (root, issuer, bundle.pem, token key) in a new directory' },
  'ca issue': { run: caIssue, schema: caSchemas['ca issue'], summary: 'issue an SVID offline (tests, VMs, serving certificates)' },
  'ca token': { run: caToken, schema: caSchemas['ca token'], summary: 'print a single-use join token for one SPIFFE ID' },
  'ca serve': { run: caServe, schema: caSchemas['ca serve'], summary: 'run the CA\'s HTTPS API (POST /v1/svid, GET /v1/bundle)' },
  'ca rotate-root': { run: caRotateRoot, schema: caSchemas['ca rotate-root'], summary: 'staged root rotation: prepare, activate, retire' },
  proxy: { run: proxy, schema: proxySchema, summary: 'the sidecar: inbound mTLS + policy + decision log, outbound mTLS, admin' },
  'audit verify': { run: auditVerify, schema: auditSchemas['audit verify'], summary: 'prove a decision log was not edited: hash chain and signed checkpoints' },
  'audit query': { run: auditQuery, schema: auditSchemas['audit query'], summary: 'filter and summarize decision logs' },
  'policy check': { run: policyCheck, schema: policySchemas['policy check'], summary: 'validate a policy file: every problem with line and column' },
  'policy explain': { run: policyExplain, schema: policySchemas['policy explain'], summary: 'the decision for one request, and why every other rule did not match' },
  'policy test': { run: policyTest, schema: policySchemas['policy test'], summary: 'check expected decisions for request fixtures (for CI)' },
  inject: { run: inject, schema: injectSchemas.inject, summary: 'add the sidecar to Kubernetes manifests offline (prints the patched YAML)' },
  'inject serve': { run: injectServe, schema: injectSchemas['inject serve'], summary: 'the mutating admission webhook' },
  'capture iptables': { run: captureIptables, schema: captureSchema, summary: 'redirect the pod\'s inbound TCP to the sidecar (init container)' },
  demo: { run: demo, schema: demoSchema, summary: 'a whole mesh on 127.0.0.1 and a guided tour' },
  'docs cli': { run: docsCli, schema: {}, summary: 'print this CLI reference as Markdown' }
}
