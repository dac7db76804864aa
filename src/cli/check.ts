import { closeSync, fstatSync, openSync, readFileSync, statSync } from 'node:fs'
import { createServer } from 'node:net'
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { BundleInvalidError, CertInvalidError, ConfigInvalidError, GatehouseError, KeyInvalidError, ListenError, fileUnreadable } from '../errors.ts'
import { pemToDers } from '../x509/certificate.ts'
import { TrustBundle } from '../spiffe/bundle.ts'
import { parseDuration } from '../config.ts'

// Checks of what the command line names, done before a command starts anything, so a mistake is
// reported as one line naming the flag (not as a raw ENOENT or EADDRINUSE after a screen of logs).

/** The file's text; an unreadable file is a GH_FILE_UNREADABLE naming `label` (a flag, or e.g. "policy file"). */
export function readArg (label: string, file: string): string {
  try { return readFileSync(file, 'utf8') } catch (err) { throw fileUnreadable(label, file, err) }
}

/** Throws GH_FILE_UNREADABLE unless `file` can be opened for reading and is not a directory (without reading it: logs may be large). */
export function checkReadable (label: string, file: string): void {
  let fd: number | undefined
  try {
    fd = openSync(file, 'r')
    if (fstatSync(fd).isDirectory()) throw Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${file}'`), { code: 'EISDIR' })
  } catch (err) {
    throw fileUnreadable(label, file, err)
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** Throws unless `dir` is a directory or does not exist yet (it will be created). */
export function checkDirArg (label: string, dir: string): void {
  let isDir: boolean
  try { isDir = statSync(dir).isDirectory() } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw fileUnreadable(label, dir, err)
  }
  if (!isDir) throw new ConfigInvalidError([`${label} ${dir}: is a file, not a directory; give a directory (it is created if missing)`])
}

export function readKeyArg (label: string, file: string): KeyObject {
  const pem = readArg(label, file)
  try { return createPrivateKey(pem) } catch (err) {
    throw new KeyInvalidError(`${label} ${file}: not an unencrypted PEM private key; give the key file (PEM) issued with the certificate`, { cause: err })
  }
}

export function readCertArg (label: string, file: string): X509Certificate {
  const ders = (() => { try { return pemToDers(readArg(label, file)) } catch (err) { if (err instanceof GatehouseError) throw err; return [] } })()
  const first = ders[0]
  const cert = first === undefined ? undefined : (() => { try { return new X509Certificate(first) } catch { return undefined } })()
  if (cert === undefined) throw new CertInvalidError(`${label} ${file}: holds no PEM certificate; give the certificate chain file (-----BEGIN CERTIFICATE-----), e.g. PREFIX.pem from 'gatehouse ca issue'`)
  return cert
}

/** Both files readable and parseable, and the key is the certificate's. */
export function checkKeyPair (certLabel: string, certFile: string, keyLabel: string, keyFile: string): X509Certificate {
  const cert = readCertArg(certLabel, certFile)
  const key = readKeyArg(keyLabel, keyFile)
  if (!cert.checkPrivateKey(key)) throw new KeyInvalidError(`${keyLabel} ${keyFile}: not the key of the certificate in ${certLabel} ${certFile}; give the key issued with that certificate`)
  return cert
}

/** Reads and parses a PEM trust bundle named by `label`. */
export function readBundleArg (label: string, file: string, defaultTrustDomain?: string): TrustBundle {
  const pem = readArg(label, file)
  try {
    return TrustBundle.fromPem(pem, { ...(defaultTrustDomain === undefined ? {} : { defaultTrustDomain }), source: `${label} ${file}` })
  } catch (err) {
    if (!(err instanceof BundleInvalidError)) throw err
    throw new BundleInvalidError(`${err.message}; give the PEM trust bundle of your CA (DIR/bundle.pem from 'gatehouse ca init')`)
  }
}

type HostPort = { host: string, port: number }
const show = (hp: HostPort): string => hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`

/** A listener's error, as one line naming the flag it came from; anything else is returned unchanged. */
export function listenFailure (flag: string, hp: HostPort, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  const where = `${flag} ${show(hp)}`
  switch (code) {
    case 'EADDRINUSE': return new ListenError(`${where}: address already in use (another process is listening there); stop it, or choose another port with ${flag}`, { cause: err })
    case 'EACCES': return new ListenError(`${where}: permission denied (ports below 1024 need privileges); choose a port above 1023 with ${flag}`, { cause: err })
    case 'EADDRNOTAVAIL': return new ListenError(`${where}: ${hp.host} is not an address of this machine; use 0.0.0.0, 127.0.0.1 or one of its addresses`, { cause: err })
    case 'ENOTFOUND': case 'EAI_AGAIN': return new ListenError(`${where}: cannot resolve ${hp.host}; give an IP address or a resolvable name`, { cause: err })
    default: return err
  }
}

/** Which of `listeners` a listen error belongs to (by port, then by order), as a ListenError naming its flag. */
export function nameListenFailure (listeners: Array<[string, HostPort]>, err: unknown): unknown {
  const e = err as NodeJS.ErrnoException & { port?: number }
  if (typeof e?.code !== 'string') return err
  const match = listeners.find(([, hp]) => hp.port !== 0 && hp.port === e.port)
  return match === undefined ? err : listenFailure(match[0], match[1], err)
}

/**
 * Opens and closes each listen address before the command starts, so "port in use" is reported
 * before anything is loaded or logged. Port 0 (any free port) is skipped. Two flags on one address
 * are a configuration error.
 */
export async function checkListen (listeners: Array<[string, HostPort]>): Promise<void> {
  const fixed = listeners.filter(([, hp]) => hp.port !== 0)
  for (const [i, [flag, hp]] of fixed.entries()) {
    const other = fixed.slice(0, i).find(([, o]) => o.port === hp.port && (o.host === hp.host || ['0.0.0.0', '::'].includes(o.host) || ['0.0.0.0', '::'].includes(hp.host)))
    if (other !== undefined) throw new ConfigInvalidError([`${flag} ${show(hp)} and ${other[0]} ${show(other[1])} use the same port; give each listener its own port`])
  }
  for (const [flag, hp] of fixed) {
    await new Promise<void>((resolve, reject) => {
      const server = createServer()
      server.once('error', (err) => { reject(listenFailure(flag, hp, err)) })
      server.listen({ host: hp.host, port: hp.port, exclusive: true }, () => { server.close(() => { resolve() }) })
    })
  }
}

/** A point in time from a flag: an ISO time, or a duration ago (`7d`, `1h`). */
export function parseWhen (text: string | undefined, key: string): Date | undefined {
  if (text === undefined) return undefined
  const ago = parseDuration(text)
  if (ago !== undefined) return new Date(Date.now() - ago)
  const d = new Date(text)
  if (Number.isNaN(d.getTime())) throw new ConfigInvalidError([`--${key}: expected an ISO time or a duration ago (e.g. 1h), got ${JSON.stringify(text)}`])
  return d
}
