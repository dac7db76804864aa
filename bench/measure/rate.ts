/** Calls `fn` for `seconds` (after a warm-up) and returns calls per second. `batch` calls are timed together. */
export async function rate (fn: () => unknown, seconds: number, batch = 1): Promise<number> {
  for (let i = 0; i < Math.max(50, batch); i++) await fn()
  let n = 0
  const start = performance.now()
  while (performance.now() - start < seconds * 1000) {
    for (let i = 0; i < batch; i++) await fn()
    n += batch
  }
  return n / ((performance.now() - start) / 1000)
}

/** Synchronous variant for hot loops (no await per call). */
export function rateSync (fn: () => unknown, seconds: number, batch = 1000): number {
  for (let i = 0; i < batch; i++) fn()
  let n = 0
  const start = performance.now()
  while (performance.now() - start < seconds * 1000) {
    for (let i = 0; i < batch; i++) fn()
    n += batch
  }
  return n / ((performance.now() - start) / 1000)
}
