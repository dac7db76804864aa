import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { pemToDers } from '../../src/x509/certificate.ts'
import { verifyX509Svid, type VerifiedSvid } from '../../src/spiffe/svid.ts'
import { TrustBundle, type SpiffeBundleJson } from '../../src/spiffe/bundle.ts'
import { readCorpusJson } from './corpora.ts'

// Test certificates made by the real `openssl` CLI (OpenSSL 3.0 has no -not_before/-not_after, so
// validity is "now + days"; tests move verifyX509Svid's `now` for expired / not-yet-valid cases).
// Every certificate gets an extension section written as openssl extfile text, so a test states the
// exact extensions of the certificate it needs. One temp dir per Pki, removed in t.teardown.

export type KeySpec = 'ec-p256' | 'ec-p384' | 'ec-p521' | 'rsa-1024' | 'rsa-2048' | 'ed25519'

export interface IssuedCert {
  name: string
  der: Buffer
  pem: string
  certPath: string
  keyPath: string
}

export interface CertOptions {
  /** Lines of an openssl extension section, e.g. from leafExt() / caExt(). */
  ext?: string
  key?: KeySpec
  /** openssl -subj; '/' gives an empty subject. Default /CN=<name>. */
  subject?: string
  days?: number
}

/** Extension lines by name; `null` drops a default line. */
export type ExtLines = Record<string, string | null>

function extText (defaults: ExtLines, overrides: ExtLines): string {
  return Object.entries({ ...defaults, ...overrides })
    .filter((e): e is [string, string] => e[1] !== null)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n')
}

/** A valid X509-SVID leaf profile (X509-SVID 4.1-4.4), with overrides. */
export function leafExt (overrides: ExtLines = {}): string {
  return extText({
    basicConstraints: 'critical,CA:false',
    keyUsage: 'critical,digitalSignature',
    extendedKeyUsage: 'serverAuth,clientAuth',
    subjectAltName: 'URI:spiffe://example.org/workload'
  }, overrides)
}

/** A valid signing certificate profile (X509-SVID 3.2, 4.1, 4.3), with overrides. */
export function caExt (overrides: ExtLines = {}): string {
  return extText({
    basicConstraints: 'critical,CA:true',
    keyUsage: 'critical,keyCertSign,cRLSign',
    subjectAltName: 'URI:spiffe://example.org'
  }, overrides)
}

const KEYGEN: Record<KeySpec, string[]> = {
  'ec-p256': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  'ec-p384': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  'ec-p521': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp521r1'],
  'rsa-1024': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
  'rsa-2048': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  ed25519: ['-algorithm', 'ed25519']
}

export class Pki {
  readonly dir: string

  constructor (dir: string) {
    this.dir = dir
  }

  private openssl (...args: string[]): void {
    try {
      execFileSync('openssl', args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] })
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? ''
      throw new Error(`openssl ${args.join(' ')} failed: ${stderr}`)
    }
  }

  /** Writes key, config (extension section [ext]) and returns the file names for `name`. */
  private prepare (name: string, opts: CertOptions, defaultExt: string): { key: string, cnf: string, cert: string, subject: string, days: string, serial: string } {
    if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`bad certificate name ${name}`)
    const cert = `${name}.pem`
    if (existsSync(join(this.dir, cert))) throw new Error(`certificate ${name} already made`)
    const key = `${name}.key`
    const cnf = `${name}.cnf`
    this.openssl('genpkey', ...KEYGEN[opts.key ?? 'ec-p256'], '-out', key)
    writeFileSync(join(this.dir, cnf), `[req]\ndistinguished_name = dn\n[dn]\n[ext]\n${opts.ext ?? defaultExt}\n`)
    const serial = randomBytes(12)
    serial[0] = serial[0]! & 0x7f | 0x10 // positive, no leading zero
    return { key, cnf, cert, subject: opts.subject ?? `/CN=${name}`, days: String(opts.days ?? 30), serial: `0x${serial.toString('hex')}` }
  }

  private load (name: string, cert: string, key: string): IssuedCert {
    const certPath = join(this.dir, cert)
    const pem = readFileSync(certPath, 'utf8')
    const der = pemToDers(pem)[0]
    if (der === undefined) throw new Error(`openssl wrote no certificate for ${name}`)
    return { name, der, pem, certPath, keyPath: join(this.dir, key) }
  }

  /** A self-signed CA; default profile: EC P-256, CA:true, keyCertSign+cRLSign, URI SAN spiffe://example.org, 10 years. */
  root (name = 'root', opts: CertOptions = {}): IssuedCert {
    const f = this.prepare(name, { days: 3650, ...opts }, caExt())
    this.openssl('req', '-x509', '-new', '-key', f.key, '-subj', f.subject, '-days', f.days, '-set_serial', f.serial,
      '-config', f.cnf, '-extensions', 'ext', '-out', f.cert)
    return this.load(name, f.cert, f.key)
  }

  /** Any certificate signed by `issuer`; extensions default to a valid leaf SVID. */
  issue (name: string, issuer: IssuedCert, opts: CertOptions = {}): IssuedCert {
    const f = this.prepare(name, opts, leafExt())
    const csr = `${name}.csr`
    this.openssl('req', '-new', '-key', f.key, '-subj', f.subject, '-config', f.cnf, '-out', csr)
    this.openssl('x509', '-req', '-in', csr, '-CA', issuer.certPath, '-CAkey', issuer.keyPath, '-set_serial', f.serial,
      '-days', f.days, '-extfile', f.cnf, '-extensions', 'ext', '-out', f.cert)
    return this.load(name, f.cert, f.key)
  }

  /** An intermediate CA signed by `issuer` (default profile: caExt()). */
  intermediate (name: string, issuer: IssuedCert, opts: CertOptions = {}): IssuedCert {
    return this.issue(name, issuer, { ext: caExt(), ...opts })
  }
}

/** A Pki in a fresh temp dir that is removed when the test `t` ends. */
export function createPki (t: { teardown (fn: () => void): void }): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-pki-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return new Pki(dir)
}

// ---------------------------------------------------------------------------------------------
// The X.509-SVID checklist (test/svid-checklist-*.test.ts): the checklist corpus, a PKI to break
// rules with (root, intermediate, a rogue root, another trust domain's root), and the checks.

export interface Requirement { id: string, kind: 'negative' | 'positive' | 'both' | 'info' }
export interface Fixture { file: string, violates: string[], valid: boolean, certs: number, uri_sans: string[] }
export interface Checklist {
  requirements: Requirement[]
  go_spiffe_fixtures: Fixture[]
  go_spiffe_verify_cases: Array<{ name: string, expected_error: string | null, requirement: string | null }>
}

export const SVID_ID = 'spiffe://example.org/workload'
const DAY = 86_400_000
export const inDays = (days: number): Date => new Date(Date.now() + days * DAY)

/**
 * The checklist and a fresh PKI for one test file. `rule` runs a subtest named after the requirement
 * ids it checks and records them in `covered`.
 */
export function svidChecklistBench (t: Test) {
  const checklist = readCorpusJson<Checklist>('x509-svid', 'x509_svid_checklist.json')
  const pki = createPki(t)
  const root = pki.root('root')
  const bundle = TrustBundle.fromPem(root.pem, { defaultTrustDomain: 'example.org' })
  const int = pki.intermediate('int', root)
  /** A second authority for example.org that is not in `bundle`. */
  const rogue = pki.root('rogue')
  const otherRoot = pki.root('root-other', { ext: caExt({ subjectAltName: 'URI:spiffe://other.org' }) })

  /** A leaf signed by `issuer`: a valid SVID profile with the given extension lines changed. */
  function leaf (name: string, issuer: IssuedCert, ext: ExtLines = {}, opts: CertOptions = {}): IssuedCert {
    return pki.issue(name, issuer, { ...opts, ext: leafExt(ext) })
  }

  const ders = (chain: Array<IssuedCert | Buffer>): Buffer[] => chain.map(c => Buffer.isBuffer(c) ? c : c.der)

  function rejects (t: Test, chain: Array<IssuedCert | Buffer>, reason: string, msg: string, b: TrustBundle = bundle, now?: Date): void {
    t.throws(() => verifyX509Svid(ders(chain), b, now), { code: 'GH_SVID_INVALID', reason }, `${msg}: rejected (${reason})`)
  }

  function accepts (t: Test, chain: Array<IssuedCert | Buffer>, id: string, msg: string, b: TrustBundle = bundle, now?: Date): VerifiedSvid | undefined {
    try {
      const v = verifyX509Svid(ders(chain), b, now)
      t.equal(v.id.toString(), id, `${msg}: accepted as ${id}`)
      return v
    } catch (err) {
      t.fail(`${msg}: ${(err as Error).message}`)
      return undefined
    }
  }

  /** A bundle JWK for `c` as it would arrive over the wire (JSON: `undefined` members are absent). */
  const jwk = (c: IssuedCert, extra: Record<string, unknown> = {}): SpiffeBundleJson['keys'][number] =>
    JSON.parse(JSON.stringify({ kty: 'EC', use: 'x509-svid', x5c: [c.der.toString('base64')], ...extra }))

  const covered = new Set<string>()
  function rule (ids: string[], name: string, fn: (t: Test) => void): void {
    for (const id of ids) covered.add(id)
    t.test(`${ids.join(', ')}: ${name}`, async t => { fn(t) })
  }

  return { checklist, pki, root, bundle, int, rogue, otherRoot, leaf, rejects, accepts, jwk, covered, rule }
}
