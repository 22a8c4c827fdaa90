// The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-header sums TCP, UDP and ICMPv6 use.

/** Adds the 16-bit big-endian words of `buf[start, end)` to `sum` without folding. */
export function sumWords(buf: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  // Long even-aligned runs are summed as little-endian 16-bit words: the one's-complement sum does
  // not depend on byte order (RFC 1071 §2(B)), so the folded result is byte-swapped back. Below
  // the threshold creating the view costs more than it saves.
  if (end - i >= 512 && ((buf.byteOffset + i) & 1) === 0) {
    const words = (end - i) >>> 1;
    const s = sumLe16(new Uint16Array(buf.buffer, buf.byteOffset + i, words));
    i += words * 2;
    sum += ((s & 0xff) << 8) | (s >>> 8);
  }
  // Blocks of at most 32768 words keep the partial sum an int32 (the JIT's fast path).
  while (end - i >= 2) {
    const stop = Math.min(end - 1, i + 65536);
    let s = 0;
    for (; i < stop; i += 2) s = (s + ((buf[i]! << 8) | buf[i + 1]!)) | 0;
    sum += s;
  }
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

/** One's-complement sum of little-endian 16-bit words, folded to 16 bits; int32 arithmetic keeps the JIT on its fast path. */
function sumLe16(u: Uint16Array): number {
  let total = 0;
  const n = u.length;
  for (let base = 0; base < n; base += 32768) {
    const end = Math.min(n, base + 32768);
    // Four independent int32 sums (each at most 8192 * 0xffff) keep the adds from waiting on each other.
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let k = base;
    for (; k + 3 < end; k += 4) { s0 = (s0 + u[k]!) | 0; s1 = (s1 + u[k + 1]!) | 0; s2 = (s2 + u[k + 2]!) | 0; s3 = (s3 + u[k + 3]!) | 0; }
    for (; k < end; k++) s0 = (s0 + u[k]!) | 0;
    total += s0 + s1 + s2 + s3;
  }
  while (total > 0xffff) total = (total & 0xffff) + Math.floor(total / 0x10000);
  return total;
}

/** Folds a running sum into the one's-complement 16-bit checksum value. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

export function checksum(buf: Uint8Array, start = 0, end = buf.length): number {
  return fold(sumWords(buf, start, end));
}

/** Pseudo-header sum for TCP/UDP over IPv4 (RFC 793 §3.1). */
export function pseudoSumV4(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  return sumWords(src, 0, 4) + sumWords(dst, 0, 4) + proto + len;
}

/** Pseudo-header sum for upper layers over IPv6 (RFC 8200 §8.1). */
export function pseudoSumV6(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  return sumWords(src, 0, 16) + sumWords(dst, 0, 16) + Math.floor(len / 0x10000) + (len & 0xffff) + proto;
}

/** Pseudo-header sum for either family, chosen by address length. */
export function pseudoSum(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  return src.length === 4 ? pseudoSumV4(src, dst, proto, len) : pseudoSumV6(src, dst, proto, len);
}
