// Target 3, nginx from Debian: terminates mTLS (ssl_verify_client on, TLS 1.3, the bench CA bundle as
// ssl_client_certificate) and proxies to the app over an upstream keep-alive pool. One worker, no
// master (so the pid we pin and measure is the one that does the work), everything in the run's
// temp dir. Installed with apt-get if missing; if it cannot be, the target is skipped with the reason.
// "grpc nginx" is a second nginx, configured the same way but with `http2` on the TLS listener and
// `grpc_pass` to the gRPC app over an upstream keep-alive pool (nginx sends one call at a time on
// each upstream HTTP/2 connection and keeps the connections open).
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { BenchEnv, Target } from './target.ts'
import { TargetSkipped } from './target.ts'
import { start, stop, freePort, waitForTcp } from '../lib/proc.ts'
import { BENCH_PATH } from '../lib/policy-gen.ts'
import { GRPC_PATH } from '../lib/grpc.ts'
import type { GrpcApp } from './grpc.ts'

function findNginx (): string | undefined {
  for (const p of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx']) if (existsSync(p)) return p
  try { return execFileSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).trim() || undefined } catch { return undefined }
}

/** The nginx binary, installed from Debian's packages (as root) if it is missing. */
export function ensureNginx (log: (s: string) => void): string {
  const found = findNginx()
  if (found !== undefined) return found
  if (process.getuid?.() !== 0) throw new TargetSkipped('nginx is not installed and this is not root (apt-get install -y nginx)')
  const apt = (...args: string[]): void => { execFileSync('apt-get', args, { stdio: 'ignore', timeout: 300_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }) }
  log('nginx: not installed; apt-get install -y nginx-light (or nginx) ...\n')
  for (const attempt of [() => { apt('install', '-y', '-q', 'nginx-light') }, () => { apt('install', '-y', '-q', 'nginx') }, () => { apt('update', '-q'); apt('install', '-y', '-q', 'nginx') }]) {
    try { attempt() } catch { continue }
    const now = findNginx()
    if (now !== undefined) return now
  }
  throw new TargetSkipped('nginx is not installed and apt-get could not install it')
}

export function nginxVersion (bin: string): string {
  const r = spawnSync(bin, ['-v'], { encoding: 'utf8' })
  return `${r.stdout}${r.stderr}`.trim() // nginx -v prints to stderr
}

function config (dir: string, port: number, env: BenchEnv, grpc: GrpcApp | undefined): string {
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream app {
    server 127.0.0.1:${grpc?.port ?? env.appPort};
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} ssl${grpc === undefined ? '' : ' http2'};
    ssl_protocols TLSv1.3;
    ssl_certificate ${env.pki.server.cert};
    ssl_certificate_key ${env.pki.server.key};
    ssl_client_certificate ${env.pki.bundle};
    ssl_verify_client on;
    ssl_verify_depth 3;
    location / {
${grpc === undefined
    ? `      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;`
    : '      grpc_pass grpc://app;'}
    }
  }
}
`
}

export async function startNginx (env: BenchEnv, log: (s: string) => void, grpc?: GrpcApp): Promise<Target> {
  const bin = ensureNginx(log)
  const dir = join(env.dir, grpc === undefined ? 'nginx' : 'nginx-grpc')
  mkdirSync(dir, { recursive: true })
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, config(dir, port, env, grpc))
  const p = start(bin, ['-p', `${dir}/`, '-c', conf, '-e', join(dir, 'error.log')], { core: 1, name: 'nginx' })
  try {
    await Promise.race([waitForTcp(port, 10_000, 'nginx'), p.exited.then(() => { throw new Error(`nginx exited: ${p.stderrTail.join('\n')}`) })])
  } catch (err) {
    await stop(p)
    throw new TargetSkipped(`nginx did not start: ${(err as Error).message}`)
  }
  return {
    name: grpc === undefined ? 'nginx' : 'grpc nginx',
    description: `${nginxVersion(bin).replace(/^nginx version: /, '')} (Debian): ssl_verify_client on, TLS 1.3, upstream keepalive, 1 worker, access_log off${grpc === undefined ? '' : '; listen ssl http2, grpc_pass to the app over h2c'}`,
    origin: `https://127.0.0.1:${port}`,
    path: grpc === undefined ? BENCH_PATH : GRPC_PATH,
    tls: true,
    handshakes: grpc === undefined ? 'mtls' : 'none',
    procs: [p],
    ...(grpc === undefined ? {} : { app: grpc.proc, grpc: { driver: 'node' as const, authority: `127.0.0.1:${port}` } }),
    notes: [],
    stop: async () => { await stop(p) }
  }
}
