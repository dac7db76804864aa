// latency.svg: p50, p99 and p99.9 at the fixed open-model rate, one group of three bars per target,
// on a log scale (decade grid lines), with each value written above its bar. SVG as text: the
// browser or the Markdown viewer draws the glyphs, so there is no raster encoder or font here.

export interface LatencyBars { name: string, p50: number, p99: number, p999: number }

export const SERIES: Array<{ key: 'p50' | 'p99' | 'p999', label: string, color: string }> = [
  { key: 'p50', label: 'p50', color: '#4e79a7' },
  { key: 'p99', label: 'p99', color: '#f28e2b' },
  { key: 'p999', label: 'p99.9', color: '#e15759' }
]

const fmt = (ms: number): string => ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const r1 = (n: number): string => n.toFixed(1)

export function latencyChart (rows: LatencyBars[], title: string): string {
  const W = 1000
  const H = 460
  const m = { left: 80, right: 20, top: 70, bottom: 50 }
  const plotW = W - m.left - m.right
  const plotH = H - m.top - m.bottom
  const values = rows.flatMap(r => [r.p50, r.p99, r.p999]).filter(v => Number.isFinite(v) && v > 0)
  const lo = Math.floor(Math.log10(Math.min(...values, 1)))
  const hi = Math.ceil(Math.log10(Math.max(...values, 1.0001)))
  const yOf = (ms: number): number => m.top + plotH - (Math.log10(ms) - lo) / (hi - lo) * plotH
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12" fill="#282828">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${m.left}" y="30" font-size="18">${esc(title)}</text>`
  ]
  let lx = m.left
  for (const s of SERIES) {
    out.push(`<rect x="${lx}" y="44" width="12" height="12" fill="${s.color}"/><text x="${lx + 18}" y="55">${s.label}</text>`)
    lx += 18 + 8 * s.label.length + 24
  }
  for (let d = lo; d <= hi; d++) {
    const y = r1(yOf(10 ** d))
    out.push(`<line x1="${m.left}" x2="${m.left + plotW}" y1="${y}" y2="${y}" stroke="#d7d7d7"/>`)
    out.push(`<text x="${m.left - 8}" y="${y}" dy="4" text-anchor="end">${10 ** d >= 1 ? (10 ** d).toFixed(0) : (10 ** d).toFixed(-d)} ms</text>`)
    if (d < hi) for (const k of [2, 5]) out.push(`<line x1="${m.left}" x2="${m.left + plotW}" y1="${r1(yOf(k * 10 ** d))}" y2="${r1(yOf(k * 10 ** d))}" stroke="#eee"/>`)
  }
  out.push(`<path d="M${m.left} ${m.top}V${m.top + plotH}H${m.left + plotW}" fill="none" stroke="#282828"/>`)
  const groupW = plotW / Math.max(1, rows.length)
  const barW = Math.min(48, groupW / 4)
  rows.forEach((row, i) => {
    const gx = m.left + i * groupW + (groupW - barW * SERIES.length - 8) / 2
    SERIES.forEach((s, j) => {
      const v = row[s.key]
      if (!Number.isFinite(v) || v <= 0) return
      const x = gx + j * (barW + 4)
      const y = yOf(v)
      out.push(`<rect x="${r1(x)}" y="${r1(y)}" width="${r1(barW)}" height="${r1(m.top + plotH - y)}" fill="${s.color}"><title>${esc(row.name)} ${s.label}: ${fmt(v)} ms</title></rect>`)
      out.push(`<text x="${r1(x + barW / 2)}" y="${r1(y - 4)}" text-anchor="middle" font-size="10">${fmt(v)}</text>`)
    })
    out.push(`<text x="${r1(m.left + i * groupW + groupW / 2)}" y="${m.top + plotH + 20}" text-anchor="middle">${esc(row.name)}</text>`)
  })
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
