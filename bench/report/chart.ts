// latency.png: p50, p99 and p99.9 at the fixed open-model rate, one group of three bars per target,
// on a log scale (decade grid lines), with each value written above its bar.
import { Canvas, encodePng, type Rgb } from './png.ts'
import { drawText, textWidth, TEXT_HEIGHT } from './font.ts'

export interface LatencyBars { name: string, p50: number, p99: number, p999: number }

export const SERIES: Array<{ key: 'p50' | 'p99' | 'p999', label: string, color: Rgb }> = [
  { key: 'p50', label: 'p50', color: [78, 121, 167] },
  { key: 'p99', label: 'p99', color: [242, 142, 43] },
  { key: 'p999', label: 'p99.9', color: [225, 87, 89] }
]

const fmt = (ms: number): string => ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)

export function latencyChart (rows: LatencyBars[], title: string): Buffer {
  const W = 1000
  const H = 460
  const m = { left: 80, right: 20, top: 70, bottom: 50 }
  const c = new Canvas(W, H)
  const ink: Rgb = [40, 40, 40]
  const grid: Rgb = [215, 215, 215]
  const plotW = W - m.left - m.right
  const plotH = H - m.top - m.bottom
  const values = rows.flatMap(r => [r.p50, r.p99, r.p999]).filter(v => Number.isFinite(v) && v > 0)
  const lo = Math.floor(Math.log10(Math.min(...values, 1)))
  const hi = Math.ceil(Math.log10(Math.max(...values, 1.0001)))
  const yOf = (ms: number): number => m.top + plotH - (Math.log10(ms) - lo) / (hi - lo) * plotH

  drawText(c, m.left, 16, title, ink, 2)
  let lx = m.left
  for (const s of SERIES) {
    c.fillRect(lx, 44, 12, 12, s.color)
    drawText(c, lx + 18, 46, s.label, ink)
    lx += 18 + textWidth(s.label) + 24
  }
  for (let d = lo; d <= hi; d++) {
    const y = yOf(10 ** d)
    c.fillRect(m.left, y, plotW, 1, grid)
    const label = `${10 ** d >= 1 ? (10 ** d).toFixed(0) : (10 ** d).toFixed(-d)} ms`
    drawText(c, m.left - 8 - textWidth(label), y - 3, label, ink)
    if (d < hi) for (const k of [2, 5]) c.fillRect(m.left, yOf(k * 10 ** d), plotW, 1, [238, 238, 238])
  }
  c.fillRect(m.left, m.top, 1, plotH + 1, ink)
  c.fillRect(m.left, m.top + plotH, plotW, 1, ink)

  const groupW = plotW / Math.max(1, rows.length)
  const barW = Math.min(48, groupW / 4)
  rows.forEach((r, i) => {
    const gx = m.left + i * groupW + (groupW - barW * SERIES.length - 8) / 2
    SERIES.forEach((s, j) => {
      const v = r[s.key]
      if (!Number.isFinite(v) || v <= 0) return
      const x = gx + j * (barW + 4)
      const y = yOf(v)
      c.fillRect(x, y, barW, m.top + plotH - y, s.color)
      const label = fmt(v)
      drawText(c, x + (barW - textWidth(label)) / 2, y - TEXT_HEIGHT - 3, label, ink)
    })
    drawText(c, m.left + i * groupW + (groupW - textWidth(r.name)) / 2, m.top + plotH + 14, r.name, ink)
  })
  return encodePng(c)
}
