// The egress decision hook and its default: public destinations allowed; loopback, private,
// link-local, CGNAT, ULA, multicast, metadata and reserved ranges denied, in every IPv4/IPv6 spelling.
import { inPrefix, parseCidr } from "../wire/address";

export type Proto = "tcp" | "udp" | "icmp";

export interface Destination {
  proto: Proto;
  /** The address the host would connect to (after the host alias maps the gateway to loopback). */
  ip: string;
  ipBytes: Uint8Array;
  port: number;
  /** True when the guest addressed the gateway (host.msb.internal) and the host's loopback is meant. */
  viaHostAlias: boolean;
}

/** Decides whether the guest may reach a destination. Must be fast and synchronous: it runs per new flow. */
export type EgressPolicy = (dest: Destination) => boolean;

const DENIED = [
  "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
  "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
  "224.0.0.0/4", "240.0.0.0/4",
  "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
].map(parseCidr);

/** Embedded IPv4 spellings inside IPv6 that a host stack would route as IPv4 (mapped, compat, NAT64, 6to4). */
function embeddedV4(a: Uint8Array): Uint8Array | null {
  if (a.length !== 16) return null;
  const zero = (from: number, to: number) => a.subarray(from, to).every((x) => x === 0);
  if (zero(0, 10) && a[10] === 0xff && a[11] === 0xff) return a.subarray(12); // ::ffff:a.b.c.d
  if (zero(0, 12) && !(a[12] === 0 && a[13] === 0 && a[14] === 0 && a[15]! <= 1)) return a.subarray(12); // ::a.b.c.d
  if (a[0] === 0x00 && a[1] === 0x64 && a[2] === 0xff && a[3] === 0x9b && zero(4, 12)) return a.subarray(12); // 64:ff9b::/96
  if (a[0] === 0x20 && a[1] === 0x02) return a.subarray(2, 6); // 6to4 2002::/16
  return null;
}

/** True for addresses the default policy denies (the same test the DNS rebinding filter will use). */
export function isNonPublic(ip: Uint8Array): boolean {
  if (DENIED.some((n) => inPrefix(ip, n.addr, n.prefix))) return true;
  const v4 = embeddedV4(ip);
  return v4 !== null && DENIED.some((n) => inPrefix(v4, n.addr, n.prefix));
}

/** Default egress policy: allow public unicast, deny everything in DENIED (metadata 169.254.169.254 included). */
export const defaultPolicy: EgressPolicy = (d) => !d.viaHostAlias && !isNonPublic(d.ipBytes);
