import { X509Certificate } from 'node:crypto'
import type { Logger } from '../log.ts'

// The webhook's serving certificate must not expire unnoticed: with failurePolicy Fail, an expired
// one blocks every opted-in pod. Whatever supplies it (files that cert-manager renews, or an SVID
// the injector rotates itself from the Gatehouse CA), its expiry is a gauge, and a warning is logged
// when little of it is left: 30 days before (by default), or once half of its lifetime has passed
// unrenewed if that comes later (a one-hour SVID renews at half-life; if it is still the same
// certificate after that, renewal is failing). The API server checks the DNS name: one missing is
// an error in the log at once, not a mystery at the next pod creation.

export const DEFAULT_WARN_BEFORE_MS = 30 * 24 * 3_600_000

export interface ServingCertWatch { check: () => void, stop: () => void }

export function watchServingCert (o: { current: () => string | undefined, dnsName: string, warnBeforeMs: number, gauge: { set: (value: number) => void }, logger: Logger, everyMs?: number, now?: () => Date }): ServingCertWatch {
  let warnedFor: string | undefined
  let dnsChecked: string | undefined
  const check = (): void => {
    const pem = o.current()
    if (pem === undefined) return
    let cert: X509Certificate
    try { cert = new X509Certificate(pem) } catch { return } // a bad file is reported by whoever loads it
    const notAfter = new Date(cert.validTo)
    const notBefore = new Date(cert.validFrom)
    o.gauge.set(Math.floor(notAfter.getTime() / 1000))
    if (dnsChecked !== cert.serialNumber) {
      dnsChecked = cert.serialNumber
      if (cert.checkHost(o.dnsName) === undefined) {
        o.logger.error({ event: 'inject.cert_wrong_name', expected: o.dnsName, subjectAltName: cert.subjectAltName ?? null, serial: cert.serialNumber }, `the serving certificate does not name ${o.dnsName}: the API server will refuse the webhook (and with failurePolicy Fail, every opted-in pod). With the Gatehouse CA, give 'ca serve --dns-san <injector SPIFFE ID>=${o.dnsName}'`)
      }
    }
    const left = notAfter.getTime() - (o.now?.() ?? new Date()).getTime()
    const warnAt = Math.min(o.warnBeforeMs, (notAfter.getTime() - notBefore.getTime()) / 2)
    if (left < warnAt && warnedFor !== `${cert.serialNumber}/${Math.floor(left / 86_400_000)}`) {
      // Once per certificate and remaining day: a warning a day, not one a minute.
      warnedFor = `${cert.serialNumber}/${Math.floor(left / 86_400_000)}`
      o.logger.warn({ event: 'inject.cert_expiring', notAfter: notAfter.toISOString(), secondsLeft: Math.max(0, Math.floor(left / 1000)), serial: cert.serialNumber }, left <= 0 ? 'the webhook serving certificate has EXPIRED: opted-in pods cannot be created' : 'the webhook serving certificate expires soon and has not been renewed')
    }
  }
  check()
  const timer = setInterval(check, o.everyMs ?? 60_000)
  timer.unref()
  return { check, stop: () => { clearInterval(timer) } }
}
