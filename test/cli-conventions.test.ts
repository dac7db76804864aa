import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse as parseYaml, parseAllDocuments } from 'yaml'
import { gatehouse } from './helpers/run-cli.ts'
import { Pki } from './helpers/mesh.ts'
import { decisionFields, signerFrom } from './helpers/audit-log.ts'
import { DecisionLog } from '../src/audit/record.ts'
import { groups, nextWords, subcommandsOf } from '../src/cli/reference.ts'
import { tempDir } from './helpers/files.ts'

// The CLI follows the conventions of kubectl, istioctl and linkerd (issue 16), run as the real
// executable: --version and `version -o json`; `help <command>`, group help and <command> --help
// showing positional arguments and enum values; -o/--output table|json|yaml on every command that
// prints data (older spellings still accepted); documented exit statuses (policy explain: 3 on
// deny); and shell completion generated from the command table, exercised in a real bash.

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
const TD = 'spiffe://example.org'
const ORDERS = `${TD}/ns/orders/sa/api`
const POLICY = `version: 1
rules:
  - name: orders-read
    from: ["${ORDERS}"]
    methods: [GET]
    paths: ["/v1/**"]
deny:
  - name: no-admin
    from: ["${TD}/**"]
    paths: ["/admin/**"]
`
const POD = (name: string): string => `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: shop}
spec:
  containers: [{name: app, image: app:1}]
`

/** The same data, printed as JSON and as YAML by `args -o json|yaml`. */
function bothFormats (t: Test, args: string[], status: number): unknown {
  const json = gatehouse([...args, '-o', 'json'])
  const yaml = gatehouse([...args, '--output=yaml'])
  t.equal(json.status, status, `${args.slice(0, 2).join(' ')} -o json: exit ${status}${json.stderr === '' ? '' : `: ${json.stderr}`}`)
  t.equal(yaml.status, status, `${args.slice(0, 2).join(' ')} -o yaml: exit ${status}`)
  const data = JSON.parse(json.stdout) as unknown
  t.same(parseYaml(yaml.stdout), data, `${args.slice(0, 2).join(' ')}: yaml and json print the same data`)
  return data
}

t.test('--version, version, version -o json print the version in package.json', async t => {
  for (const args of [['--version'], ['version']]) {
    const r = gatehouse(args)
    t.equal(r.status, 0)
    t.match(r.stdout, new RegExp(`^gatehouse ${VERSION.replace(/\./g, '\\.')} \\(node 24\\.`), `gatehouse ${args.join(' ')}`)
  }
  t.match(JSON.parse(gatehouse(['version', '-o', 'json']).stdout), { version: VERSION, node: process.versions.node })
  t.equal(gatehouse(['version', '-o', 'xml']).status, 2, 'an output format that does not exist is a usage error')
})

t.test('help: every command, a group, a command; positional arguments and enum values shown', async t => {
  const all = gatehouse(['help'])
  t.equal(all.status, 0)
  t.match(all.stdout, /usage: gatehouse <command>/)
  for (const c of ['ca serve', 'policy explain', 'completion', 'version']) t.match(all.stdout, `\n  ${c} `, `lists ${c}`)

  const explain = gatehouse(['help', 'policy', 'explain'])
  t.equal(explain.status, 0)
  t.equal(explain.stdout, gatehouse(['policy', 'explain', '--help']).stdout, 'help <command> is <command> --help')
  t.match(explain.stdout, /Usage:\n {2}gatehouse policy explain FILE \[flags\]\n/, 'the positional FILE in the usage line')
  t.match(explain.stdout, /Arguments:\n {2}FILE +the policy file/, 'and explained')
  t.match(explain.stdout, /-o, --output table\|json\|yaml +output format/, 'an enum flag shows its values')
  t.match(explain.stdout, /Exit status: 0 allow, 3 deny/, 'and the exit statuses')

  const serve = gatehouse(['help', 'ca', 'serve'])
  t.equal(serve.status, 0)
  t.match(serve.stdout, /^gatehouse ca serve: run the CA's HTTPS API/)
  t.match(serve.stdout, /--listen host:port/)
  t.match(gatehouse(['audit', 'query', '--help']).stdout, /gatehouse audit query LOG… \[flags\][^]*--decision allow\|deny/, 'LOG… and --decision\'s values')
  t.match(gatehouse(['ca', 'init', '-h']).stdout, /--key-type ec-p256\|ec-p384\|rsa-2048/, '-h is --help')

  for (const args of [['ca', '--help'], ['ca'], ['help', 'ca']]) {
    const group = gatehouse(args)
    t.equal(group.status, 0, `gatehouse ${args.join(' ')}: exit 0`)
    t.match(group.stdout, /usage: gatehouse ca <command>[^]*\n {2}ca init +create a CA[^]*\n {2}ca rotate-root /, `gatehouse ${args.join(' ')}: the group's commands`)
  }
  for (const g of groups().filter(g => g.includes(' '))) {
    const nested = gatehouse([...g.split(' '), '--help'])
    t.equal(nested.status, 0, `a group within a group: gatehouse ${g} --help`)
    for (const c of subcommandsOf(g)) t.match(nested.stdout, `\n  ${c} `, `lists ${c}`)
  }
  t.match(gatehouse(['inject', '--help']).stdout, /Subcommands:\n {2}inject serve +the mutating admission webhook/, 'a command that is also a group lists its subcommands')

  const bad = gatehouse(['help', 'polcy', 'check'])
  t.equal(bad.status, 2)
  t.match(bad.stderr, /^gatehouse help: GH_USAGE: unknown command "polcy check" \(did you mean "policy check"\?\)/)
})

t.test('policy explain, check and test: -o table|json|yaml, and exit statuses scripts can test', async t => {
  const dir = tempDir(t)
  const policy = join(dir, 'policy.yaml')
  writeFileSync(policy, POLICY)
  const explain = (path: string): string[] => ['policy', 'explain', policy, '--caller', ORDERS, '--path', path]

  const allow = gatehouse(explain('/v1/x'))
  t.equal(allow.status, 0, 'allow: exit 0')
  t.match(allow.stdout, /^ALLOW by rule "orders-read"/, 'table is the default')
  const deny = gatehouse(explain('/admin/x'))
  t.equal(deny.status, 3, 'deny: exit 3, so `if gatehouse policy explain ...` tests "allowed"')
  t.match(deny.stdout, /^DENY by rule "no-admin"/)
  t.equal(gatehouse([...explain('/a%2Fb'), '-o', 'table']).status, 3, 'refused before the policy (400): exit 3')
  t.equal(gatehouse(['policy', 'explain', policy, '--path', '/']).status, 2, 'a usage error stays 2')

  t.match(bothFormats(t, explain('/admin/x'), 3), {
    decision: 'deny', rule: 'no-admin', reason: 'deny-rule', policy: { mode: 'enforce' }, normalizedPath: '/admin/x',
    rules: [{ kind: 'deny', name: 'no-admin', matches: true, wrong: [] }, { kind: 'allow', name: 'orders-read', matches: false, wrong: ['path'] }]
  }, 'explain: the decision and every rule, as data')
  t.match(bothFormats(t, ['policy', 'check', policy], 0), { valid: true, allowRules: 1, denyRules: 1, mode: 'enforce' })
  const broken = join(dir, 'broken.yaml')
  writeFileSync(broken, 'version: 2\n')
  t.match(bothFormats(t, ['policy', 'check', broken], 1), { valid: false, problems: [/broken\.yaml:1:/] }, 'check: the problems, as data, exit 1')

  const cases = join(dir, 'cases.yaml')
  writeFileSync(cases, `- {caller: "${ORDERS}", path: /v1/x, expect: allow}\n- {caller: "${ORDERS}", path: /admin, expect: allow}\n`)
  t.match(bothFormats(t, ['policy', 'test', policy, '--cases', cases], 1), {
    cases: 2, passed: 1, failures: [{ at: `${cases}:2:3`, path: '/admin', expected: 'allow', got: 'deny', rule: 'no-admin' }]
  }, 'test: the failing cases, as data')
})

t.test('audit verify and audit query: -o json|yaml, and --format still works', async t => {
  const dir = tempDir(t)
  const pki = new Pki(dir)
  const svid = pki.issue('/ns/payments/sa/payments', 'payments')
  const callee = `${TD}/ns/payments/sa/payments`
  const file = join(dir, 'decisions.log')
  const log = new DecisionLog({ stdout: false, file, checkpointEvery: 2, signer: () => signerFrom(svid, callee) })
  for (let i = 0; i < 4; i++) log.write(decisionFields(`r${i}`, ORDERS, callee, i === 3 ? { decision: 'deny', rule: null, reason: 'no-matching-rule', status: 403 } : {}))
  await log.close()

  const verify = ['audit', 'verify', file, '--trust-bundle', pki.bundleFile]
  t.match(bothFormats(t, verify, 0), { verdict: 'VERIFIED', exitCode: 0 }, 'verify: the report as data')
  t.match(gatehouse(verify).stdout, /^VERIFIED: \d+ decision-log lines in 1 chain/, 'table (the old text) is the default')
  t.match(gatehouse([...verify, '--format', 'text']).stdout, /^VERIFIED: /, '--format text still works')
  t.match(JSON.parse(gatehouse([...verify, '--format', 'json']).stdout), { verdict: 'VERIFIED' }, '--format json still works')

  const summary = bothFormats(t, ['audit', 'query', file, '--summary'], 0)
  t.match(summary, { scanned: 4, matched: 4, calls: [{ caller: ORDERS, callee, count: 4 }], denials: [{ caller: ORDERS, count: 1 }] }, 'query --summary as data')
  const lines = gatehouse(['audit', 'query', file, '--decision', 'deny', '-o', 'json'])
  t.equal(lines.status, 0)
  t.match(lines.stdout.trim().split('\n').map(l => JSON.parse(l) as unknown), [{ requestId: 'r3', decision: 'deny' }], 'json: one object per line (for jq), as before')
  const yamlDocs = parseAllDocuments(gatehouse(['audit', 'query', file, '-o', 'yaml']).stdout).map(d => d.toJS() as unknown)
  t.match(yamlDocs, [{ requestId: 'r0' }, { requestId: 'r1' }, { requestId: 'r2' }, { requestId: 'r3' }], 'yaml: one document per line')
  t.match(gatehouse(['audit', 'query', file, '--summary', '--format', 'json']).stdout, /^\{\n {2}"scanned": 4/, '--format json still works')
})

t.test('inject: yaml by default (for kubectl apply -f), -o json the same objects', async t => {
  const dir = tempDir(t)
  const one = join(dir, 'pod.yaml')
  const two = join(dir, 'pods.yaml')
  writeFileSync(one, POD('a'))
  writeFileSync(two, `${POD('a')}---\n${POD('b')}`)
  const yaml = gatehouse(['inject', '-f', two])
  t.equal(yaml.status, 0, yaml.stderr)
  const json = gatehouse(['inject', two, '-o', 'json'])
  t.equal(json.status, 0, json.stderr)
  const list = JSON.parse(json.stdout) as { kind: string, items: unknown[] }
  t.match(list, { apiVersion: 'v1', kind: 'List' }, 'several objects: a List, as kubectl prints them')
  t.same(list.items, parseAllDocuments(yaml.stdout).map(d => d.toJS() as unknown), 'the same objects as the YAML')
  t.match(JSON.parse(gatehouse(['inject', '-f', one, '--output', 'json']).stdout), { kind: 'Pod', metadata: { name: 'a' } }, 'one object: printed as itself')
})

t.test('completion bash: subcommands, flags and enum values, in a real bash', async t => {
  const script = gatehouse(['completion', 'bash'])
  t.equal(script.status, 0, script.stderr)
  const dir = tempDir(t)
  const file = join(dir, 'gatehouse.bash')
  writeFileSync(file, script.stdout)
  /** COMPREPLY for the words typed so far (the last is the word being completed). */
  const complete = (...words: string[]): string[] => {
    const r = spawnSync('bash', ['-c', 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _gatehouse; printf "%s\\n" "${COMPREPLY[@]}"', '_', file, 'gatehouse', ...words], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`bash: ${r.stderr}`)
    return r.stdout.split('\n').filter(w => w !== '')
  }
  t.same(complete('p'), ['proxy', 'policy'], 'first words')
  t.ok(complete('').includes('completion') && complete('-').includes('--version'), 'every command, and --version')
  t.same(complete('ca', ''), nextWords('ca'), 'a group\'s subcommands')
  t.ok(nextWords('ca').includes('init') && nextWords('ca').includes('rotate-root'))
  for (const g of groups().filter(g => g.includes(' '))) t.same(complete(...g.split(' '), ''), nextWords(g), `a group within a group: ${g}`)
  t.same(complete('inject', 's'), ['serve'])
  t.same(complete('ca', 'init', '--key-type', ''), ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'], 'an enum flag\'s values')
  t.same(complete('policy', 'explain', 'p.yaml', '-o', ''), ['table', 'json', 'yaml'], '-o\'s values')
  t.same(complete('audit', 'query', '--de'), ['--decision', '--debug'], 'a command\'s flags')
  t.same(complete('audit', 'query', '--decision', ''), ['allow', 'deny'])
  t.same(complete('inject', 'serve', '--ce'), ['--cert', '--cert-warn-before'], 'inject serve\'s flags, not inject\'s')
  t.same(complete('ca', 'init', '--dir', ''), [], 'a value that is not an enum: left to file-name completion')
  t.same(complete('completion', ''), ['bash', 'zsh', 'fish'], 'a positional that is one of a few words')
  t.same(complete('help', 'ca', 'r'), ['rotate-root'], 'help completes commands')
  t.match(script.stdout, /complete -o default -F _gatehouse gatehouse\n$/, 'file names where nothing else fits')
})

t.test('completion zsh and fish: scripts that parse (where the shell is installed)', async t => {
  for (const [shell, check] of [['zsh', ['-n']], ['fish', ['--no-config', '-n']]] as const) {
    const script = gatehouse(['completion', shell])
    t.equal(script.status, 0, script.stderr)
    t.match(script.stdout, shell === 'zsh' ? /bashcompinit[^]*complete -o default -F _gatehouse gatehouse/ : /complete -c gatehouse -n '__gatehouse_in ca init' -l key-type -x -a 'ec-p256 /, `a ${shell} script`)
    if (spawnSync(shell, ['--version']).error !== undefined) { t.comment(`${shell} is not installed here: its script is not parse-checked`); continue }
    const file = join(tempDir(t), `gatehouse.${shell}`)
    writeFileSync(file, script.stdout)
    const r = spawnSync(shell, [...check, file], { encoding: 'utf8' })
    t.equal(r.status, 0, `${shell} ${check.join(' ')}: ${r.stderr}`)
  }
  const bad = gatehouse(['completion', 'powershell'])
  t.equal(bad.status, 2)
  t.match(bad.stderr, /needs the shell: bash, zsh or fish/)
})
