// The guest's DNS server (the gateway's DNS address): validates each query, answers the host alias
// itself, serves from a TTL-respecting cache, and otherwise asks the resolver hook. Whatever the
// upstream says (any record type) is passed through with the guest's id and aged TTLs.
import { buildResponse, DnsMessageRepr, DnsPacket, DnsRcode, DnsType, type DnsQuestion } from "../wire/dns";
import { WireError } from "../wire/error";
import { answerAddresses, sanitizeAnswer, type DnsFilter } from "./filter";
import type { DnsResolver } from "./resolver";

export interface DnsProxyOptions {
  resolver: DnsResolver;
  /** Names answered locally (host.msb.internal → gateway). */
  localNames: Map<string, { a?: Uint8Array; aaaa?: Uint8Array }>;
  maxCacheEntries?: number;
  /** Upper bound on how long anything is cached, whatever the TTL says. */
  maxTtl?: number;
  /** Queries in flight to the resolver at once; more get SERVFAIL rather than queueing without bound. */
  maxInflight?: number;
  /**
   * The egress policy's view: names it refuses get NXDOMAIN without an upstream query, answers are
   * rebuilt keeping only addresses it could allow, and every address handed out is pinned.
   */
  filter?: DnsFilter;
}

interface CacheEntry { response: Uint8Array; ttlOffsets: number[]; stored: number; expires: number }

export const DNS_LOCAL_TTL = 60;

export class DnsProxy {
  private cache = new Map<string, CacheEntry>();
  private inflight = 0;
  readonly stats = { queries: 0, cacheHits: 0, upstream: 0, failures: 0, malformed: 0, refused: 0, rebindDrops: 0 };

  constructor(private readonly o: DnsProxyOptions) {}

  /**
   * Answers one query message. `maxSize` is the transport's limit (UDP: 512 or the guest's EDNS
   * size; TCP: 65535); larger answers come back truncated (TC) so the guest retries over TCP.
   * Returns null when the message deserves no answer (it is not a query).
   */
  async answer(query: Uint8Array, transport: "udp" | "tcp"): Promise<Uint8Array | null> {
    this.stats.queries++;
    let repr: DnsMessageRepr;
    let pkt: DnsPacket;
    try {
      pkt = DnsPacket.newChecked(query);
      if (pkt.isResponse) return null;
      repr = DnsMessageRepr.parse(pkt);
    } catch (e) {
      if (!(e instanceof WireError)) throw e;
      this.stats.malformed++;
      return query.length >= 12 ? buildResponse(query, undefined, DnsRcode.FormErr) : null;
    }
    const q = repr.questions[0];
    if (pkt.opcode !== 0) return buildResponse(query, q, DnsRcode.NotImp);
    if (repr.questions.length !== 1 || !q) return buildResponse(query, q, DnsRcode.FormErr);
    const maxSize = transport === "tcp" ? 65535 : Math.min(repr.ednsUdpSize ?? 512, 65507);
    const local = this.o.localNames.get(q.name);
    if (local) return this.fit(this.localAnswer(query, q, local), maxSize, query, q);
    const f = this.o.filter;
    if (f) {
      const why = f.name(q.name);
      if (why !== null) {
        this.stats.refused++;
        f.denied(`dns ${q.name}: NXDOMAIN without asking upstream (${why})`);
        return buildResponse(query, q, DnsRcode.NxDomain);
      }
    }
    const key = `${q.name}|${q.type}|${q.class}|${repr.ednsUdpSize ? "e" : ""}`;
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.expires > now) {
      this.stats.cacheHits++;
      return this.fit(this.pinned(this.fromCache(hit, query, now), q), maxSize, query, q);
    }
    if (hit) this.cache.delete(key);
    if (this.inflight >= (this.o.maxInflight ?? 256)) { this.stats.failures++; return buildResponse(query, q, DnsRcode.ServFail); }
    this.inflight++;
    this.stats.upstream++;
    try {
      let resp = await this.o.resolver(query);
      let rp = DnsPacket.newChecked(resp);
      let rr = DnsMessageRepr.parse(rp);
      const rq = rr.questions[0];
      if (!rp.isResponse || rp.id !== pkt.id || !rq || rq.name !== q.name || rq.type !== q.type)
        throw new Error("the resolver's answer does not match the question");
      if (f) {
        const clean = sanitizeAnswer(resp, q, f);
        for (const d of clean.dropped) {
          this.stats.rebindDrops++;
          f.denied(`dns ${q.name}: dropped ${d.name} → ${d.ip} (${d.why})`);
        }
        resp = clean.message;
        rp = DnsPacket.newChecked(resp);
        rr = DnsMessageRepr.parse(rp);
      }
      this.store(key, resp, rr, rp.rcode, now);
      return this.fit(this.pinned(resp, q), maxSize, query, q);
    } catch {
      this.stats.failures++;
      return buildResponse(query, q, DnsRcode.ServFail);
    } finally {
      this.inflight--;
    }
  }

  /** Pins every address the guest is about to be told, for the TTL the guest is told. */
  private pinned(resp: Uint8Array, q: DnsQuestion): Uint8Array {
    const f = this.o.filter;
    if (f) for (const a of answerAddresses(resp, q)) f.resolved(a.ip, a.names, a.ttl);
    return resp;
  }

  private localAnswer(query: Uint8Array, q: DnsQuestion, local: { a?: Uint8Array; aaaa?: Uint8Array }): Uint8Array {
    const answers = [];
    if (q.type === DnsType.A && local.a) answers.push({ type: DnsType.A, ttl: DNS_LOCAL_TTL, rdata: local.a });
    if (q.type === DnsType.AAAA && local.aaaa) answers.push({ type: DnsType.AAAA, ttl: DNS_LOCAL_TTL, rdata: local.aaaa });
    return buildResponse(query, q, DnsRcode.NoError, answers);
  }

  private store(key: string, resp: Uint8Array, rr: DnsMessageRepr, rcode: number, now: number): void {
    // Only answers that say how long they live are cached: NOERROR/NXDOMAIN with a TTL (SOA for negatives).
    if ((rcode !== DnsRcode.NoError && rcode !== DnsRcode.NxDomain) || rr.minTtl === undefined || rr.minTtl === 0) return;
    if (DnsPacket.newChecked(resp).truncatedFlag) return;
    const ttl = Math.min(rr.minTtl, this.o.maxTtl ?? 86400);
    if (this.cache.size >= (this.o.maxCacheEntries ?? 4096)) {
      const first = this.cache.keys().next().value;
      if (first !== undefined) this.cache.delete(first);
    }
    this.cache.set(key, { response: resp.slice(), ttlOffsets: rr.ttlOffsets, stored: now, expires: now + ttl * 1000 });
  }

  private fromCache(e: CacheEntry, query: Uint8Array, now: number): Uint8Array {
    const out = e.response.slice();
    out[0] = query[0]!; out[1] = query[1]!;
    const age = Math.floor((now - e.stored) / 1000);
    for (const o of e.ttlOffsets) {
      const ttl = ((out[o]! << 24) | (out[o + 1]! << 16) | (out[o + 2]! << 8) | out[o + 3]!) >>> 0;
      const t = Math.max(0, ttl - age);
      out[o] = t >>> 24; out[o + 1] = (t >>> 16) & 0xff; out[o + 2] = (t >>> 8) & 0xff; out[o + 3] = t & 0xff;
    }
    return out;
  }

  private fit(resp: Uint8Array, maxSize: number, query: Uint8Array, q: DnsQuestion): Uint8Array {
    if (resp.length <= maxSize) return resp;
    const tc = buildResponse(query, q, resp[3]! & 0x0f);
    tc[2] = tc[2]! | 0x02; // TC: retry over TCP
    return tc;
  }

  clear(): void { this.cache.clear(); }
}
