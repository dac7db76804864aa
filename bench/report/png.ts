// A tiny PNG writer: an RGBA canvas with filled rectangles, encoded as IHDR + one zlib-deflated IDAT
// (filter 0 on every row) + IEND, each chunk with its CRC-32. No dependencies beyond node:zlib.
import { deflateSync, crc32 } from 'node:zlib'

export type Rgb = readonly [number, number, number]

export class Canvas {
  readonly width: number
  readonly height: number
  readonly data: Buffer

  constructor (width: number, height: number, background: Rgb = [255, 255, 255]) {
    this.width = width
    this.height = height
    this.data = Buffer.alloc(width * height * 4)
    this.fillRect(0, 0, width, height, background)
  }

  fillRect (x: number, y: number, w: number, h: number, [r, g, b]: Rgb): void {
    const x0 = Math.max(0, Math.round(x))
    const y0 = Math.max(0, Math.round(y))
    const x1 = Math.min(this.width, Math.round(x + w))
    const y1 = Math.min(this.height, Math.round(y + h))
    for (let yy = y0; yy < y1; yy++) {
      for (let xx = x0; xx < x1; xx++) {
        const i = (yy * this.width + xx) * 4
        this.data[i] = r; this.data[i + 1] = g; this.data[i + 2] = b; this.data[i + 3] = 255
      }
    }
  }
}

function chunk (type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(8)
  head.writeUInt32BE(body.length, 0)
  head.write(type, 4, 'ascii')
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(body, crc32(head.subarray(4))), 0)
  return Buffer.concat([head, body, crc])
}

export function encodePng (c: Canvas): Buffer {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(c.width, 0)
  ihdr.writeUInt32BE(c.height, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 6 // colour type: RGBA
  // compression, filter and interlace methods: 0
  const stride = c.width * 4
  const raw = Buffer.alloc((stride + 1) * c.height)
  for (let y = 0; y < c.height; y++) c.data.copy(raw, y * (stride + 1) + 1, y * stride, (y + 1) * stride)
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0))
  ])
}
