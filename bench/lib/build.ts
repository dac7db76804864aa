// The gatehouse under test is the shipped form: src/ compiled by tsc (tsconfig.build.json, as the
// Dockerfile does) into the run's temp dir, run as plain JavaScript. Running src/cli.ts through
// Node's type stripping works too, but loads the stripper and costs ~20 MB of RSS the image does
// not pay. If the build fails, the bench falls back to src/cli.ts and says so.
import { execFileSync } from 'node:child_process'
import { existsSync, copyFileSync, symlinkSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'

export function buildGatehouse (root: string, dir: string): { cli: string, how: string } {
  const out = join(dir, 'build')
  mkdirSync(out, { recursive: true })
  try {
    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', join(out, 'dist'), '--sourceMap', 'false'], { stdio: 'ignore', timeout: 120_000 })
  } catch { /* tsc exits non-zero on a type error but still emits: what matters is whether cli.js is there */ }
  const cli = join(out, 'dist/cli.js')
  if (!existsSync(cli)) return { cli: join(root, 'src/cli.ts'), how: 'src/cli.ts through type stripping (the tsc build failed)' }
  // ESM ("type": "module") and the project's dependencies, as in the image.
  copyFileSync(join(root, 'package.json'), join(out, 'package.json'))
  symlinkSync(join(root, 'node_modules'), join(out, 'node_modules'), 'dir')
  return { cli, how: 'src/ compiled with tsc -p tsconfig.build.json and run as JavaScript (as in the image)' }
}
