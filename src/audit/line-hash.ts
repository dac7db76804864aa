import { hash } from 'node:crypto'
import serialize from 'canonicalize'

// The links of the decision log's hash chain, one module for the writer (record.ts) and the verifier
// (verify.ts), so they cannot disagree. crypto.hash() is one-shot: about half the cost of
// createHash().update().digest() on a 580-byte line (0.62 against 1.18 µs), once per line.

/** SHA-256 (hex) of a line's text without its newline: format 1 hashed lines exactly as written. */
export const lineHash = (line: string): string => hash('sha256', line, 'hex')

/**
 * RFC 8785 (JSON Canonicalization Scheme), from the `canonicalize` package by one of its authors:
 * sorted keys, no whitespace, ECMAScript number and string forms. The package is CommonJS whose
 * types declare a default export; its module.exports is the function.
 */
export const canonicalize = serialize as unknown as (value: unknown) => string

/** The hash of a format-2 line: SHA-256 of its canonical form (which is also exactly what the writer writes). */
export const canonicalHash = (value: unknown): string => lineHash(canonicalize(value))
