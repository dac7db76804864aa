// bench/quarantine: how fast `gatehouse ca quarantine add` cuts a caller off at each callee (the
// bound in docs/quarantine.md). An in-process CA and three CA-issued sidecars, the caller calling
// both callees continuously; the method is in bench/lib/quarantine.ts. Prints min / median / p95 /
// max per callee and overall, and writes bench/results/quarantine.json.
//   npm run bench:quarantine [-- --runs 20]
import { fileURLToPath } from 'node:url'
import { measureQuarantine, formatQuarantine, writeQuarantineResults } from './lib/quarantine.ts'

const at = process.argv.indexOf('--runs')
const runs = at === -1 ? 20 : Number(process.argv[at + 1])
const r = await measureQuarantine({ runs }, (s) => { process.stderr.write(s) })
const file = writeQuarantineResults(fileURLToPath(new URL('./results/', import.meta.url)), r)
process.stdout.write(`${formatQuarantine(r)}wrote ${file}\n`)
process.exit(0)
