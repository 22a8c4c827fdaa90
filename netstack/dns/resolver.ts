// The default DNS resolver hook: forwards the guest's query, unchanged apart from its id, to the
// host's configured nameservers (/etc/resolv.conf) over UDP, retrying over TCP when truncated.
import { DnsPacket } from "../wire/dns";

/** Resolves one DNS query message into a response message (any record type). */
export type DnsResolver = (query: Uint8Array) => Promise<Uint8Array>;

export class DnsResolveError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DnsResolveError";
  }
}

/** Nameservers from resolv.conf text; scoped IPv6 (fe80::1%eth0) is kept as written. */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
}

export async function hostNameservers(path = "/etc/resolv.conf"): Promise<string[]> {
  try {
    return parseResolvConf(await Bun.file(path).text());
  } catch {
    return [];
  }
}

export interface ForwardOptions { servers: Array<{ host: string; port: number }>; timeoutMs?: number }

/** A resolver hook that forwards to explicit servers (tests pass their loopback server here). */
export function forwardingResolver(o: ForwardOptions): DnsResolver {
  const timeoutMs = o.timeoutMs ?? 2000;
  return async (query) => {
    if (o.servers.length === 0) throw new DnsResolveError("no nameservers configured on the host (/etc/resolv.conf has none)");
    let last: unknown;
    for (const s of o.servers) {
      try {
        const r = await udpExchange(s.host, s.port, query, timeoutMs);
        if (DnsPacket.newChecked(r).truncatedFlag) return await tcpExchange(s.host, s.port, query, timeoutMs);
        return r;
      } catch (e) {
        last = e;
      }
    }
    throw new DnsResolveError(`no nameserver answered: ${(last as Error)?.message ?? last}`);
  };
}

/** The host's own resolver configuration, read once at first use. */
export function systemResolver(): DnsResolver {
  let inner: DnsResolver | null = null;
  return async (q) => {
    if (!inner) inner = forwardingResolver({ servers: (await hostNameservers()).map((h) => ({ host: h, port: 53 })) });
    return inner(q);
  };
}

function withId(msg: Uint8Array, id: number): Uint8Array {
  const out = msg.slice();
  out[0] = id >> 8;
  out[1] = id & 0xff;
  return out;
}

async function udpExchange(host: string, port: number, query: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
  // A fresh random id and source port per exchange: off-path spoofing has to guess both.
  const id = (Math.random() * 0x10000) | 0;
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
  const sock = await Bun.udpSocket({
    binaryType: "uint8array",
    hostname: host.includes(":") ? "::" : "0.0.0.0",
    socket: {
      data(_s, buf) {
        if (buf.length >= 2 && ((buf[0]! << 8) | buf[1]!) === id) resolve(withId(buf, (query[0]! << 8) | query[1]!));
      },
    },
  });
  const timer = setTimeout(() => reject(new DnsResolveError(`${host}:${port} did not answer within ${timeoutMs} ms`)), timeoutMs);
  try {
    sock.send(withId(query, id), port, host);
    return await promise;
  } finally {
    clearTimeout(timer);
    sock.close();
  }
}

async function tcpExchange(host: string, port: number, query: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
  let buf = new Uint8Array(0);
  const timer = setTimeout(() => reject(new DnsResolveError(`${host}:${port} (TCP) did not answer within ${timeoutMs} ms`)), timeoutMs);
  const framed = new Uint8Array(2 + query.length);
  framed[0] = query.length >> 8; framed[1] = query.length & 0xff; framed.set(query, 2);
  const sock = await Bun.connect({
    hostname: host, port,
    socket: {
      binaryType: "uint8array",
      open(s) { s.write(framed); },
      data(_s, d: Uint8Array) {
        const n = new Uint8Array(buf.length + d.length); n.set(buf); n.set(d, buf.length); buf = n;
        if (buf.length >= 2) { const len = (buf[0]! << 8) | buf[1]!; if (buf.length >= 2 + len) resolve(buf.slice(2, 2 + len)); }
      },
      close() { reject(new DnsResolveError(`${host}:${port} closed the TCP connection before answering`)); },
      connectError(_s, e) { reject(e); },
    },
  });
  try { return await promise; } finally { clearTimeout(timer); sock.end(); }
}

/**
 * TESTS ONLY: `MSB_TEST_DNS_UPSTREAM=host:port` (or `[v6]:port`) makes a sandbox's stack ask that
 * server instead of the host's resolv.conf, so the hostile-guest suite can serve rebinding answers
 * from a DNS server it runs on loopback. Unset in normal use: returns undefined.
 */
export function testResolverFromEnv(env: Record<string, string | undefined> = process.env): DnsResolver | undefined {
  const v = env.MSB_TEST_DNS_UPSTREAM;
  if (!v) return undefined;
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(v);
  if (!m) throw new DnsResolveError(`MSB_TEST_DNS_UPSTREAM must be host:port, not "${v}"`);
  return forwardingResolver({ servers: [{ host: m[1]!, port: Number(m[2]) }], timeoutMs: 2000 });
}
