// UDP flows from the guest re-sent from host sockets, NAT style: one host socket per guest source
// (address, port), replies accepted only from destinations that flow has sent to, idle flows
// expire, and the number of flows is capped so a guest cannot exhaust host sockets.
import type { udp } from "bun";
import { ipToString, parseIp } from "../wire/address";

export interface UdpNatOptions {
  idleMs: number;
  maxFlows: number;
  /** Packets queued per flow while its host socket is being created. */
  maxQueued: number;
  /** Sends a datagram to the guest from `src:srcPort` (the address the guest originally targeted). */
  toGuest(family: 4 | 6, src: Uint8Array, srcPort: number, guest: Uint8Array, guestPort: number, payload: Uint8Array): void;
}

interface Flow {
  family: 4 | 6;
  guest: Uint8Array;
  guestPort: number;
  socket: udp.Socket<"uint8array"> | null;
  queue: Array<{ host: string; port: number; data: Uint8Array }>;
  /** host "ip|port" → the address the guest used for it (differs when the gateway alias mapped to loopback). */
  remotes: Map<string, Uint8Array>;
  lastUsed: number;
  closed: boolean;
}

/**
 * UDP is unreliable anyway: a send that fails (ECONNREFUSED from an earlier ICMP port unreachable,
 * EHOSTUNREACH, ...) drops that datagram instead of throwing into the stack.
 */
export function sendQuietly(s: udp.Socket<"uint8array">, data: Uint8Array, port: number, host: string): void {
  try { s.send(data, port, host); } catch { /* dropped, as the network would */ }
}

export class UdpNat {
  private flows = new Map<string, Flow>();
  private sweeper: ReturnType<typeof setInterval> | null = null;
  constructor(private readonly o: UdpNatOptions) {}

  get size() { return this.flows.size; }

  get maxFlows() { return this.o.maxFlows; }

  /**
   * A datagram the policy already allowed: send it from the host to `host:port`. Returns false when
   * it would start a new flow beyond the flow limit (idle flows are expired first).
   */
  send(family: 4 | 6, guest: Uint8Array, guestPort: number, guestDst: Uint8Array, host: string, port: number, payload: Uint8Array): boolean {
    const key = `${family}|${ipToString(guest)}|${guestPort}`;
    let f = this.flows.get(key);
    if (!f) {
      if (this.flows.size >= this.o.maxFlows) this.expireIdle();
      if (this.flows.size >= this.o.maxFlows) return false;
      f = { family, guest: guest.slice(), guestPort, socket: null, queue: [], remotes: new Map(), lastUsed: Date.now(), closed: false };
      this.flows.set(key, f);
      this.open(f);
      this.startSweeper();
    }
    f.lastUsed = Date.now();
    const norm = ipToString(parseIp(host));
    f.remotes.set(`${norm}|${port}`, guestDst.slice());
    if (f.socket) sendQuietly(f.socket, payload, port, host);
    else if (f.queue.length < this.o.maxQueued) f.queue.push({ host, port, data: payload.slice() });
    return true;
  }

  private open(f: Flow): void {
    Bun.udpSocket({
      binaryType: "uint8array",
      hostname: f.family === 4 ? "0.0.0.0" : "::",
      socket: {
        data: (_s, buf, port, addr) => {
          if (f.closed) return;
          const src = f.remotes.get(`${ipToString(parseIp(addr))}|${port}`);
          if (!src) return; // endpoint-dependent filtering: only peers this flow talked to
          f.lastUsed = Date.now();
          this.o.toGuest(f.family, src, port, f.guest, f.guestPort, buf);
        },
      },
    }).then((s) => {
      if (f.closed) return s.close();
      f.socket = s;
      for (const q of f.queue) sendQuietly(s, q.data, q.port, q.host);
      f.queue = [];
    }, () => this.remove(f));
  }

  private remove(f: Flow): void {
    f.closed = true;
    f.socket?.close();
    this.flows.delete(`${f.family}|${ipToString(f.guest)}|${f.guestPort}`);
  }

  private expireIdle(): void {
    const now = Date.now();
    for (const f of [...this.flows.values()]) if (now - f.lastUsed > this.o.idleMs) this.remove(f);
  }

  private startSweeper(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const f of [...this.flows.values()]) if (now - f.lastUsed > this.o.idleMs) this.remove(f);
      if (this.flows.size === 0 && this.sweeper) { clearInterval(this.sweeper); this.sweeper = null; }
    }, Math.min(1000, this.o.idleMs));
  }

  close(): void {
    for (const f of [...this.flows.values()]) this.remove(f);
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
  }
}
