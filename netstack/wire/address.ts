// Address helpers: MAC, IPv4 and IPv6 addresses as bytes, with parsing and formatting for logs and policy.
import { malformed } from "./error";

export type Mac = Uint8Array; // 6 bytes
export type Ipv4Addr = Uint8Array; // 4 bytes
export type Ipv6Addr = Uint8Array; // 16 bytes

export const BROADCAST_MAC: Mac = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export function parseMac(s: string): Mac {
  const parts = s.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p)))
    throw malformed("MAC address", `"${s}" is not six hex pairs like 52:54:00:12:34:56`);
  return new Uint8Array(parts.map((p) => parseInt(p, 16)));
}
export const macToString = (m: Mac) => Array.from(m, (b) => b.toString(16).padStart(2, "0")).join(":");

export function parseIpv4(s: string): Ipv4Addr {
  const parts = s.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255))
    throw malformed("IPv4 address", `"${s}" is not a dotted quad`);
  return new Uint8Array(parts.map(Number));
}
export const ipv4ToString = (a: Uint8Array) => `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;

export function parseIpv6(s: string): Ipv6Addr {
  const out = new Uint8Array(16);
  let str = s;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(str);
  if (v4) {
    const b = parseIpv4(v4[1]!);
    str = str.slice(0, -v4[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const halves = str.split("::");
  if (halves.length > 2) throw malformed("IPv6 address", `"${s}" has more than one "::"`);
  const head = halves[0] ? halves[0].split(":") : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const groups = head.length + tail.length;
  if ((halves.length === 1 && groups !== 8) || groups > 8 || (halves.length === 2 && groups > 7))
    throw malformed("IPv6 address", `"${s}" does not have 8 groups`);
  const put = (g: string, i: number) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw malformed("IPv6 address", `"${s}" has a bad group "${g}"`);
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  };
  head.forEach((g, i) => put(g, i));
  tail.forEach((g, i) => put(g, 8 - tail.length + i));
  return out;
}

export function ipv6ToString(a: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((a[i * 2]! << 8) | a[i * 2 + 1]!);
  // Longest run of zero groups (length >= 2) collapses to "::" (RFC 5952).
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (x: number[]) => x.map((v) => v.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

export const ipToString = (a: Uint8Array) => (a.length === 4 ? ipv4ToString(a) : ipv6ToString(a));
export function parseIp(s: string): Uint8Array {
  return s.includes(":") ? parseIpv6(s) : parseIpv4(s);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Parses "a.b.c.d/len" or "x::y/len" into address and prefix length. */
export function parseCidr(s: string): { addr: Uint8Array; prefix: number } {
  const [a, p] = s.split("/");
  const addr = parseIp(a!);
  const max = addr.length * 8;
  const prefix = p === undefined ? max : Number(p);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max)
    throw malformed("CIDR", `"${s}" needs a prefix length between 0 and ${max}`);
  return { addr, prefix };
}

export function inPrefix(addr: Uint8Array, net: Uint8Array, prefix: number): boolean {
  if (addr.length !== net.length) return false;
  const full = prefix >> 3;
  for (let i = 0; i < full; i++) if (addr[i] !== net[i]) return false;
  const rem = prefix & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (addr[full]! & mask) === (net[full]! & mask);
}
