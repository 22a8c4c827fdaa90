// Address groups for egress rules (private, loopback, metadata, ...) and every IPv6 spelling that
// carries an IPv4 address, so a guest cannot reach a denied IPv4 destination by writing it as IPv6.
import { bytesEqual, inPrefix, parseCidr, parseIp } from "../wire/address";

export const GROUPS = ["public", "private", "loopback", "link-local", "metadata", "multicast", "host", "reserved"] as const;
export type Group = (typeof GROUPS)[number];

const cidrs = (...s: string[]) => s.map(parseCidr);

/**
 * Non-public ranges by group. `public` is what is in none of them (in no spelling) and is not the
 * host; `host` is the host's own addresses, given at compile time.
 */
const RANGES: Array<[Exclude<Group, "public" | "host">, Array<{ addr: Uint8Array; prefix: number }>]> = [
  // Cloud metadata first: an address in it is reported as metadata, not as link-local or private.
  ["metadata", cidrs("169.254.169.254/32", "169.254.170.2/32", "100.100.100.200/32", "fd00:ec2::254/128")],
  // 0.0.0.0/8 and :: reach the host's own stack on Linux, so they count as loopback.
  ["loopback", cidrs("127.0.0.0/8", "0.0.0.0/8", "::1/128", "::/128")],
  ["link-local", cidrs("169.254.0.0/16", "fe80::/10")],
  ["private", cidrs("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fec0::/10")],
  ["multicast", cidrs("224.0.0.0/4", "255.255.255.255/32", "ff00::/8")],
  // Special-purpose (RFC 6890): IETF protocol assignments, documentation, benchmarking, reserved,
  // discard-only, the local-use NAT64 prefix (its IPv4 sits at a prefix-dependent offset).
  ["reserved", cidrs("192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15", "240.0.0.0/4",
    "100::/64", "2001:db8::/32", "64:ff9b:1::/48", "2001:2::/48", "2001:10::/28", "2001:20::/28")],
];

const zero = (a: Uint8Array, from: number, to: number) => { for (let i = from; i < to; i++) if (a[i] !== 0) return false; return true; };

/**
 * The IPv4 addresses an IPv6 address embeds, for every spelling a host or a translator on its path
 * could act on: IPv4-mapped ::ffff:a.b.c.d, SIIT ::ffff:0:a.b.c.d, IPv4-compatible ::a.b.c.d,
 * NAT64 64:ff9b::/96, 6to4 2002:AABB:CCDD::/48, Teredo 2001:0::/32 (server in bits 32-63, client
 * XOR 0xffffffff in the last 32 bits: both are returned), and ISATAP interface ids (::5efe:a.b.c.d
 * under any prefix).
 */
export function embeddedIpv4(a: Uint8Array): Uint8Array[] {
  if (a.length !== 16) return [];
  const out: Uint8Array[] = [];
  if (zero(a, 0, 10) && a[10] === 0xff && a[11] === 0xff) out.push(a.slice(12));
  else if (zero(a, 0, 8) && a[8] === 0xff && a[9] === 0xff && a[10] === 0 && a[11] === 0) out.push(a.slice(12));
  else if (zero(a, 0, 12) && !(zero(a, 12, 15) && a[15]! <= 1)) out.push(a.slice(12)); // not :: or ::1
  if (a[0] === 0x00 && a[1] === 0x64 && a[2] === 0xff && a[3] === 0x9b && zero(a, 4, 12)) out.push(a.slice(12));
  if (a[0] === 0x20 && a[1] === 0x02) out.push(a.slice(2, 6));
  if (a[0] === 0x20 && a[1] === 0x01 && a[2] === 0 && a[3] === 0) {
    out.push(a.slice(4, 8));
    out.push(a.slice(12).map((b) => b ^ 0xff));
  }
  if ((a[8] === 0x00 || a[8] === 0x02) && a[9] === 0x00 && a[10] === 0x5e && a[11] === 0xfe) out.push(a.slice(12));
  return out;
}

/** The address itself and every IPv4 address it embeds. */
export function spellings(ip: Uint8Array): Uint8Array[] {
  return ip.length === 16 ? [ip, ...embeddedIpv4(ip)] : [ip];
}

/** The host's own addresses (all interfaces), as the policy's `host` group sees them. */
export function hostAddresses(): Uint8Array[] {
  const out: Uint8Array[] = [];
  // Read lazily so a test process or a supervisor picks up the addresses present at its start.
  const os = require("node:os") as typeof import("node:os");
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      try { out.push(parseIp(a.address.replace(/%.*$/, ""))); } catch { /* an address form we do not parse is no host address we can match */ }
    }
  }
  return out;
}

export class AddressClassifier {
  constructor(private readonly host: Uint8Array[]) {}

  isHost(ip: Uint8Array, sp = spellings(ip)): boolean {
    for (const s of sp) for (const h of this.host) if (bytesEqual(h, s)) return true;
    return false;
  }

  /**
   * Every group the address belongs to in any spelling, most specific first (metadata before
   * link-local, host before public). `viaHostAlias`: the guest addressed the gateway, meaning the
   * host's loopback.
   */
  groups(ip: Uint8Array, viaHostAlias = false, sp = spellings(ip)): Group[] {
    const out: Group[] = [];
    if (viaHostAlias || this.isHost(ip, sp)) out.push("host");
    for (const [g, nets] of RANGES) {
      search: for (const s of sp) for (const n of nets) if (inPrefix(s, n.addr, n.prefix)) { out.push(g); break search; }
    }
    if (out.length === 0) out.push("public");
    return out;
  }

  /** True for addresses the default `public` preset denies. */
  isNonPublic(ip: Uint8Array): boolean {
    return this.groups(ip)[0] !== "public";
  }
}
