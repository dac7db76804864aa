import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Pki } from './helpers/mesh.ts'
import { gatehouseAsync } from './helpers/audit-log.ts'
import { writeMeshLogs, MESH_TRAFFIC, PAYMENTS, TD } from './helpers/decision-logs.ts'
import { tempDir } from './helpers/files.ts'
import { needsTool } from './helpers/process.ts'

// `gatehouse audit graph -o html`: one self-contained page, drawn by cytoscape (inlined), rendered
// here in headless Chromium. The page script writes what cytoscape drew into <body data-nodes=...>
// after the layout ran, so the DOM Chromium dumps proves the library ran on the fixture's nodes. Two
// callers' SPIFFE IDs (as a log may hold them: untrusted) try to break out of the page's script and
// attributes; they must only ever show up as text.

const BREAKOUT = `${TD}/ns/x/sa/</script><script>document.body.setAttribute('data-pwned','script')</script><!--`
const ATTRIBUTE = `${TD}/ns/y/sa/"><img src=x onerror="document.body.setAttribute('data-pwned','img')">&amp;`

/** Chromium's DOM of `file` once the page's scripts ran (virtual time: no waiting on the wall clock). */
async function renderedDom (dir: string, file: string): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    execFile('chromium', ['--headless', '--no-sandbox', '--disable-gpu', `--user-data-dir=${join(dir, 'chromium-profile')}`, '--virtual-time-budget=5000', '--dump-dom', pathToFileURL(file).href],
      { encoding: 'utf8', timeout: 90_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => { if (err === null) resolve(stdout); else reject(new Error(`chromium: ${err.message}\n${stderr}`)) })
  })
}

t.test('audit graph -o html: a self-contained page that cytoscape lays out in Chromium, log strings shown only as text', { skip: needsTool('chromium', 'chromium') }, async t => {
  const dir = tempDir(t, 'gh-graph-html-')
  const pki = new Pki(dir)
  const traffic = { ...MESH_TRAFFIC, [PAYMENTS]: [...MESH_TRAFFIC[PAYMENTS]!, { caller: BREAKOUT, method: 'GET', path: '/v1/x', n: 1, decision: 'deny' as const, rule: null }, { caller: ATTRIBUTE, method: 'GET', path: '/v1/y', n: 2 }] }
  const files = await writeMeshLogs(dir, pki, traffic)
  const r = await gatehouseAsync(['audit', 'graph', ...files, '--trust-bundle', pki.bundleFile, '-o', 'html'])
  t.equal(r.status, 0, r.stderr)
  const html = r.stdout
  t.ok(html.startsWith('<!doctype html>\n'), 'an HTML page') // (t.ok, not t.match: a failure would print the whole page)
  t.ok(/<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'sha256-[^']+' 'sha256-[^']+';/.test(html), 'no network access: only the page\'s own two inline scripts may run')
  t.notOk(/<script[^>]+src=|<link\b|<iframe\b/i.test(html), 'nothing loaded from elsewhere')
  t.equal(html.match(/<\/script/gi)?.length, 3, 'the data, cytoscape and the page script: nothing from the logs closes a script element')
  t.notOk(html.includes('<img'), 'no tag from the logs reaches the page')
  t.notOk(html.includes('<!--'), 'nor a comment opener')

  const page = join(dir, 'graph.html')
  writeFileSync(page, html)
  const dom = await renderedDom(dir, page)
  const body = /<body([^>]*)>/.exec(dom)?.[1] ?? ''
  t.match(body, /data-nodes="9"/, 'cytoscape drew the fixture\'s 7 services and the 2 hostile callers')
  t.match(body, /data-edges="8"/)
  t.match(body, /data-places="9"/, 'the layout gave every node its own place')
  t.notMatch(body, /data-pwned/, 'no script or handler from the logs ran')
  t.notOk(dom.includes('<img'), 'no element from the logs in the DOM')
  t.ok(dom.includes('<td>spiffe://example.org/ns/web/sa/web</td><td>spiffe://example.org/ns/orders/sa/api</td><td>4</td><td>1</td><td>0</td>'), 'the table of edges, with counts')
  t.ok(dom.includes('<td>spiffe://example.org/ns/x/sa/&lt;/script&gt;&lt;script&gt;document.body.setAttribute(\'data-pwned\',\'script\')&lt;/script&gt;&lt;!--</td>'), 'the hostile IDs, as text')
  t.ok(dom.includes('<td>spiffe://example.org/ns/y/sa/"&gt;&lt;img src=x onerror="document.body.setAttribute(\'data-pwned\',\'img\')"&gt;&amp;amp;</td>'), 'as text too')
  t.ok(dom.includes('<p id="summary">33 decisions, 9 services, 8 caller -&gt; callee pairs.'), 'the summary')
})
