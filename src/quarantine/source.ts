import { readFileSync } from 'node:fs'
import type { Logger } from '../log.ts'
import { rateLimited } from '../log.ts'
import { watchFiles, type FileWatch } from '../file-watch.ts'
import type { Credentials } from '../identity/credentials.ts'
import { caRequest } from '../identity/ca-http.ts'
import { parseQuarantine, QuarantineList } from './list.ts'
import { verifyQuarantine } from './signed.ts'

// Where a sidecar's quarantine list comes from (docs/quarantine.md): the CA (--ca-url), long-polled
// over mTLS and accepted only with the issuer's signature, or a file (--quarantine-file), watched
// like the policy. Either way a bad update keeps the last good list, and a CA that is down leaves
// the sidecar with what it last verified.

export interface QuarantineSource {
  readonly current: QuarantineList
  onChange: (fn: () => void) => void
  stop: () => void
}

class Holder {
  list = QuarantineList.EMPTY
  private readonly fns: Array<() => void> = []
  onChange (fn: () => void): void { this.fns.push(fn) }
  set (list: QuarantineList): void {
    if (list.revision === this.list.revision) return
    this.list = list
    for (const fn of this.fns) fn()
  }
}

/** A fixed empty list: no CA and no --quarantine-file. */
export function noQuarantine (): QuarantineSource {
  return { current: QuarantineList.EMPTY, onChange: () => {}, stop: () => {} }
}

/** --quarantine-file FILE: missing means an empty list; an invalid file keeps the last good list. */
export function watchQuarantineFile (file: string, intervalMs: number, logger: Logger): QuarantineSource {
  const h = new Holder()
  const load = (bytes: Buffer | undefined, trigger: string): void => {
    try {
      const list = new QuarantineList(parseQuarantine(bytes?.toString('utf8') ?? '', file))
      const changed = list.revision !== h.list.revision
      h.set(list)
      if (changed) logger.info({ event: 'quarantine.loaded', source: file, trigger, revision: list.revision, entries: list.size }, 'quarantine list loaded')
    } catch (err) {
      logger.error({ event: 'quarantine.invalid', source: file, trigger, problems: (err as { problems?: string[] }).problems ?? [(err as Error).message], keptRevision: h.list.revision }, 'invalid quarantine list; keeping the last good one')
    }
  }
  let initial: Buffer | undefined
  try { initial = readFileSync(file) } catch { initial = undefined }
  load(initial, 'start')
  const watch: FileWatch = watchFiles([file], intervalMs, ([bytes]) => { load(bytes, 'file-change') }, { baseline: [initial] })
  return { get current () { return h.list }, onChange: fn => { h.onChange(fn) }, stop: () => { watch.stop() } }
}

export interface CaQuarantineOptions {
  url: string
  caId: string
  credentials: Credentials
  /** Seconds the CA may hold a poll open (it caps this at 30). */
  waitS?: number
  logger: Logger
}

/** Follows GET /v1/quarantine on the CA: a change there is here about one round trip later. */
export function followCaQuarantine (o: CaQuarantineOptions): QuarantineSource {
  const h = new Holder()
  let iat = 0
  let stopped = false
  let backoffMs = 500
  const base = new URL(o.url)
  const warn = rateLimited()
  const ca = { url: o.url, credentials: o.credentials, caId: o.caId }
  const abort = new AbortController()
  const once = async (): Promise<void> => {
    const url = new URL('/v1/quarantine', base)
    url.searchParams.set('revision', h.list.revision)
    url.searchParams.set('wait', String(o.waitS ?? 20))
    // The CA holds the poll open up to `wait` seconds: silence for longer than that means it is gone.
    const res = await caRequest(ca, { method: 'GET', path: `${url.pathname}${url.search}`, timeoutMs: ((o.waitS ?? 20) + 10) * 1000, signal: abort.signal })
    const body = res.text
    if (res.status !== 200) throw new Error(`HTTP ${res.status} from ${url.origin}`)
    const { jws } = JSON.parse(body) as { jws: string }
    const bundle = o.credentials.bundle
    const td = o.credentials.current?.id.trustDomain
    if (bundle === undefined || td === undefined) throw new Error('no identity or trust bundle yet')
    const doc = await verifyQuarantine(jws, bundle, td)
    // A list older than the one we hold (a lagging replica, a replay) never replaces it.
    if (doc.iat < iat) return
    iat = doc.iat
    const list = new QuarantineList(doc.entries)
    if (list.revision !== h.list.revision) {
      h.set(list)
      o.logger.info({ event: 'quarantine.loaded', source: 'ca', revision: list.revision, entries: list.size }, 'quarantine list loaded from the CA')
    }
  }
  const loop = async (): Promise<void> => {
    while (!stopped) {
      try {
        await once()
        backoffMs = 500
      } catch (err) {
        if (stopped) return
        warn(suppressed => { o.logger.warn({ event: 'quarantine.fetch_failed', detail: (err as Error).message, keptRevision: h.list.revision, ...(suppressed > 0 ? { suppressed } : {}) }, 'cannot fetch the quarantine list; keeping the last good one') })
        await new Promise(resolve => setTimeout(resolve, backoffMs).unref())
        backoffMs = Math.min(5000, backoffMs * 2)
      }
    }
  }
  void loop()
  return {
    get current () { return h.list },
    onChange: fn => { h.onChange(fn) },
    stop: () => { stopped = true; abort.abort() }
  }
}
