// DNS pinning: which names this sandbox resolved to which addresses, until the answer's TTL (plus a
// short grace for the lookup-then-connect gap) runs out. Domain rules match a flow only through
// these pins, so a hard-coded IP never rides on a domain rule.
import { ipToString } from "../wire/address";

export interface PinOptions {
  /** Added to every TTL: a TTL-0 answer still lets the guest connect right after the lookup. */
  graceMs?: number;
  /** Upper bound on any TTL, whatever the answer says. */
  maxTtlSec?: number;
  /** Addresses tracked at once; the least recently pinned goes first. */
  maxAddresses?: number;
  now?: () => number;
}

export const PIN_DEFAULTS = { graceMs: 10_000, maxTtlSec: 86_400, maxAddresses: 16_384 } as const;

export class PinTable {
  private readonly byIp = new Map<string, Map<string, number>>();
  private readonly graceMs: number;
  private readonly maxTtlSec: number;
  private readonly maxAddresses: number;
  private readonly now: () => number;

  constructor(o: PinOptions = {}) {
    this.graceMs = o.graceMs ?? PIN_DEFAULTS.graceMs;
    this.maxTtlSec = o.maxTtlSec ?? PIN_DEFAULTS.maxTtlSec;
    this.maxAddresses = o.maxAddresses ?? PIN_DEFAULTS.maxAddresses;
    this.now = o.now ?? Date.now;
  }

  get size(): number { return this.byIp.size; }

  pin(ip: Uint8Array, names: readonly string[], ttlSec: number): void {
    const key = ipToString(ip);
    const expires = this.now() + Math.min(Math.max(0, ttlSec), this.maxTtlSec) * 1000 + this.graceMs;
    let m = this.byIp.get(key);
    if (m) this.byIp.delete(key); // re-insert: Map order is the eviction order
    else m = new Map();
    for (const n of names) if ((m.get(n) ?? 0) < expires) m.set(n, expires);
    this.byIp.set(key, m);
    while (this.byIp.size > this.maxAddresses) {
      const oldest = this.byIp.keys().next().value;
      if (oldest === undefined) break;
      this.byIp.delete(oldest);
    }
  }

  /** Names still pinned to `ip`. */
  names(ip: Uint8Array): string[] {
    const key = ipToString(ip);
    const m = this.byIp.get(key);
    if (!m) return [];
    const now = this.now();
    const out: string[] = [];
    for (const [n, exp] of m) {
      if (exp > now) out.push(n);
      else m.delete(n);
    }
    if (m.size === 0) this.byIp.delete(key);
    return out;
  }

  clear(): void { this.byIp.clear(); }
}
