// DNS messages (RFC 1035): a header view, name decoding that bounds compression pointers, and a
// walk over all records that yields each TTL's offset so cached answers can be aged in place.
import { malformed, truncated } from "./error";

export const DNS_ID = 0;
export const DNS_FLAGS = 2;
export const DNS_QDCOUNT = 4;
export const DNS_ANCOUNT = 6;
export const DNS_NSCOUNT = 8;
export const DNS_ARCOUNT = 10;
export const DNS_HEADER_LEN = 12;
export const DNS_MAX_NAME = 255;

export const DnsRcode = { NoError: 0, FormErr: 1, ServFail: 2, NxDomain: 3, NotImp: 4, Refused: 5 } as const;
export const DnsType = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, OPT: 41, ANY: 255 } as const;

const u16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;

export class DnsPacket {
  private constructor(readonly buf: Uint8Array) {}
  static checkLen(buf: Uint8Array): void {
    if (buf.length < DNS_HEADER_LEN) throw truncated("DNS message", DNS_HEADER_LEN, buf.length);
  }
  static newChecked(buf: Uint8Array): DnsPacket {
    DnsPacket.checkLen(buf);
    return new DnsPacket(buf);
  }
  get id() { return u16(this.buf, DNS_ID); }
  get flags() { return u16(this.buf, DNS_FLAGS); }
  get isResponse() { return (this.buf[DNS_FLAGS]! & 0x80) !== 0; }
  get opcode() { return (this.buf[DNS_FLAGS]! >> 3) & 0x0f; }
  get truncatedFlag() { return (this.buf[DNS_FLAGS]! & 0x02) !== 0; }
  get rcode() { return this.buf[DNS_FLAGS + 1]! & 0x0f; }
  get qdcount() { return u16(this.buf, DNS_QDCOUNT); }
  get ancount() { return u16(this.buf, DNS_ANCOUNT); }
  get nscount() { return u16(this.buf, DNS_NSCOUNT); }
  get arcount() { return u16(this.buf, DNS_ARCOUNT); }
}

/** Reads the name at `off`; returns it lower-cased in dotted form and the offset just after it. */
export function readName(buf: Uint8Array, off: number): { name: string; end: number } {
  const labels: string[] = [];
  let pos = off, end = -1, jumps = 0, total = 0;
  for (;;) {
    if (pos >= buf.length) throw truncated("DNS name", pos + 1, buf.length);
    const len = buf[pos]!;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= buf.length) throw truncated("DNS name pointer", pos + 2, buf.length);
      // Pointers must point backwards; together with a jump limit this rules out loops.
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (target >= pos || ++jumps > 64) throw malformed("DNS name", "compression pointer loops or points forward");
      if (end < 0) end = pos + 2;
      pos = target;
      continue;
    }
    if (len & 0xc0) throw malformed("DNS name", `label type 0x${(len & 0xc0).toString(16)} is not supported`);
    if (len === 0) { if (end < 0) end = pos + 1; break; }
    if (pos + 1 + len > buf.length) throw truncated("DNS label", pos + 1 + len, buf.length);
    total += len + 1;
    if (total > DNS_MAX_NAME) throw malformed("DNS name", "longer than 255 bytes");
    let s = "";
    for (let i = 0; i < len; i++) s += String.fromCharCode(buf[pos + 1 + i]!);
    labels.push(s.toLowerCase());
    pos += 1 + len;
  }
  return { name: labels.join("."), end };
}

export function encodeName(name: string): Uint8Array {
  const trimmed = name.endsWith(".") ? name.slice(0, -1) : name;
  const labels = trimmed === "" ? [] : trimmed.split(".");
  const out: number[] = [];
  for (const l of labels) {
    const bytes = new TextEncoder().encode(l);
    if (bytes.length === 0 || bytes.length > 63) throw malformed("DNS name", `label "${l}" must be 1-63 bytes`);
    out.push(bytes.length, ...bytes);
  }
  out.push(0);
  if (out.length > DNS_MAX_NAME) throw malformed("DNS name", "longer than 255 bytes");
  return new Uint8Array(out);
}

export interface DnsQuestion { name: string; type: number; class: number }

export interface DnsMessageRepr {
  id: number;
  flags: number;
  questions: DnsQuestion[];
  /** Byte offsets of the 32-bit TTL of every answer/authority/additional record except OPT. */
  ttlOffsets: number[];
  /** Smallest TTL over those records (or SOA minimum for negative answers); undefined when none. */
  minTtl?: number;
  /** Records seen per section, for callers that want A/AAAA addresses. */
  answers: Array<{ name: string; type: number; class: number; ttl: number; rdata: Uint8Array }>;
  /** EDNS(0) UDP payload size from an OPT record, if any (RFC 6891 §6.2.3). */
  ednsUdpSize?: number;
}

export const DnsMessageRepr = {
  /** Parses the whole message; every count and length is checked against the buffer. */
  parse(p: DnsPacket): DnsMessageRepr {
    const b = p.buf;
    let off = DNS_HEADER_LEN;
    const questions: DnsQuestion[] = [];
    if (p.qdcount > 16) throw malformed("DNS message", `${p.qdcount} questions`);
    for (let i = 0; i < p.qdcount; i++) {
      const n = readName(b, off);
      if (n.end + 4 > b.length) throw truncated("DNS question", n.end + 4, b.length);
      questions.push({ name: n.name, type: u16(b, n.end), class: u16(b, n.end + 2) });
      off = n.end + 4;
    }
    const ttlOffsets: number[] = [];
    const answers: DnsMessageRepr["answers"] = [];
    let minTtl: number | undefined;
    let ednsUdpSize: number | undefined;
    const rrs = p.ancount + p.nscount + p.arcount;
    for (let i = 0; i < rrs; i++) {
      const n = readName(b, off);
      if (n.end + 10 > b.length) throw truncated("DNS record", n.end + 10, b.length);
      const type = u16(b, n.end), cls = u16(b, n.end + 2);
      const ttl = ((b[n.end + 4]! << 24) | (b[n.end + 5]! << 16) | (b[n.end + 6]! << 8) | b[n.end + 7]!) >>> 0;
      const rdlen = u16(b, n.end + 8);
      const rdStart = n.end + 10;
      if (rdStart + rdlen > b.length) throw truncated("DNS record data", rdStart + rdlen, b.length);
      if (type === DnsType.OPT) ednsUdpSize = Math.max(512, cls);
      else {
        ttlOffsets.push(n.end + 4);
        let eff = ttl;
        // Negative answers are cached for min(SOA TTL, SOA MINIMUM) (RFC 2308 §5).
        if (type === DnsType.SOA && rdlen >= 20) eff = Math.min(ttl, u32(b, rdStart + rdlen - 4));
        minTtl = minTtl === undefined ? eff : Math.min(minTtl, eff);
        if (i < p.ancount) answers.push({ name: n.name, type, class: cls, ttl, rdata: b.subarray(rdStart, rdStart + rdlen) });
      }
      off = rdStart + rdlen;
    }
    return { id: p.id, flags: p.flags, questions, ttlOffsets, minTtl, answers, ednsUdpSize };
  },
};

const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;

export interface DnsAnswerRecord { type: number; ttl: number; rdata: Uint8Array }

/** Builds a response to `query` (question copied) with the given rcode and answers for the first question. */
export function buildResponse(query: Uint8Array, q: DnsQuestion | undefined, rcode: number, answers: DnsAnswerRecord[] = []): Uint8Array {
  const qname = q ? encodeName(q.name) : new Uint8Array(0);
  const qlen = q ? qname.length + 4 : 0;
  let len = DNS_HEADER_LEN + qlen;
  for (const a of answers) len += 2 + 10 + a.rdata.length;
  const out = new Uint8Array(len);
  out[0] = query[0]!; out[1] = query[1]!;
  // QR=1, opcode copied, RD copied, RA=1.
  out[2] = 0x80 | (query[2]! & 0x79); out[3] = 0x80 | (rcode & 0x0f);
  out[5] = q ? 1 : 0; out[7] = answers.length;
  let o = DNS_HEADER_LEN;
  if (q) {
    out.set(qname, o); o += qname.length;
    out[o] = q.type >> 8; out[o + 1] = q.type & 0xff; out[o + 2] = q.class >> 8; out[o + 3] = q.class & 0xff; o += 4;
  }
  for (const a of answers) {
    out[o] = 0xc0; out[o + 1] = DNS_HEADER_LEN; // pointer to the question name
    out[o + 2] = a.type >> 8; out[o + 3] = a.type & 0xff; out[o + 4] = 0; out[o + 5] = 1;
    out[o + 6] = a.ttl >>> 24; out[o + 7] = (a.ttl >>> 16) & 0xff; out[o + 8] = (a.ttl >>> 8) & 0xff; out[o + 9] = a.ttl & 0xff;
    out[o + 10] = a.rdata.length >> 8; out[o + 11] = a.rdata.length & 0xff;
    out.set(a.rdata, o + 12); o += 12 + a.rdata.length;
  }
  return out;
}

/** Builds a standard recursive query (used by the host-side resolver's tests and by tools). */
export function buildQuery(id: number, name: string, type: number): Uint8Array {
  const qname = encodeName(name);
  const out = new Uint8Array(DNS_HEADER_LEN + qname.length + 4);
  out[0] = id >> 8; out[1] = id & 0xff; out[2] = 0x01; out[5] = 1;
  out.set(qname, DNS_HEADER_LEN);
  const o = DNS_HEADER_LEN + qname.length;
  out[o] = type >> 8; out[o + 1] = type & 0xff; out[o + 3] = 1;
  return out;
}
