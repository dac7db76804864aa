import { chmodSync, cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { Test } from 'tap'
import { gatehouseAsync } from './audit-log.ts'
import type { CliResult } from './run-cli.ts'
import { Pki } from './mesh.ts'
import { tempDir, type Teardown } from './files.ts'

// The newcomer-error table (test/newcomer-errors-*.test.ts): every subcommand run wrong the way a
// newcomer would, with the files it is run on, and the check that each answers with exactly one line
// on stderr, "gatehouse <command>: GH_CODE: what is wrong; what to do", naming the flag or file,
// exit 2 (configuration or usage) or 1 (anything else), and no stack trace unless --debug. Each test
// file runs a part of the table (isCaCase splits it); the whole table is checked to cover every
// subcommand.

export interface Case {
  /** The subcommand as printed after "gatehouse " (empty for an unknown command). */
  cmd: string
  what: string
  args: string[]
  env?: NodeJS.ProcessEnv
  status: 1 | 2
  code: string
  /** Each must appear in the line: the bad flag/key/file, and what to do. */
  says: Array<string | RegExp>
}

/** The `gatehouse ca …` cases (newcomer-errors-ca.test.ts); the rest run in newcomer-errors-commands.test.ts. */
export const isCaCase = (c: Case): boolean => c.cmd.startsWith('ca ')

export interface NewcomerFixture {
  dir: string
  /** A file that is not valid YAML. */
  badYaml: string
  /** Writes `text` to `name` in dir and returns its path. */
  file: (name: string, text: string) => string
  /** The whole table; `busyPort` is a 127.0.0.1 port another process holds. */
  cases: (busyPort: number) => Case[]
}

/** The files the cases run on (a PKI, a policy, bad YAML, unreadable keys, broken CA dirs), in a temp dir. */
export function newcomerFixture (t: Teardown): NewcomerFixture {
  const dir = tempDir(t, 'gh-newcomer-')
  const pki = new Pki(dir)
  const w = pki.issue('/ns/web/sa/web', 'web')
  const file = (name: string, text: string): string => { const f = join(dir, name); writeFileSync(f, text); return f }
  const policy = file('policy.yaml', 'version: 1\nrules: []\n')
  const badYaml = file('bad.yaml', 'version: [1\n  rules: : x\n')
  const garbage = file('garbage.pem', 'this is not PEM\n')
  const emptyLog = file('empty.log', '')
  const missing = join(dir, 'does-not-exist.yaml')
  const missingDir = join(dir, 'no-such-ca')
  const caDir = pki.ca.dir

  // An unreadable key. Mode 000 stops everyone but root; tests may run as root, and then a directory
  // where the key file should be stands in for it (the read fails with EISDIR instead of EACCES).
  const asRoot = process.getuid?.() === 0
  function unreadableFile (name: string): string {
    const f = join(dir, name)
    if (asRoot) mkdirSync(f)
    else { writeFileSync(f, 'secret\n'); chmodSync(f, 0o000) }
    return f
  }
  const unreadableWhy = asRoot ? /is a directory, not a file/ : /permission denied; make it readable/
  const unreadableKey = unreadableFile('unreadable-key.pem')
  // CA directories whose issuer key cannot be read, or holds garbage.
  const caUnreadable = join(dir, 'ca-unreadable')
  cpSync(caDir, caUnreadable, { recursive: true })
  rmSync(join(caUnreadable, 'issuer-key.pem'))
  if (asRoot) mkdirSync(join(caUnreadable, 'issuer-key.pem'))
  else { writeFileSync(join(caUnreadable, 'issuer-key.pem'), 'x'); chmodSync(join(caUnreadable, 'issuer-key.pem'), 0o000) }
  const caGarbage = join(dir, 'ca-garbage')
  cpSync(caDir, caGarbage, { recursive: true })
  writeFileSync(join(caGarbage, 'issuer-key.pem'), 'not a key\n')
  // A CA directory as it is in the cluster: without the root key (kept offline).
  const caNoRootKey = join(dir, 'ca-no-root-key')
  cpSync(caDir, caNoRootKey, { recursive: true })
  rmSync(join(caNoRootKey, 'root-key.pem'))
  t.teardown(() => {
    // chmod back so tempDir's cleanup can remove them (as non-root).
    if (!asRoot) for (const f of [unreadableKey, join(caUnreadable, 'issuer-key.pem')]) chmodSync(f, 0o600)
  })

  const ID = 'spiffe://example.org/ns/web/sa/web'

  const configCase = (cmd: string, args: string[] = []): Case => ({
    cmd, what: '(e) bad YAML in --config', args: [...cmd.split(' '), ...args, '--config', badYaml], status: 2, code: 'GH_CONFIG_INVALID', says: ['--config', badYaml, 'not valid YAML', 'line 1', 'fix the file']
  })

  function cases (busyPort: number): Case[] {
    const busy = `127.0.0.1:${busyPort}`
    const proxyArgs = ['proxy', '--policy', policy, '--trust-bundle', pki.bundleFile, '--cert', w.cert, '--key', w.key, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--decision-log-stdout', 'false']
    const injectServeArgs = ['inject', 'serve', '--cert', w.cert, '--key', w.key, '--listen', '127.0.0.1:0']
    return [
      // usage
      { cmd: '', what: 'unknown command', args: ['frobnicate'], status: 2, code: 'GH_USAGE', says: ['unknown command "frobnicate"', "run 'gatehouse --help'"] },
      { cmd: '', what: 'misspelt command', args: ['polcy', 'check', policy], status: 2, code: 'GH_USAGE', says: ['unknown command "polcy check"', 'did you mean "policy check"'] },
      { cmd: '', what: 'unknown subcommand of a group', args: ['ca', 'create'], status: 2, code: 'GH_USAGE', says: ['unknown command "ca create"', 'ca init', "run 'gatehouse --help'"] },
      { cmd: 'ca init', what: 'unknown flag', args: ['ca', 'init', '--dri', join(dir, 'x'), '--trust-domain', 'example.org'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--dri: unknown flag', 'did you mean --dir?', "see 'gatehouse ca init --help'"] },
      { cmd: 'ca init', what: 'a value without its flag', args: ['ca', 'init', join(dir, 'x'), '--trust-domain', 'example.org'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--dir is required', 'unexpected argument', 'given as --flag VALUE'] },
      { cmd: 'docs cli', what: 'unexpected argument', args: ['docs', 'cli', 'extra'], status: 2, code: 'GH_CONFIG_INVALID', says: ['unexpected argument "extra"', "see 'gatehouse docs cli --help'"] },

      // ca init
      { cmd: 'ca init', what: '(a) missing --dir', args: ['ca', 'init', '--trust-domain', 'example.org'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--dir is required', 'GATEHOUSE_DIR'] },
      { cmd: 'ca init', what: '(b) --config does not exist', args: ['ca', 'init', '--config', missing], status: 2, code: 'GH_CONFIG_INVALID', says: ['--config', missing, 'no such file; check the path'] },
      { cmd: 'ca init', what: '(b) GATEHOUSE_CONFIG does not exist', args: ['ca', 'init'], env: { GATEHOUSE_CONFIG: missing }, status: 2, code: 'GH_CONFIG_INVALID', says: ['GATEHOUSE_CONFIG', missing, 'no such file'] },
      configCase('ca init'),

      // ca issue
      { cmd: 'ca issue', what: '(a) missing --out', args: ['ca', 'issue', '--dir', caDir, '--spiffe-id', ID], status: 2, code: 'GH_CONFIG_INVALID', says: ['--out is required', 'GATEHOUSE_OUT'] },
      { cmd: 'ca issue', what: '(b) --dir does not exist', args: ['ca', 'issue', '--dir', missingDir, '--spiffe-id', ID, '--out', join(dir, 'o1')], status: 1, code: 'GH_CA_MISSING', says: [missingDir, 'check --dir', 'gatehouse ca init'] },
      { cmd: 'ca issue', what: '(b) --csr does not exist', args: ['ca', 'issue', '--dir', caDir, '--spiffe-id', ID, '--out', join(dir, 'o2'), '--csr', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: ['--csr', missing, 'no such file; check the path'] },
      { cmd: 'ca issue', what: '(b) --out in a directory that does not exist', args: ['ca', 'issue', '--dir', caDir, '--spiffe-id', ID, '--out', join(missingDir, 'o')], status: 2, code: 'GH_CONFIG_INVALID', says: ['--out', missingDir, 'does not exist', 'create it'] },
      { cmd: 'ca issue', what: '(d) unreadable CA key', args: ['ca', 'issue', '--dir', caUnreadable, '--spiffe-id', ID, '--out', join(dir, 'o3')], status: 1, code: 'GH_FILE_UNREADABLE', says: [join(caUnreadable, 'issuer-key.pem'), unreadableWhy] },
      { cmd: 'ca issue', what: '(d) CA key holds garbage', args: ['ca', 'issue', '--dir', caGarbage, '--spiffe-id', ID, '--out', join(dir, 'o4')], status: 1, code: 'GH_KEY_INVALID', says: [join(caGarbage, 'issuer-key.pem'), 'not a PEM private key', 'restore it'] },
      configCase('ca issue'),

      // ca token
      { cmd: 'ca token', what: '(a) missing --spiffe-id', args: ['ca', 'token', '--dir', caDir], status: 2, code: 'GH_CONFIG_INVALID', says: ['--spiffe-id is required', 'GATEHOUSE_SPIFFE_ID'] },
      { cmd: 'ca token', what: '(b) --dir does not exist', args: ['ca', 'token', '--dir', missingDir, '--spiffe-id', ID], status: 1, code: 'GH_CA_MISSING', says: [missingDir, 'check --dir'] },
      { cmd: 'ca token', what: '(d) unreadable CA key', args: ['ca', 'token', '--dir', caUnreadable, '--spiffe-id', ID], status: 1, code: 'GH_FILE_UNREADABLE', says: ['issuer-key.pem', unreadableWhy] },
      configCase('ca token'),

      // ca serve
      { cmd: 'ca serve', what: '(a) missing --dir', args: ['ca', 'serve', '--listen', '127.0.0.1:0'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--dir is required'] },
      { cmd: 'ca serve', what: '(b) --dir does not exist', args: ['ca', 'serve', '--dir', missingDir, '--listen', '127.0.0.1:0'], status: 1, code: 'GH_CA_MISSING', says: [missingDir, 'check --dir'] },
      { cmd: 'ca serve', what: '(b) --jwks-file does not exist', args: ['ca', 'serve', '--dir', caDir, '--listen', '127.0.0.1:0', '--jwks-file', missing, '--issuer', 'https://kubernetes.default.svc'], status: 1, code: 'GH_FILE_UNREADABLE', says: ['--jwks-file', missing, 'no such file'] },
      { cmd: 'ca serve', what: '(c) --listen port in use', args: ['ca', 'serve', '--dir', caDir, '--listen', busy], status: 1, code: 'GH_LISTEN_FAILED', says: [`--listen ${busy}`, 'address already in use', 'choose another port with --listen'] },
      { cmd: 'ca serve', what: '(d) unreadable CA key', args: ['ca', 'serve', '--dir', caUnreadable, '--listen', '127.0.0.1:0'], status: 1, code: 'GH_FILE_UNREADABLE', says: ['issuer-key.pem', unreadableWhy] },
      configCase('ca serve'),

      // ca rotate-root
      { cmd: 'ca rotate-root', what: '(a) missing --step', args: ['ca', 'rotate-root', '--dir', caDir], status: 2, code: 'GH_CONFIG_INVALID', says: ['--step is required', 'prepare'] },
      { cmd: 'ca rotate-root', what: '(b) --dir does not exist', args: ['ca', 'rotate-root', '--dir', missingDir, '--step', 'prepare'], status: 1, code: 'GH_CA_MISSING', says: [missingDir, 'check --dir'] },
      { cmd: 'ca rotate-root', what: '(d) CA key holds garbage', args: ['ca', 'rotate-root', '--dir', caGarbage, '--step', 'prepare'], status: 1, code: 'GH_KEY_INVALID', says: ['issuer-key.pem', 'not a PEM private key'] },
      configCase('ca rotate-root'),
      // ca issuer renew
      { cmd: 'ca issuer renew', what: '(a) missing --dir', args: ['ca', 'issuer', 'renew'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--dir is required', 'GATEHOUSE_DIR'] },
      { cmd: 'ca issuer renew', what: '(b) --dir does not exist', args: ['ca', 'issuer', 'renew', '--dir', missingDir], status: 1, code: 'GH_CA_MISSING', says: [missingDir, 'check --dir'] },
      { cmd: 'ca issuer renew', what: '(b) no root key (run where the CA is served)', args: ['ca', 'issuer', 'renew', '--dir', caNoRootKey], status: 1, code: 'GH_CA_MISSING', says: [join(caNoRootKey, 'root-key.pem'), 'needs the root key', 'run this where the root key is kept'] },
      { cmd: 'ca issuer renew', what: '(c) the new issuer would outlive the root', args: ['ca', 'issuer', 'renew', '--dir', caDir, '--ttl', '100000d'], status: 1, code: 'GH_ROTATION_REFUSED', says: ['would outlive the root', 'rotate the root first', '--ttl'] },
      { cmd: 'ca issuer renew', what: '(d) CA key holds garbage', args: ['ca', 'issuer', 'renew', '--dir', caGarbage], status: 1, code: 'GH_KEY_INVALID', says: [join(caGarbage, 'issuer-key.pem'), 'not a PEM private key'] },
      configCase('ca issuer renew'),
      { cmd: 'ca quarantine add', what: '(a) missing --reason', args: ['ca', 'quarantine', 'add', '--dir', caDir, '--spiffe-id', ID], status: 2, code: 'GH_CONFIG_INVALID', says: ['--reason is required'] },
      { cmd: 'ca quarantine add', what: '(b) --dir does not exist', args: ['ca', 'quarantine', 'add', '--dir', missingDir, '--spiffe-id', ID, '--reason', 'r'], status: 1, code: 'GH_CA_MISSING', says: [missingDir, 'check --dir'] },
      { cmd: 'ca quarantine add', what: '(c) not a SPIFFE ID', args: ['ca', 'quarantine', 'add', '--dir', caDir, '--spiffe-id', 'rogue', '--reason', 'r'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--spiffe-id', 'expected a SPIFFE ID or pattern'] },
      { cmd: 'ca quarantine remove', what: '(a) not in the list', args: ['ca', 'quarantine', 'remove', '--dir', caDir, '--spiffe-id', ID], status: 2, code: 'GH_CONFIG_INVALID', says: ['is not in', 'ca quarantine list'] },
      { cmd: 'ca quarantine list', what: '(b) --dir does not exist', args: ['ca', 'quarantine', 'list', '--dir', missingDir], status: 1, code: 'GH_CA_MISSING', says: [missingDir] },
      configCase('ca quarantine list', ['--dir', caDir]),

      // proxy
      { cmd: 'proxy', what: '(a) missing --policy and --trust-bundle', args: ['proxy', '--cert', w.cert, '--key', w.key], status: 2, code: 'GH_CONFIG_INVALID', says: ['--policy is required', '--trust-bundle is required'] },
      { cmd: 'proxy', what: '(a) no identity source', args: ['proxy', '--policy', policy, '--trust-bundle', pki.bundleFile], status: 2, code: 'GH_CONFIG_INVALID', says: ['identity source', '--cert FILE --key FILE', '--ca-url'] },
      { cmd: 'proxy', what: '(b) --policy does not exist', args: [...proxyArgs, '--policy', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--policy ${missing}`, 'no such file'] },
      { cmd: 'proxy', what: '(b) --trust-bundle does not exist', args: [...proxyArgs, '--trust-bundle', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--trust-bundle ${missing}`, 'no such file'] },
      { cmd: 'proxy', what: '(b) --cert does not exist', args: [...proxyArgs, '--cert', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--cert ${missing}`, 'no such file'] },
      { cmd: 'proxy', what: '(b) --trust-bundle is not PEM', args: [...proxyArgs, '--trust-bundle', garbage], status: 1, code: 'GH_BUNDLE_INVALID', says: [`--trust-bundle ${garbage}`, 'holds no certificates', 'bundle.pem'] },
      { cmd: 'proxy', what: '(c) --inbound port in use', args: [...proxyArgs, '--inbound', busy], status: 1, code: 'GH_LISTEN_FAILED', says: [`--inbound ${busy}`, 'address already in use', 'with --inbound'] },
      { cmd: 'proxy', what: '(c) --outbound port in use', args: [...proxyArgs, '--outbound', busy], status: 1, code: 'GH_LISTEN_FAILED', says: [`--outbound ${busy}`, 'address already in use', 'with --outbound'] },
      { cmd: 'proxy', what: '(c) --admin port in use', args: [...proxyArgs, '--admin', busy], status: 1, code: 'GH_LISTEN_FAILED', says: [`--admin ${busy}`, 'address already in use', 'with --admin'] },
      { cmd: 'proxy', what: '(c) two listeners on one port', args: [...proxyArgs, '--inbound', '127.0.0.1:15999', '--admin', '127.0.0.1:15999'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--admin 127.0.0.1:15999', '--inbound', 'own port'] },
      { cmd: 'proxy', what: '(d) unreadable --key', args: [...proxyArgs, '--key', unreadableKey], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--key ${unreadableKey}`, unreadableWhy] },
      { cmd: 'proxy', what: '(d) --key holds garbage', args: [...proxyArgs, '--key', garbage], status: 1, code: 'GH_KEY_INVALID', says: [`--key ${garbage}`, 'not an unencrypted PEM private key', 'give the key file'] },
      { cmd: 'proxy', what: '(d) --key of another certificate', args: [...proxyArgs, '--key', join(caDir, 'issuer-key.pem')], status: 1, code: 'GH_KEY_INVALID', says: ['--key', `not the key of the certificate in --cert ${w.cert}`] },
      { cmd: 'proxy', what: '(e) bad YAML in --routes', args: [...proxyArgs, '--routes', badYaml], status: 1, code: 'GH_ROUTES_INVALID', says: [`${badYaml}:1:`, 'YAML syntax', 'fix the routes file'] },
      configCase('proxy'),

      // audit verify
      { cmd: 'audit verify', what: '(a) missing --trust-bundle', args: ['audit', 'verify', emptyLog], status: 2, code: 'GH_CONFIG_INVALID', says: ['--trust-bundle is required'] },
      { cmd: 'audit verify', what: '(a) no log FILE', args: ['audit', 'verify', '--trust-bundle', pki.bundleFile], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs at least one decision-log FILE'] },
      { cmd: 'audit verify', what: '(b) log file does not exist', args: ['audit', 'verify', '--trust-bundle', pki.bundleFile, missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`decision-log file ${missing}`, 'no such file'] },
      { cmd: 'audit verify', what: '(b) --trust-bundle does not exist', args: ['audit', 'verify', '--trust-bundle', missing, emptyLog], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--trust-bundle ${missing}`, 'no such file'] },
      configCase('audit verify', [emptyLog]),

      // audit query
      { cmd: 'audit query', what: '(a) no log FILE', args: ['audit', 'query'], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs at least one decision-log FILE'] },
      { cmd: 'audit query', what: '(b) log file does not exist', args: ['audit', 'query', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`decision-log file ${missing}`, 'no such file'] },
      { cmd: 'audit query', what: '(e) bad YAML in --policy', args: ['audit', 'query', '--summary', '--policy', badYaml, emptyLog], status: 1, code: 'GH_POLICY_INVALID', says: [`${badYaml}:1:`, 'YAML syntax', 'fix the policy file', 'gatehouse policy check'] },
      configCase('audit query', [emptyLog]),
      { cmd: 'audit query', what: '(b) --unused-rules does not exist', args: ['audit', 'query', emptyLog, '--unused-rules', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--unused-rules ${missing}`, 'no such file'] },

      // policy check (bad YAML is its normal report, on stdout: see below)
      { cmd: 'policy check', what: '(a) no policy FILE', args: ['policy', 'check'], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs the policy FILE'] },
      { cmd: 'policy check', what: '(b) policy file does not exist', args: ['policy', 'check', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`policy file ${missing}`, 'no such file'] },
      configCase('policy check', [policy]),

      // policy explain
      { cmd: 'policy explain', what: '(a) missing --caller', args: ['policy', 'explain', policy, '--path', '/'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--caller is required'] },
      { cmd: 'policy explain', what: '(b) policy file does not exist', args: ['policy', 'explain', missing, '--caller', ID, '--path', '/'], status: 1, code: 'GH_FILE_UNREADABLE', says: [`policy file ${missing}`, 'no such file'] },
      { cmd: 'policy explain', what: '(e) bad YAML in the policy', args: ['policy', 'explain', badYaml, '--caller', ID, '--path', '/'], status: 1, code: 'GH_POLICY_INVALID', says: [`${badYaml}:1:`, 'YAML syntax', 'gatehouse policy check'] },
      configCase('policy explain', [policy]),

      // policy test
      { cmd: 'policy test', what: '(a) missing --cases', args: ['policy', 'test', policy], status: 2, code: 'GH_CONFIG_INVALID', says: ['--cases is required'] },
      { cmd: 'policy test', what: '(b) --cases does not exist', args: ['policy', 'test', policy, '--cases', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--cases ${missing}`, 'no such file'] },
      { cmd: 'policy test', what: '(e) bad YAML in --cases', args: ['policy', 'test', policy, '--cases', badYaml], status: 2, code: 'GH_CONFIG_INVALID', says: [`--cases ${badYaml}:1:`, 'YAML syntax'] },
      { cmd: 'policy test', what: '(e) bad YAML in the policy', args: ['policy', 'test', badYaml, '--cases', badYaml], status: 1, code: 'GH_POLICY_INVALID', says: [`${badYaml}:1:`, 'fix the policy file'] },
      configCase('policy test', [policy]),

      // policy suggest, replay, diff; audit graph (least privilege from evidence)
      { cmd: 'policy suggest', what: '(a) missing --callee', args: ['policy', 'suggest', emptyLog, '--trust-bundle', pki.bundleFile], status: 2, code: 'GH_CONFIG_INVALID', says: ['--callee is required'] },
      { cmd: 'policy suggest', what: '(a) no log FILE', args: ['policy', 'suggest', '--callee', ID, '--trust-bundle', pki.bundleFile], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs at least one decision-log FILE'] },
      { cmd: 'policy suggest', what: '(a) --callee not a SPIFFE ID', args: ['policy', 'suggest', emptyLog, '--callee', 'payments', '--trust-bundle', pki.bundleFile], status: 2, code: 'GH_CONFIG_INVALID', says: ['--callee: expected the SPIFFE ID'] },
      { cmd: 'policy suggest', what: '(a) neither --trust-bundle nor --unverified', args: ['policy', 'suggest', emptyLog, '--callee', ID], status: 2, code: 'GH_CONFIG_INVALID', says: ['--trust-bundle is required', '--unverified'] },
      { cmd: 'policy suggest', what: '(b) --trust-bundle does not exist', args: ['policy', 'suggest', emptyLog, '--callee', ID, '--trust-bundle', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--trust-bundle ${missing}`, 'no such file'] },
      configCase('policy suggest', [emptyLog, '--callee', ID]),
      { cmd: 'policy replay', what: '(a) no policy FILE', args: ['policy', 'replay'], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs the policy FILE and decision-log files'] },
      { cmd: 'policy replay', what: '(a) no log FILE', args: ['policy', 'replay', policy, '--trust-bundle', pki.bundleFile], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs at least one decision-log FILE'] },
      { cmd: 'policy replay', what: '(b) log file does not exist', args: ['policy', 'replay', policy, missing, '--unverified'], status: 1, code: 'GH_FILE_UNREADABLE', says: [`decision-log file ${missing}`, 'no such file'] },
      { cmd: 'policy replay', what: '(e) bad YAML in the policy', args: ['policy', 'replay', badYaml, emptyLog, '--unverified'], status: 1, code: 'GH_POLICY_INVALID', says: [`${badYaml}:1:`, 'fix the policy file'] },
      configCase('policy replay', [policy, emptyLog]),
      { cmd: 'policy diff', what: '(a) no NEW policy', args: ['policy', 'diff', policy], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs the OLD and NEW policy files'] },
      { cmd: 'policy diff', what: '(b) NEW policy does not exist', args: ['policy', 'diff', policy, missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`NEW policy file ${missing}`, 'no such file'] },
      { cmd: 'policy diff', what: '(a) a log without --replay', args: ['policy', 'diff', policy, policy, emptyLog], status: 2, code: 'GH_CONFIG_INVALID', says: ['unexpected argument', 'after --replay'] },
      configCase('policy diff', [policy, policy]),
      { cmd: 'audit graph', what: '(a) no log FILE', args: ['audit', 'graph'], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs at least one decision-log FILE'] },
      { cmd: 'audit graph', what: '(b) log file does not exist', args: ['audit', 'graph', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`decision-log file ${missing}`, 'no such file'] },
      configCase('audit graph', [emptyLog]),

      // inject (offline)
      { cmd: 'inject', what: '(a) a bad flag value', args: ['inject', '--file', missing, '--ca-url', 'http://plain'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--ca-url must be an https:// URL'] },
      { cmd: 'inject', what: '(b) --file does not exist', args: ['inject', '--file', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--file ${missing}`, 'no such file'] },
      { cmd: 'inject', what: '(b) manifest does not exist', args: ['inject', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`manifest ${missing}`, 'no such file'] },
      { cmd: 'inject', what: '(e) bad YAML in the manifest', args: ['inject', '--file', badYaml], status: 1, code: 'GH_INJECT_INVALID', says: [`${badYaml}:1:`, 'fix the manifest'] },
      configCase('inject', [missing]),

      // inject serve
      { cmd: 'inject serve', what: '(a) missing --cert and --key', args: ['inject', 'serve', '--listen', '127.0.0.1:0'], status: 2, code: 'GH_CONFIG_INVALID', says: ['a serving certificate is required: --cert and --key (files), or --k8s-token-file and --trust-bundle'] },
      { cmd: 'inject serve', what: '(b) --cert does not exist', args: [...injectServeArgs, '--cert', missing], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--cert ${missing}`, 'no such file'] },
      { cmd: 'inject serve', what: '(c) --listen port in use', args: [...injectServeArgs, '--listen', busy], status: 1, code: 'GH_LISTEN_FAILED', says: [`--listen ${busy}`, 'address already in use', 'choose another port'] },
      { cmd: 'inject serve', what: '(d) unreadable --key', args: [...injectServeArgs, '--key', unreadableKey], status: 1, code: 'GH_FILE_UNREADABLE', says: [`--key ${unreadableKey}`, unreadableWhy] },
      { cmd: 'inject serve', what: '(d) --key holds garbage', args: [...injectServeArgs, '--key', garbage], status: 1, code: 'GH_KEY_INVALID', says: [`--key ${garbage}`, 'not an unencrypted PEM private key'] },
      { cmd: 'inject serve', what: '(d) --cert holds garbage', args: [...injectServeArgs, '--cert', garbage], status: 1, code: 'GH_CERT_INVALID', says: [`--cert ${garbage}`, 'holds no PEM certificate'] },
      configCase('inject serve'),

      // capture iptables (--dry-run: nothing is applied even if the checks were wrong)
      { cmd: 'capture iptables', what: '(a) a bad flag value', args: ['capture', 'iptables', '--dry-run', '--inbound-port', 'x'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--inbound-port', 'expected an integer'] },
      configCase('capture iptables', ['--dry-run']),

      // demo
      { cmd: 'demo', what: '(a) a bad flag value', args: ['demo', '--leaf-ttl', '1s'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--leaf-ttl', 'at least 2000ms'] },
      { cmd: 'demo', what: '(b) --dir is a file', args: ['demo', '--dir', garbage], status: 2, code: 'GH_CONFIG_INVALID', says: [`--dir ${garbage}`, 'not a directory', 'give a directory'] },
      configCase('demo'),

      // docs cli
      { cmd: 'docs cli', what: 'unknown flag', args: ['docs', 'cli', '--bogus'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--bogus: unknown flag'] },
      configCase('docs cli'),
      // version, completion, help
      { cmd: 'version', what: 'an output format that does not exist', args: ['version', '-o', 'xml'], status: 2, code: 'GH_CONFIG_INVALID', says: ['--output', 'expected one of table, json, yaml', '"xml"'] },
      configCase('version'),
      { cmd: 'completion', what: 'a shell it has no script for', args: ['completion', 'powershell'], status: 2, code: 'GH_CONFIG_INVALID', says: ['needs the shell: bash, zsh or fish', '"powershell"'] },
      configCase('completion', ['bash']),
      { cmd: 'help', what: 'help for a command that does not exist', args: ['help', 'polcy', 'check'], status: 2, code: 'GH_USAGE', says: ['unknown command "polcy check"', 'did you mean "policy check"'] },
      configCase('help')
    ]
  }
  return { dir, badYaml, file, cases }
}

/** Runs `jobs` at most `width` at a time (node start-up dominates; 2 cores). */
async function pool<T> (jobs: Array<() => Promise<T>>, width: number): Promise<T[]> {
  const out: T[] = []
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < jobs.length) { const i = next++; out[i] = await jobs[i]!() }
  }))
  return out
}

const STACK = /\n\s+at /
/**
 * Runs the cases of the table that `part` selects (and some once more with --debug), each a subtest
 * of `t`; returns the whole table.
 */
export async function runCases (t: Test, fx: NewcomerFixture, part: (c: Case) => boolean): Promise<Case[]> {
  // A port another process holds (127.0.0.1, random).
  const busy: Server = createServer()
  await new Promise<void>(resolve => busy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { busy.close() })
  const port = (busy.address() as AddressInfo).port

  // Any child still running when the test ends (a server that did not exit on a failed start) is killed.
  const stop = new AbortController()
  t.teardown(() => { stop.abort() })
  // Node start-up (type stripping, compiling the import graph) is most of each run: a compile cache
  // shared by the runs, warmed by the first, roughly halves it.
  const cache = join(fx.dir, 'node-compile-cache')
  const run = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> =>
    await gatehouseAsync(args, { env: { GATEHOUSE_DEBUG: '0', GATEHOUSE_CONFIG: '', NODE_COMPILE_CACHE: cache, ...env }, timeoutMs: 20_000, signal: stop.signal })

  const table = fx.cases(port)
  const all = table.filter(part)
  // Some once more with --debug (a usage error, a file error, a listen error): the same line, then the stack.
  const debugged = [table[0]!, ...['(d) unreadable --key', '(c) --inbound port in use'].map(w => table.find(c => c.cmd === 'proxy' && c.what === w)!)].filter(part)
  const [first, ...rest] = [
    ...all.map(c => async () => await run(c.args, c.env)),
    ...debugged.map(c => async () => await run([...c.args, '--debug'], c.env))
  ]
  const results = [await first!(), ...await pool(rest, 3)]

  for (const [i, c] of all.entries()) {
    const r = results[i]!
    t.test(`${c.cmd || '(no command)'}: ${c.what}`, async t => {
      const lines = r.stderr.split('\n')
      if (lines.at(-1) === '') lines.pop()
      t.equal(r.status, c.status, `exit ${c.status}`)
      t.equal(lines.length, 1, `exactly one line on stderr, got:\n${r.stderr}`)
      const prefix = `gatehouse${c.cmd === '' ? '' : ` ${c.cmd}`}: ${c.code}: `
      t.ok(lines[0]?.startsWith(prefix), `starts with "${prefix}": ${lines[0]}`)
      for (const s of c.says) t.match(lines[0], s, `says ${String(s)}`)
      t.notMatch(r.stderr, STACK, 'no stack trace')
      t.equal(r.stdout, '', 'nothing on stdout')
    })
  }
  for (const [j, c] of debugged.entries()) {
    const r = results[all.length + j]!
    t.test(`${c.cmd || '(no command)'} --debug: the same line, then the stack`, async t => {
      t.equal(r.status, c.status)
      t.ok(r.stderr.startsWith(`gatehouse${c.cmd === '' ? '' : ` ${c.cmd}`}: ${c.code}: `), r.stderr.split('\n')[0] ?? '')
      t.match(r.stderr, STACK, 'stack trace shown')
    })
  }
  return table
}
