// Sequence-number arithmetic modulo 2^32 (RFC 1982 style comparisons).
export const seqAdd = (a: number, n: number) => (a + n) >>> 0;
export const seqDiff = (a: number, b: number) => (a - b) | 0; // signed distance a - b
export const seqLt = (a: number, b: number) => ((a - b) | 0) < 0;
export const seqLe = (a: number, b: number) => ((a - b) | 0) <= 0;
export const seqGt = (a: number, b: number) => ((a - b) | 0) > 0;
export const seqGe = (a: number, b: number) => ((a - b) | 0) >= 0;
