// RFC 6902 JSON Patch, produced while the change is made: every edit goes through a recorder that
// applies it to a working copy AND records the op. The patched object is therefore, by construction,
// what applying the recorded patch to the original gives; nothing is computed by diffing afterwards.

export interface JsonPatchOp {
  op: 'add' | 'replace' | 'remove'
  path: string
  value?: unknown
}

export type Segment = string | number

/** RFC 6901: "~" becomes "~0" and "/" becomes "~1" (annotation keys such as gatehouse.io/status need it). */
export function escapeToken (token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1')
}

export function pointer (segments: readonly Segment[]): string {
  return segments.map(s => `/${escapeToken(String(s))}`).join('')
}

/** Prefixes every op's path (a pod template's patch, moved under spec.template of its workload). */
export function prefixPatch (prefix: readonly Segment[], ops: readonly JsonPatchOp[]): JsonPatchOp[] {
  const head = pointer(prefix)
  return ops.map(op => ({ ...op, path: `${head}${op.path}` }))
}

type Json = Record<string, unknown>

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)

export class PatchRecorder {
  readonly doc: Json
  readonly ops: JsonPatchOp[] = []

  /** `doc` is edited in place: pass a copy. */
  constructor (doc: Json) {
    this.doc = doc
  }

  get (path: readonly Segment[]): unknown {
    let cur: unknown = this.doc
    for (const s of path) {
      if (Array.isArray(cur) && typeof s === 'number') cur = cur[s]
      else if (isObject(cur) && typeof s === 'string') cur = cur[s]
      else return undefined
    }
    return cur
  }

  /** Sets `key` in the object at `objPath`, creating that object (and its missing parents) in the same op. */
  setKey (objPath: readonly Segment[], key: string, value: unknown): void {
    const obj = this.get(objPath)
    if (isObject(obj)) {
      const op = key in obj ? 'replace' : 'add'
      this.record(op, [...objPath, key], value)
      obj[key] = structuredClone(value)
    } else {
      this.addMissing(objPath, { [key]: value })
    }
  }

  /** Appends to the array at `arrPath`, creating it when missing (RFC 6902 cannot append to nothing). */
  append (arrPath: readonly Segment[], value: unknown): void {
    const arr = this.get(arrPath)
    if (Array.isArray(arr)) {
      this.record('add', [...arrPath, '-'], value)
      arr.push(structuredClone(value))
    } else {
      this.addMissing(arrPath, [value])
    }
  }

  /** Appends several values: one op when the array is missing, one per value otherwise. */
  appendAll (arrPath: readonly Segment[], values: readonly unknown[]): void {
    if (values.length === 0) return
    if (Array.isArray(this.get(arrPath))) for (const v of values) this.append(arrPath, v)
    else this.addMissing(arrPath, [...values])
  }

  /** Inserts at `index` of the array at `arrPath` (later elements shift), creating the array when missing. */
  insert (arrPath: readonly Segment[], index: number, value: unknown): void {
    const arr = this.get(arrPath)
    if (Array.isArray(arr)) {
      this.record('add', [...arrPath, index], value)
      arr.splice(index, 0, structuredClone(value))
    } else {
      this.addMissing(arrPath, [value])
    }
  }

  /** Replaces an existing member or element. */
  replace (path: readonly Segment[], value: unknown): void {
    const parent = this.get(path.slice(0, -1))
    const last = path.at(-1)
    if (last === undefined) throw new Error('cannot replace the whole document')
    if (Array.isArray(parent) && typeof last === 'number' && last < parent.length) parent[last] = structuredClone(value)
    else if (isObject(parent) && typeof last === 'string' && last in parent) parent[last] = structuredClone(value)
    else throw new Error(`nothing to replace at ${pointer(path)}`)
    this.record('replace', path, value)
  }

  /** Removes `key` from the object at `objPath`, if there. */
  removeKey (objPath: readonly Segment[], key: string): void {
    const obj = this.get(objPath)
    if (!isObject(obj) || !(key in obj)) return
    this.ops.push({ op: 'remove', path: pointer([...objPath, key]) })
    delete obj[key]
  }

  /** `add` of a whole value at a path whose parent objects may be missing too: the outermost missing one is added. */
  private addMissing (path: readonly Segment[], value: unknown): void {
    let i = path.length
    let v = value
    // Walk up while the parent is not an object, wrapping the value, so one op creates the whole branch.
    while (i > 0 && !isObject(this.get(path.slice(0, i - 1)))) {
      const seg = path[i - 1]
      if (typeof seg !== 'string') throw new Error(`cannot create array element ${pointer(path.slice(0, i))}`)
      v = { [seg]: v }
      i--
    }
    if (i === 0) throw new Error('cannot replace the whole document')
    const parent = this.get(path.slice(0, i - 1)) as Json
    const key = path[i - 1]
    if (typeof key !== 'string') throw new Error(`cannot create array element ${pointer(path.slice(0, i))}`)
    // "add" also replaces a member that exists with a non-object value (e.g. annotations: null).
    this.record('add', path.slice(0, i), v)
    parent[key] = structuredClone(v)
  }

  private record (op: 'add' | 'replace', path: readonly Segment[], value: unknown): void {
    this.ops.push({ op, path: pointer(path), value: structuredClone(value) })
  }
}
