// NetStack: the interface (gateway), TCP/UDP/ICMP handling, DNS, egress policy, host-side proxying
// and published ports, put together behind one object the supervisor attaches to a frame stream.
import type { Socket, TCPSocketListener, udp } from "bun";
import type { Duplex } from "node:stream";
import { DnsProxy } from "./dns/proxy";
import { systemResolver, type DnsResolver } from "./dns/resolver";
import { DnsTcpUpstream } from "./dns/tcp";
import { Interface, type InterfaceStats } from "./iface/interface";
import { FrameDecoder, FrameEncoder, FrameStreamError, type ByteSink } from "./phy/framing";
import { FaultInjector, PcapWriter, unframed, type FaultOptions } from "./phy/middleware";
import type { DnsFilter } from "./dns/filter";
import { PinTable, type PinOptions } from "./dns/pins";
import { DenialLog } from "./policy/log";
import type { Destination, EgressPolicy } from "./policy/policy";
import { CompiledPolicy, compilePolicy } from "./policy/rules";
import { parsePortSpec, type PortSpec } from "./ports/ports";
import { acceptAsDuplex } from "./proxy/duplex";
import { SocketUpstream, connectHost, socketHandlers } from "./proxy/tcp";
import { MemoryBudget } from "./tcp/budget";
import type { TcpConnection } from "./tcp/connection";
import { sendQuietly, UdpNat } from "./udp/nat";
import { bytesEqual, ipToString, parseCidr, parseIp, parseIpv4, parseIpv6, parseMac } from "./wire/address";

export interface NetStackOptions {
  gatewayMac?: string;
  /** The guest NIC's MAC if the backend fixes it; otherwise learned from the guest's first frame. */
  guestMac?: string;
  gatewayIPv4?: string;
  dnsIPv4?: string;
  /** Guest address with prefix, e.g. "10.0.2.15/24". */
  guestIPv4?: string;
  /** IPv6: a ULA /64 with the gateway at ::2 and DNS at ::3 by default; false to turn IPv6 off. */
  ipv6?: { guest: string; gateway: string; dns: string } | false;
  /** Guest MTU, 576..65520. Large MTUs let bulk transfers move 64 KiB per frame. */
  mtu?: number;
  /**
   * Egress decision per new flow: a compiled rule policy (`compilePolicy`, which also filters DNS
   * and pins answers), or a plain function (no DNS filtering). Default: `compilePolicy()`, the
   * `public` preset.
   */
  policy?: EgressPolicy | CompiledPolicy;
  /** The sandbox's name, at the start of every denial line. */
  name?: string;
  /** DNS pinning: grace after the TTL, bounds. */
  pins?: PinOptions;
  /** Denial log rate limits (lines per destination / in total per window). */
  denialLog?: { perKey?: number; total?: number; windowMs?: number };
  /** DNS resolution on the host. Default: the host's /etc/resolv.conf nameservers. */
  resolver?: DnsResolver;
  /** Names answered with the gateway's addresses. */
  hostAliases?: string[];
  /** `[IP:]HOST:GUEST[/udp]` strings or parsed specs; bound by `start()`. */
  publishedPorts?: Array<string | PortSpec>;
  /**
   * TCP bounds. rcvBuf/sndBuf are per connection (window and send queue, default 4 MiB each);
   * memoryLimit caps what all connections hold together (default 256 MiB).
   */
  tcp?: {
    rcvBuf?: number; sndBuf?: number; memoryLimit?: number; timeWaitMs?: number; maxRetries?: number;
    /** Connections tracked at once (every state); beyond it new SYNs are reset (default 4096). */
    maxConnections?: number;
    /** Guest connections whose host side is still opening or whose handshake is unfinished (default 256). */
    maxHalfOpen?: number;
  };
  /** UDP flows (guest source address+port) at once (default 1024); a new flow beyond it is refused. */
  udp?: { idleMs?: number; maxFlows?: number };
  /** Bytes of frames queued toward the guest before senders hold back. */
  linkHighWater?: number;
  /**
   * The stream carries a 12-byte virtio_net_hdr_v1 before each frame (length prefix covers both):
   * checksum offload and TSO both ways, so TCP moves 64 KiB per frame at any MTU. The VM backend
   * must negotiate the matching features with the guest (CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6).
   * Not for qemu `-netdev stream`, which carries plain frames.
   */
  vnetHdr?: boolean;
  /**
   * TLS interception: guest TCP flows to these ports that the egress policy allows are answered by
   * the stack and handed to `handle` as a Duplex instead of being dialled; UDP to these ports is
   * refused, so QUIC clients fall back to TCP.
   */
  intercept?: { ports: readonly number[]; handle(guest: Duplex, dest: { ip: string; port: number }): void };
  /** Debugging: write every frame (both directions) to this pcap file. */
  pcapPath?: string;
  /** Testing: lose, duplicate and reorder frames in each direction. */
  faults?: FaultOptions;
  log?: (msg: string) => void;
}

/** A frame stream attached to the stack. */
export interface NetLink {
  /**
   * Bytes read from the stream (u32-BE-length-framed Ethernet frames). The stack takes the chunk
   * over: the caller must not modify it afterwards (Bun's socket callbacks hand out fresh buffers).
   */
  receive(chunk: Uint8Array): void;
  /** The sink can take more (call from the socket's drain callback). */
  drain(): void;
  close(): void;
}

export interface Closable { close(): void }

/** What the agent must configure in the guest so it matches the stack (see `NetStack.guestConfig`). */
export interface GuestNetConfig {
  mtu: number;
  ipv4: { address: string; prefixLength: number; gateway: string };
  ipv6: { address: string; prefixLength: number; gateway: string } | null;
  /** resolv.conf nameservers, in order. */
  nameservers: string[];
  /** /etc/hosts entries the agent may add (they also resolve through the gateway's DNS). */
  hosts: Array<{ name: string; address: string }>;
}

export const DEFAULTS = {
  gatewayMac: "5a:94:ef:e4:0c:dd",
  gatewayIPv4: "10.0.2.2",
  dnsIPv4: "10.0.2.3",
  guestIPv4: "10.0.2.15/24",
  ipv6: { guest: "fd6d:7362::15/64", gateway: "fd6d:7362::2", dns: "fd6d:7362::3" },
  mtu: 1500,
  hostAliases: ["host.msb.internal"],
} as const;

export class NetStackError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NetStackError";
  }
}

export class NetStack {
  readonly iface: Interface;
  readonly dns: DnsProxy;
  readonly udp: UdpNat;
  private readonly policyFn: EgressPolicy | null;
  readonly policy: CompiledPolicy | null;
  readonly pins: PinTable;
  readonly denials: DenialLog;
  private readonly maxHalfOpen: number;
  private readonly halfOpen = new Set<TcpConnection>();
  private readonly log: (m: string) => void;
  private encoder: FrameEncoder | null = null;
  private publishedSpecs: PortSpec[];
  private listeners: Array<TCPSocketListener<unknown> | udp.Socket<"uint8array">> = [];
  private readonly gw4: Uint8Array;
  private readonly dns4: Uint8Array;
  private readonly gw6: Uint8Array;
  private readonly dns6: Uint8Array;
  readonly mtu: number;
  private readonly intercept: NetStackOptions["intercept"];

  constructor(o: NetStackOptions = {}) {
    const mtu = o.mtu ?? DEFAULTS.mtu;
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65520) throw new NetStackError(`mtu ${mtu} is outside 576..65520`);
    this.mtu = mtu;
    const g4 = parseCidr(o.guestIPv4 ?? DEFAULTS.guestIPv4);
    const v6 = o.ipv6 === false ? null : (o.ipv6 ?? DEFAULTS.ipv6);
    const g6 = v6 ? parseCidr(v6.guest) : { addr: new Uint8Array(16), prefix: 128 };
    this.gw4 = parseIpv4(o.gatewayIPv4 ?? DEFAULTS.gatewayIPv4);
    this.dns4 = parseIpv4(o.dnsIPv4 ?? DEFAULTS.dnsIPv4);
    // With IPv6 off these stay all-zero and the guest has no v6 source address we accept.
    this.gw6 = v6 ? parseIpv6(v6.gateway) : new Uint8Array(16);
    this.dns6 = v6 ? parseIpv6(v6.dns) : new Uint8Array(16);
    const pol = o.policy ?? compilePolicy();
    this.policy = pol instanceof CompiledPolicy ? pol : null;
    this.policyFn = pol instanceof CompiledPolicy ? null : pol;
    this.log = o.log ?? (() => {});
    this.intercept = o.intercept;
    this.pins = new PinTable(o.pins);
    this.denials = new DenialLog({ name: o.name ?? "(unnamed)", write: (l) => this.log(`netstack: ${l}`), ...o.denialLog });
    this.maxHalfOpen = o.tcp?.maxHalfOpen ?? 256;
    this.publishedSpecs = (o.publishedPorts ?? []).map((p) => (typeof p === "string" ? parsePortSpec(p) : p));
    this.iface = new Interface({
      gatewayMac: parseMac(o.gatewayMac ?? DEFAULTS.gatewayMac),
      guestMac: o.guestMac ? parseMac(o.guestMac) : undefined,
      gatewayIPv4: this.gw4, dnsIPv4: this.dns4, guestIPv4: g4.addr, guestPrefixV4: g4.prefix,
      gatewayIPv6: this.gw6, dnsIPv6: this.dns6, guestIPv6: v6 ? g6.addr : new Uint8Array(16).fill(0xff), guestPrefixV6: v6 ? g6.prefix : 128,
      mtu,
      tcp: {
        rcvBuf: o.tcp?.rcvBuf ?? 4 << 20, sndBuf: o.tcp?.sndBuf ?? 4 << 20,
        timeWaitMs: o.tcp?.timeWaitMs ?? 30_000, maxRetries: o.tcp?.maxRetries ?? 12,
        budget: new MemoryBudget(o.tcp?.memoryLimit ?? 256 << 20),
      },
      maxTcpConnections: o.tcp?.maxConnections ?? 4096,
      vnetHdr: o.vnetHdr === true,
    }, {
      tcpConnect: (c, d) => this.tcpConnect(c, d),
      udp: (f, s, sp, d, dp, p) => this.udpFromGuest(f, s, sp, d, dp, p),
      linkSend: (framed) => this.txFrame(framed),
      linkFull: () => this.encoder?.full ?? true,
      blocked: (what, family, dst, detail) => this.blocked(what, family, dst, detail),
    });
    this.ipv6Enabled = v6 !== null;
    this.vnetHdr = o.vnetHdr === true;
    this.hostAliases = [...(o.hostAliases ?? DEFAULTS.hostAliases)];
    const aliases = new Map<string, { a?: Uint8Array; aaaa?: Uint8Array }>();
    for (const n of this.hostAliases) aliases.set(n.toLowerCase(), { a: this.gw4, aaaa: v6 ? this.gw6 : undefined });
    this.dns = new DnsProxy({ resolver: o.resolver ?? systemResolver(), localNames: aliases, filter: this.dnsFilter() });
    this.udp = new UdpNat({
      idleMs: o.udp?.idleMs ?? 60_000, maxFlows: o.udp?.maxFlows ?? 1024, maxQueued: 32,
      toGuest: (f, src, sp, g, gp, p) => this.iface.sendUdp(f, src, sp, g, gp, p),
    });
    this.linkHighWater = o.linkHighWater ?? 8 << 20;
    if (o.pcapPath) this.pcap = new PcapWriter(o.pcapPath);
    if (o.faults) {
      this.rxFaults = new FaultInjector(o.faults);
      this.txFaults = new FaultInjector({ ...o.faults, seed: (o.faults.seed ?? 1) + 1 });
    }
  }
  private pcap: PcapWriter | null = null;
  private rxFaults: FaultInjector | null = null;
  private txFaults: FaultInjector | null = null;

  private txFrame(framed: Uint8Array): void {
    const enc = this.encoder;
    if (!enc) return;
    this.pcap?.write(unframed(framed).subarray(this.vnetHdr ? 12 : 0));
    // Copies: a frame sent twice must not be recycled after its first write.
    if (this.txFaults) this.txFaults.pass(framed, (f) => enc.send(f), true);
    else enc.send(framed);
  }

  private rxFrame(frame: Uint8Array): void {
    this.pcap?.write(frame.subarray(this.vnetHdr ? 12 : 0));
    if (this.rxFaults) this.rxFaults.pass(frame, (f) => this.iface.receive(f));
    else this.iface.receive(frame);
  }
  private readonly linkHighWater: number;
  private readonly ipv6Enabled: boolean;
  private readonly vnetHdr: boolean;
  private readonly hostAliases: string[];

  get stats(): InterfaceStats { return this.iface.stats; }

  /** DNS pinning, for the TLS relay: true while this sandbox's resolver answer maps `name` to `ip`. */
  resolvedFor(name: string, ip: string): boolean {
    const wanted = name.toLowerCase().replace(/\.$/, "");
    // The stack answers its host aliases itself (with the gateway, whose flows are dialled on host loopback).
    if ((ip === "127.0.0.1" || ip === "::1") && this.hostAliases.some((alias) => alias.toLowerCase() === wanted)) return true;
    let bytes: Uint8Array;
    try { bytes = parseIp(ip); } catch { return false; }
    return this.pins.names(bytes).includes(wanted);
  }

  /** The guest-side settings matching this stack, for the agent to apply at boot. */
  guestConfig(): GuestNetConfig {
    const c = this.iface.cfg;
    const v6 = this.ipv6Enabled;
    return {
      mtu: this.mtu,
      ipv4: { address: ipToString(c.guestIPv4), prefixLength: c.guestPrefixV4, gateway: ipToString(this.gw4) },
      ipv6: v6 ? { address: ipToString(c.guestIPv6), prefixLength: c.guestPrefixV6, gateway: ipToString(this.gw6) } : null,
      nameservers: v6 ? [ipToString(this.dns4), ipToString(this.dns6)] : [ipToString(this.dns4)],
      hosts: this.hostAliases.map((name) => ({ name, address: ipToString(this.gw4) })),
    };
  }

  /** Binds the published ports. Rejects with the first port that cannot be bound. */
  async start(): Promise<void> {
    for (const p of this.publishedSpecs) await this.publish(p);
  }

  // ---- the frame stream ----

  /**
   * Attaches a frame stream. `sink.write` must return how many bytes it took (Bun socket
   * semantics); the caller forwards the stream's data and drain events to the returned link.
   * One stream at a time: attaching again detaches the previous one.
   */
  attach(sink: ByteSink): NetLink {
    this.encoder?.close();
    const enc = new FrameEncoder(sink, this.linkHighWater);
    // With offload the guest may send 64 KiB segments whatever its MTU.
    const dec = new FrameDecoder(this.vnetHdr ? 12 + 18 + 65535 : this.mtu + 14 + 4);
    enc.onWritable = () => this.iface.linkWritable();
    this.encoder = enc;
    // Connections that held back while no stream was attached may send now.
    queueMicrotask(() => { if (this.encoder === enc) this.iface.linkWritable(); });
    const iface = this.iface;
    return {
      receive: (chunk) => {
        if (this.encoder !== enc) return;
        try {
          if (this.pcap || this.rxFaults) dec.push(chunk, (f) => this.rxFrame(f));
          else dec.push(chunk, (f) => iface.receive(f));
        } catch (e) {
          if (!(e instanceof FrameStreamError)) throw e;
          this.log(`netstack: closing the guest's net stream: ${e.message}`);
          enc.close();
          sink.end();
          return;
        }
        iface.endOfBatch();
      },
      drain: () => enc.drain(),
      close: () => { enc.close(); if (this.encoder === enc) this.encoder = null; },
    };
  }

  /** Attaches a connected Bun socket (or fd, e.g. the native VMM's socketpair end). */
  private socketOptions(onClose?: () => void) {
    let link: NetLink | null = null;
    return {
      binaryType: "uint8array" as const,
      open: (s: Socket<unknown>) => { link = this.attach({ write: (d) => s.write(d), end: () => s.end() }); },
      data: (_s: Socket<unknown>, d: Uint8Array) => link?.receive(d),
      drain: () => link?.drain(),
      close: () => { link?.close(); link = null; onClose?.(); },
      error: (_s: Socket<unknown>, e: Error) => this.log(`netstack: net stream error: ${e.message}`),
    };
  }

  /** Uses an already-connected stream socket fd (the native VMM's socketpair). */
  async attachFd(fd: number): Promise<Closable> {
    // Bun.connect accepts `fd` (FdSocketOptions) though its connect() overloads do not list it.
    const s = await Bun.connect({ fd, socket: this.socketOptions() } as unknown as Parameters<typeof Bun.connect>[0]);
    return { close: () => s.end() };
  }

  /** Listens on a unix socket for the VM backend (qemu `-netdev stream,server=off`) to connect. */
  listenUnix(path: string): Closable {
    const l = Bun.listen({ unix: path, socket: this.socketOptions() });
    return { close: () => l.stop(true) };
  }

  /** Connects to a unix socket the VM backend listens on (qemu `-netdev stream,server=on`). */
  async connectUnix(path: string): Promise<Closable> {
    const s = await Bun.connect({ unix: path, socket: this.socketOptions() });
    return { close: () => s.end() };
  }

  // ---- flows from the guest ----

  /** Maps what the guest addressed to what the host connects to; null when it is the gateway's own service. */
  private hostTarget(family: 4 | 6, ip: Uint8Array, port: number, proto: "tcp" | "udp"): Destination {
    const viaHostAlias = family === 4 ? bytesEqual(ip, this.gw4) : bytesEqual(ip, this.gw6);
    const hostIp = viaHostAlias ? (family === 4 ? new Uint8Array([127, 0, 0, 1]) : parseIpv6("::1")) : ip;
    return { proto, ip: ipToString(hostIp), ipBytes: hostIp, port, viaHostAlias };
  }

  private isDns(family: 4 | 6, ip: Uint8Array): boolean {
    return family === 4 ? bytesEqual(ip, this.dns4) : bytesEqual(ip, this.dns6);
  }

  private dnsFilter(): DnsFilter | undefined {
    const p = this.policy;
    if (!p) return undefined;
    return {
      name: (n) => { const d = p.nameDecision(n); return d.allow ? null : p.describe(d); },
      address: (names, ip) => { const d = p.answerDecision(names, ip); return d.allow ? null : p.describe(d); },
      resolved: (ip, names, ttl) => this.pins.pin(ip, names, ttl),
      denied: (m) => this.denials.deny(m.split(":")[0]!, m),
    };
  }

  /** The policy's verdict on one new flow; null when allowed, else why not. */
  private decide(dest: Destination, guestIp: Uint8Array): string | null {
    if (this.policyFn) return this.policyFn(dest) ? null : "policy hook";
    const p = this.policy!;
    const d = p.decide({ proto: dest.proto, ip: dest.ipBytes, port: dest.port, viaHostAlias: dest.viaHostAlias, names: this.pins.names(guestIp) });
    return d.allow ? null : p.describe(d);
  }

  private deny(proto: string, ip: string, port: number | null, why: string, viaHostAlias = false): void {
    const dst = port === null ? ip : ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
    const key = `${proto} ${dst}`;
    this.denials.deny(key, `${key}${viaHostAlias ? " (host loopback via the gateway)" : ""} by ${why}`);
  }

  /** Packets the interface refused on its own (no handler to ask): logged like denials. */
  private blocked(what: "icmp" | "proto" | "fragment" | "multicast" | "conn-limit", family: 4 | 6, dst: Uint8Array, detail: number): void {
    const ip = ipToString(dst);
    if (what === "icmp") {
      const viaHostAlias = false;
      const why = this.policyFn ? null : this.policy!.decide({ proto: "icmp", ip: dst, port: 0, viaHostAlias, names: this.pins.names(dst) });
      this.deny("icmp", ip, null, why && !why.allow ? this.policy!.describe(why) : "echo beyond the gateway is not forwarded");
    } else if (what === "proto") this.deny(`ip proto ${detail}`, ip, null, "only TCP, UDP and ICMP are forwarded");
    else if (what === "conn-limit") this.deny("tcp", ip, detail, `the connection limit (${this.iface.cfg.maxTcpConnections} at once)`);
    else if (what === "fragment") this.deny(`ipv${family} fragment`, ip, null, "fragments are not reassembled");
    else this.deny("udp", ip, detail, "multicast and broadcast are not forwarded (mDNS, LLMNR, SSDP, ...)");
  }

  /** Half-open guest connections (host side opening or handshake unfinished), swept lazily. */
  private halfOpenCount(): number {
    if (this.halfOpen.size >= this.maxHalfOpen) {
      for (const c of this.halfOpen) if (c.state !== "CONNECTING" && c.state !== "SYN_RECEIVED") this.halfOpen.delete(c);
    }
    return this.halfOpen.size;
  }

  private tcpConnect(conn: TcpConnection, d: { family: 4 | 6; ip: Uint8Array; port: number }): boolean {
    if (this.isDns(d.family, d.ip)) {
      if (d.port !== 53) { this.deny("tcp", ipToString(d.ip), d.port, "the DNS address serves only port 53"); return false; }
      conn.upstreamOpened(new DnsTcpUpstream(conn, this.dns));
      return true;
    }
    const dest = this.hostTarget(d.family, d.ip, d.port, "tcp");
    const why = this.decide(dest, d.ip);
    if (why !== null) { this.deny("tcp", dest.viaHostAlias ? ipToString(d.ip) : dest.ip, dest.port, why, dest.viaHostAlias); return false; }
    if (this.halfOpenCount() >= this.maxHalfOpen) {
      this.deny("tcp", dest.ip, dest.port, `the half-open connection limit (${this.maxHalfOpen} connecting at once)`);
      return false;
    }
    this.halfOpen.add(conn);
    if (this.intercept?.ports.includes(dest.port)) {
      this.intercept.handle(acceptAsDuplex(conn), { ip: dest.ip, port: dest.port });
      return true;
    }
    connectHost(conn, dest.ip, dest.port);
    return true;
  }

  private udpFromGuest(family: 4 | 6, src: Uint8Array, srcPort: number, dst: Uint8Array, dstPort: number, payload: Uint8Array): boolean {
    if (this.isDns(family, dst)) {
      if (dstPort !== 53) { this.deny("udp", ipToString(dst), dstPort, "the DNS address serves only port 53"); return false; }
      const query = payload.slice();
      const guest = src.slice();
      const dnsIp = dst.slice();
      this.dns.answer(query, "udp").then((r) => { if (r) this.iface.sendUdp(family, dnsIp, 53, guest, srcPort, r); });
      return true;
    }
    const pub = this.udpPublishedReply(family, dst, dstPort, payload);
    if (pub) return true;
    if (this.isDns(family, dst)) return false;
    const dest = this.hostTarget(family, dst, dstPort, "udp");
    const why = this.decide(dest, dst);
    if (why !== null) { this.deny("udp", dest.viaHostAlias ? ipToString(dst) : dest.ip, dest.port, why, dest.viaHostAlias); return false; }
    if (this.intercept?.ports.includes(dest.port)) {
      this.deny("udp", dest.ip, dest.port, "TLS interception (QUIC on an intercepted port is refused so clients fall back to TCP)");
      return false;
    }
    if (!this.udp.send(family, src, srcPort, dst, dest.ip, dest.port, payload)) {
      this.deny("udp", dest.ip, dest.port, `the UDP flow limit (${this.udp.maxFlows} flows)`);
      return false;
    }
    return true;
  }

  // ---- published ports ----

  private udpPublished = new Map<number, { sock: udp.Socket<"uint8array">; host: string; port: number; last: number }>();
  private udpPublishedPort = 30000;

  private udpPublishedReply(family: 4 | 6, dst: Uint8Array, dstPort: number, payload: Uint8Array): boolean {
    if (!(family === 4 ? bytesEqual(dst, this.gw4) : bytesEqual(dst, this.gw6))) return false;
    const m = this.udpPublished.get(dstPort);
    if (!m) return false;
    m.last = Date.now();
    sendQuietly(m.sock, payload, m.port, m.host);
    return true;
  }

  /** Ingress rules for published ports: the host-side peer and the guest port. */
  private ingressAllowed(proto: "tcp" | "udp", peer: string, guestPort: number): boolean {
    if (!this.policy || (this.policy.ingress.length === 0 && this.policy.ingressDefaultAllow)) return true;
    let ip: Uint8Array;
    try { ip = parseIp(peer.replace(/^::ffff:(\d+\.)/, "$1")); } catch { return false; }
    const d = this.policy.decide({ direction: "ingress", proto, ip, port: guestPort });
    if (!d.allow) this.deny(`ingress ${proto}`, `${peer} → guest`, guestPort, this.policy.describe(d));
    return d.allow;
  }

  /** Binds one published port; each host connection becomes a connection from the gateway to guest:port. */
  async publish(spec: PortSpec): Promise<Closable> {
    const family: 4 | 6 = 4; // guests are reached over IPv4 whatever the host side uses
    try {
      if (spec.proto === "tcp") {
        const l = Bun.listen<TcpConnection | null>({
          hostname: spec.hostIp, port: spec.hostPort, allowHalfOpen: true, data: null,
          socket: {
            ...socketHandlers,
            open: (s) => {
              if (!this.ingressAllowed("tcp", s.remoteAddress, spec.guestPort)) return s.terminate();
              const conn = this.iface.connectToGuest(family, spec.guestPort);
              if (!conn) return s.terminate();
              s.data = conn;
              s.setNoDelay(true);
              conn.openActive(new SocketUpstream(s as Socket<unknown>));
            },
          },
        });
        this.listeners.push(l as TCPSocketListener<unknown>);
        return { close: () => l.stop(true) };
      }
      // UDP: each host peer gets its own gateway-side port so the guest's replies find their way back.
      const peers = new Map<string, number>();
      const sock = await Bun.udpSocket({
        binaryType: "uint8array", hostname: spec.hostIp, port: spec.hostPort,
        socket: {
          data: (s, buf, port, addr) => {
            const k = `${addr}|${port}`;
            let gp = peers.get(k);
            if (gp === undefined && !this.ingressAllowed("udp", addr, spec.guestPort)) return;
            if (gp === undefined) {
              if (peers.size >= 256) return;
              gp = this.udpPublishedPort++;
              peers.set(k, gp);
              this.udpPublished.set(gp, { sock: s, host: addr, port, last: Date.now() });
            }
            this.iface.sendUdp(family, this.gw4, gp, this.iface.cfg.guestIPv4, spec.guestPort, buf);
          },
        },
      });
      this.listeners.push(sock);
      return { close: () => sock.close() };
    } catch (e) {
      throw new NetStackError(`cannot publish ${spec.hostIp}:${spec.hostPort} → guest ${spec.guestPort}/${spec.proto}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Closes every flow, listener and the stream. */
  close(): void {
    this.denials.close();
    this.pcap?.close();
    this.iface.close();
    this.udp.close();
    for (const l of this.listeners) ("stop" in l ? l.stop(true) : l.close());
    this.listeners = [];
    this.encoder?.close();
    this.encoder = null;
  }
}
