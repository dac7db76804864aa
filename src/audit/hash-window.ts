/**
 * The hashes of a chain's lines since its last checkpoint, which the next checkpoint may vouch for:
 * consecutive seqs, 32 bytes each in one ring buffer (growing if checkpoints are far apart). A Map of
 * hex strings cost an object per line that lived until the next checkpoint, so millions of lines
 * meant millions of promoted objects and a heap far larger than what is alive.
 */
export class HashWindow {
  private buf = Buffer.alloc(32 * 256)
  /** Seqs from..to-1 are held; seq s at slot s % capacity. */
  private from = 0
  private to = 0
  private get capacity (): number { return this.buf.length / 32 }

  /** Adds the hash of `seq`, which follows the last one added (anything else starts the window over). */
  set (seq: number, hex: string): void {
    if (seq !== this.to || this.from === this.to) { this.from = seq; this.to = seq }
    if (this.to - this.from === this.capacity) {
      const grown = Buffer.alloc(this.buf.length * 2)
      for (let s = this.from; s < this.to; s++) this.buf.copy(grown, (s % (grown.length / 32)) * 32, (s % this.capacity) * 32, (s % this.capacity) * 32 + 32)
      this.buf = grown
    }
    this.buf.write(hex, (seq % this.capacity) * 32, 32, 'hex')
    this.to = seq + 1
  }

  get (seq: number): string | undefined {
    if (!Number.isInteger(seq) || seq < this.from || seq >= this.to) return undefined
    const at = (seq % this.capacity) * 32
    return this.buf.toString('hex', at, at + 32)
  }

  dropBelow (seq: number): void { this.from = Math.min(Math.max(this.from, seq), this.to) }
  countAbove (seq: number): number { return Math.max(0, this.to - Math.max(this.from, seq + 1)) }
}
