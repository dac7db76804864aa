// The one way tests wait: for an event's visible effect (a log line, a file, a status), never for a
// fixed time when there is something to wait for.

export const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** Waits until `check` is true (polling every 25 ms); throws after `ms`, naming `what`. */
export async function waitFor (check: () => boolean | Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return
    await sleep(25)
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`)
}
