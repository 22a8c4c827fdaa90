// Rebinding protection: every upstream answer is rebuilt before the guest sees it. Addresses (A,
// AAAA) survive only if they belong to the question's CNAME chain and the policy could allow them;
// records that smuggle addresses past that check (SVCB/HTTPS hints, glue in the additional
// section, DNAME) are dropped; names inside records are written uncompressed so nothing points
// into a removed record.
import { ipToString } from "../wire/address";
import { DNS_HEADER_LEN, DnsPacket, DnsType, encodeName, readName, type DnsQuestion } from "../wire/dns";
import { malformed, truncated } from "../wire/error";

/** The policy's view for DNS: null when allowed, else why not (for the denial log). */
export interface DnsFilter {
  name(name: string): string | null;
  address(names: readonly string[], ip: Uint8Array): string | null;
  /** An address the guest was told about for these names, valid for ttl seconds (pinning). */
  resolved(ip: Uint8Array, names: readonly string[], ttl: number): void;
  denied(message: string): void;
}

interface RawRecord { name: string; type: number; cls: number; ttl: number; rdStart: number; rdLen: number; section: 0 | 1 | 2 }

const MAX_CHAIN = 16;
const SVCB = 64, HTTPS = 65, DNAME = 39, SRV = 33;

const u16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;

function walk(b: Uint8Array): { questionEnd: number; records: RawRecord[] } {
  const p = DnsPacket.newChecked(b);
  if (p.qdcount !== 1) throw malformed("DNS answer", `${p.qdcount} questions`);
  let off = readName(b, DNS_HEADER_LEN).end + 4;
  if (off > b.length) throw truncated("DNS question", off, b.length);
  const questionEnd = off;
  const records: RawRecord[] = [];
  const counts = [p.ancount, p.nscount, p.arcount];
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < counts[s]!; i++) {
      const n = readName(b, off);
      if (n.end + 10 > b.length) throw truncated("DNS record", n.end + 10, b.length);
      const rdLen = u16(b, n.end + 8);
      const rdStart = n.end + 10;
      if (rdStart + rdLen > b.length) throw truncated("DNS record data", rdStart + rdLen, b.length);
      records.push({ name: n.name, type: u16(b, n.end), cls: u16(b, n.end + 2), ttl: u32(b, n.end + 4), rdStart, rdLen, section: s as 0 | 1 | 2 });
      off = rdStart + rdLen;
    }
  }
  return { questionEnd, records };
}

/** The question name and every name a CNAME chain from it reaches (bounded). */
function chainOf(b: Uint8Array, qname: string, records: RawRecord[]): string[] {
  const chain = [qname];
  for (let hops = 0; hops < MAX_CHAIN; hops++) {
    const cur = chain[chain.length - 1]!;
    const c = records.find((r) => r.section === 0 && r.type === DnsType.CNAME && r.name === cur);
    if (!c) break;
    const target = readName(b, c.rdStart).name;
    if (chain.includes(target)) break;
    chain.push(target);
  }
  return chain;
}

function encodeRecord(name: string, type: number, cls: number, ttl: number, rdata: Uint8Array): Uint8Array {
  const n = encodeName(name);
  const out = new Uint8Array(n.length + 10 + rdata.length);
  out.set(n);
  let o = n.length;
  out[o] = type >> 8; out[o + 1] = type & 0xff; out[o + 2] = cls >> 8; out[o + 3] = cls & 0xff;
  out[o + 4] = ttl >>> 24; out[o + 5] = (ttl >>> 16) & 0xff; out[o + 6] = (ttl >>> 8) & 0xff; out[o + 7] = ttl & 0xff;
  out[o + 8] = rdata.length >> 8; out[o + 9] = rdata.length & 0xff;
  out.set(rdata, o + 10);
  return out;
}

const concat = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};

/** Record data with any names in it written out in full (RFC 3597: only these old types compress). */
function plainRdata(b: Uint8Array, r: RawRecord): Uint8Array | null {
  const rd = b.subarray(r.rdStart, r.rdStart + r.rdLen);
  switch (r.type) {
    case DnsType.CNAME: case DnsType.NS: case DnsType.PTR:
      return encodeName(readName(b, r.rdStart).name);
    case DnsType.MX: {
      if (r.rdLen < 3) return null;
      return concat([rd.subarray(0, 2), encodeName(readName(b, r.rdStart + 2).name)]);
    }
    case SRV: {
      if (r.rdLen < 7) return null;
      return concat([rd.subarray(0, 6), encodeName(readName(b, r.rdStart + 6).name)]);
    }
    case DnsType.SOA: {
      const m = readName(b, r.rdStart);
      const rn = readName(b, m.end);
      if (rn.end + 20 > r.rdStart + r.rdLen) return null;
      return concat([encodeName(m.name), encodeName(rn.name), b.subarray(rn.end, rn.end + 20)]);
    }
    default:
      return rd;
  }
}

export interface Sanitized { message: Uint8Array; dropped: Array<{ name: string; ip: string; why: string }> }

/**
 * Rebuilds an upstream answer for question `q` keeping only what the filter allows. Throws a
 * WireError if the message is malformed (the caller answers SERVFAIL).
 */
export function sanitizeAnswer(resp: Uint8Array, q: DnsQuestion, f: Pick<DnsFilter, "address" | "name">): Sanitized {
  const { questionEnd, records } = walk(resp);
  const chain = chainOf(resp, q.name, records);
  // A CNAME target the policy refuses outright ends the chain there: no addresses beyond it.
  let usable = chain.length;
  for (let i = 1; i < chain.length; i++) if (f.name(chain[i]!) !== null) { usable = i; break; }
  const names = chain.slice(0, usable);
  const dropped: Sanitized["dropped"] = [];
  const an: Uint8Array[] = [], ns: Uint8Array[] = [], ar: Uint8Array[] = [];
  for (const r of records) {
    if (r.section === 0) {
      if (r.type === DnsType.A || r.type === DnsType.AAAA) {
        if ((r.type === DnsType.A ? 4 : 16) !== r.rdLen) continue;
        const ip = resp.slice(r.rdStart, r.rdStart + r.rdLen);
        if (!names.includes(r.name)) { dropped.push({ name: r.name, ip: ipToString(ip), why: "not in the question's CNAME chain" }); continue; }
        const why = f.address(names, ip);
        if (why !== null) { dropped.push({ name: r.name, ip: ipToString(ip), why }); continue; }
        an.push(encodeRecord(r.name, r.type, r.cls, r.ttl, ip));
        continue;
      }
      if (r.type === DnsType.CNAME && !names.includes(r.name)) continue;
      if (r.type === SVCB || r.type === HTTPS || r.type === DNAME) continue;
      const rd = plainRdata(resp, r);
      if (rd) an.push(encodeRecord(r.name, r.type, r.cls, r.ttl, rd));
    } else if (r.section === 1) {
      if (r.type !== DnsType.SOA) continue; // negative-caching TTL only; referrals are no use to a stub
      const rd = plainRdata(resp, r);
      if (rd) ns.push(encodeRecord(r.name, r.type, r.cls, r.ttl, rd));
    } else if (r.type === DnsType.OPT) {
      ar.push(resp.slice(r.rdStart - 11, r.rdStart + r.rdLen)); // root name (1 byte) + fixed 10
    }
  }
  const header = resp.slice(0, DNS_HEADER_LEN);
  header[6] = an.length >> 8; header[7] = an.length & 0xff;
  header[8] = ns.length >> 8; header[9] = ns.length & 0xff;
  header[10] = ar.length >> 8; header[11] = ar.length & 0xff;
  return { message: concat([header, resp.subarray(DNS_HEADER_LEN, questionEnd), ...an, ...ns, ...ar]), dropped };
}

/** Addresses in a (sanitized) answer with the chain names they belong to and their TTLs, for pinning. */
export function answerAddresses(resp: Uint8Array, q: DnsQuestion): Array<{ ip: Uint8Array; names: string[]; ttl: number }> {
  const { records } = walk(resp);
  const chain = chainOf(resp, q.name, records);
  const out: Array<{ ip: Uint8Array; names: string[]; ttl: number }> = [];
  for (const r of records) {
    if (r.section !== 0 || (r.type !== DnsType.A && r.type !== DnsType.AAAA) || !chain.includes(r.name)) continue;
    if (r.rdLen !== (r.type === DnsType.A ? 4 : 16)) continue;
    out.push({ ip: resp.slice(r.rdStart, r.rdStart + r.rdLen), names: chain, ttl: r.ttl });
  }
  return out;
}
