import { parseQuantity } from './quantity.ts'

// The Node flags a sidecar runs with (NODE_OPTIONS), measured in bench/ (see bench/README.md, memory):
// - a 2 MiB young generation instead of V8's default of up to 2 x 32 MiB: the proxy's garbage is
//   short-lived request objects, and the large semi-spaces were most of the growth of RSS under load;
// - an old-space cap at 3/4 of the container's memory limit: with V8's default (GBs) the heap grows
//   far past the live set before collecting; with a cap near the real budget V8 collects earlier,
//   and a heap that does reach it fails as an OOM in the container's own terms.

export const DEFAULT_SIDECAR_MEMORY_LIMIT = '256Mi'

export function sidecarNodeOptions (memoryLimit: string = DEFAULT_SIDECAR_MEMORY_LIMIT): string {
  const bytes = parseQuantity(memoryLimit) ?? parseQuantity(DEFAULT_SIDECAR_MEMORY_LIMIT)!
  const oldSpaceMiB = Math.max(64, Math.floor(bytes * 0.75 / 2 ** 20))
  return `--max-semi-space-size=2 --max-old-space-size=${oldSpaceMiB}`
}
