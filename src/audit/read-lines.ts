import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { open } from 'node:fs/promises'

// Decision-log files, read as one stream of lines in chain order (by the seq of each file's first
// line, so FILE, FILE.000001, ... can be given in any order), without loading them into memory.

export interface LogLine { file: string, lineNo: number, text: string }

async function firstSeq (file: string): Promise<number> {
  const fh = await open(file, 'r')
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(4096), 0, 4096, 0)
    const m = /"seq":(\d+)/.exec(buffer.subarray(0, bytesRead).toString('utf8'))
    return m === null ? Number.MAX_SAFE_INTEGER : Number(m[1])
  } finally { await fh.close() }
}

export async function orderFiles (files: string[]): Promise<string[]> {
  const withSeq = await Promise.all(files.map(async f => ({ f, seq: await firstSeq(f) })))
  return withSeq.sort((a, b) => a.seq - b.seq).map(x => x.f)
}

export async function * readLogLines (files: string[]): AsyncGenerator<LogLine> {
  for (const file of await orderFiles(files)) {
    let lineNo = 0
    for await (const text of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) {
      lineNo++
      if (text === '') continue
      yield { file, lineNo, text }
    }
  }
}
