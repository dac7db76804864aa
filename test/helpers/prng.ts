/** Deterministic PRNG (Park–Miller) in [0, 1): every run of a test sees the same "random" cases. */
export function prng (seed: number): () => number {
  let s = seed
  return () => { s = (s * 48271) % 2147483647; return s / 2147483647 }
}
