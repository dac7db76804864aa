// Kubernetes resource quantities ("250m", "64Mi", "1.5", "1e3"): the injector checks the proxy's
// request/limit annotations with it (a malformed quantity would make the API server reject the pod),
// and the proxy reads its memory limit with it to size its connection limits.

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 }
const DECIMAL: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 }
const QUANTITY = /^(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?$/

/** The value in base units (cores, bytes); undefined when not a non-negative quantity. */
export function parseQuantity (text: string): number | undefined {
  const m = QUANTITY.exec(text)
  if (m === null) return undefined
  const n = Number(m[1])
  if (m[3] !== undefined) return n * 10 ** Number(m[3])
  const suffix = m[2] ?? ''
  return n * (BINARY[suffix] ?? DECIMAL[suffix] ?? 1)
}
