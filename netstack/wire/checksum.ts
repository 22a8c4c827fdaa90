// The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-header sums TCP, UDP and ICMPv6 use.

/** Adds the 16-bit big-endian words of `buf[start, end)` to `sum` without folding. */
export function sumWords(buf: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  // Sums stay well inside 2^53 for any frame we accept (< 2^17 words), so folding once at the end is exact.
  const last = end - 1;
  for (; i < last; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  return sum;
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
