import { parseQuantity } from '../quantity.ts'

// The Node flags a sidecar runs with (NODE_OPTIONS), measured in bench/ (see bench/README.md, memory):
// - an 8 MiB semi-space (young generation) instead of V8's default of up to 32 MiB: the proxy's
//   garbage is short-lived request objects. 2 MiB (the earlier setting) made the scavenger copy the
//   objects of every request in flight several times and promote them: 24 % more CPU per request
//   than 8 MiB for 2-3 MB less RSS; 16 MiB saved about 10 % more CPU for 10 MB more (issue 21);
// - an old-space cap at 3/4 of the container's memory limit: with V8's default (GBs) the heap grows
//   far past the live set before collecting; with a cap near the real budget V8 collects earlier,
//   and a heap that does reach it fails as an OOM in the container's own terms;
// - at most 2 glibc malloc arenas (MALLOC_ARENA_MAX) instead of up to 8 per core: OpenSSL's per-
//   connection allocations, spread over the arenas of Node's worker threads, left about 9 MB more
//   RSS under load, and the proxy's allocating threads are few (no CPU difference measured).

export const DEFAULT_SIDECAR_MEMORY_LIMIT = '256Mi'

export function sidecarNodeOptions (memoryLimit: string = DEFAULT_SIDECAR_MEMORY_LIMIT): string {
  const bytes = parseQuantity(memoryLimit) ?? parseQuantity(DEFAULT_SIDECAR_MEMORY_LIMIT)!
  const oldSpaceMiB = Math.max(64, Math.floor(bytes * 0.75 / 2 ** 20))
  return `--max-semi-space-size=8 --max-old-space-size=${oldSpaceMiB}`
}

/** Every environment variable the sidecar's Node process is started with (the injector and the bench set these; the image defaults to the 256Mi values). */
export function sidecarProcessEnv (memoryLimit: string = DEFAULT_SIDECAR_MEMORY_LIMIT): { NODE_OPTIONS: string, MALLOC_ARENA_MAX: string } {
  return { NODE_OPTIONS: sidecarNodeOptions(memoryLimit), MALLOC_ARENA_MAX: '2' }
}
