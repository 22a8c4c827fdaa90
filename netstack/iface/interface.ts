// The guest's gateway: answers ARP and NDP for the gateway and DNS addresses, replies to pings to
// them, and routes the guest's TCP and UDP to the stack's handlers. Every frame is validated through
// the wire layer first; anything that fails is counted and dropped, never thrown past this class.
import { BROADCAST_MAC, bytesEqual, inPrefix, ipToString, type Mac } from "../wire/address";
import { ArpOp, ArpPacket, ArpRepr } from "../wire/arp";
import { WireError } from "../wire/error";
import { EtherType, EthernetFrame, EthernetRepr, ETH_HEADER_LEN, ETH_DST, ETH_SRC, macAt } from "../wire/ethernet";
import { Icmpv4Packet, Icmpv4Repr, type Icmpv4Repr as Icmpv4ReprT } from "../wire/icmpv4";
import { Icmpv6Packet, Icmpv6Repr, type Icmpv6Repr as Icmpv6ReprT } from "../wire/icmpv6";
import { IpProto, Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN } from "../wire/ipv4";
import { Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN } from "../wire/ipv6";
import { TcpFlag, TcpPacket, TcpRepr } from "../wire/tcp";
import { UdpPacket, UdpRepr, UDP_HEADER_LEN } from "../wire/udp";
import { allocFrame, FRAME_LEN_BYTES } from "../phy/framing";
import { NO_OFFLOAD, VNET_HEADER_LEN, VnetFlag, VnetGso, VnetRepr } from "../wire/virtio-net";
import { TcpConnection, type Endpoint, type TcpConfig, type TcpEnv } from "../tcp/connection";

export interface InterfaceConfig {
  gatewayMac: Mac;
  guestMac?: Mac;
  gatewayIPv4: Uint8Array;
  dnsIPv4: Uint8Array;
  guestIPv4: Uint8Array;
  guestPrefixV4: number;
  gatewayIPv6: Uint8Array;
  dnsIPv6: Uint8Array;
  guestIPv6: Uint8Array;
  guestPrefixV6: number;
  mtu: number;
  tcp: Omit<TcpConfig, "mss">;
  maxTcpConnections: number;
  /** Frames on the stream carry a virtio-net header (checksum offload and TSO both ways). */
  vnetHdr?: boolean;
}

/** Where the interface hands flows; implemented by the stack (proxying, DNS, policy). */
export interface InterfaceHandlers {
  /** A guest SYN for a new connection; call `conn.upstreamOpened` or `conn.upstreamError` later, or return false to refuse (RST). */
  tcpConnect(conn: TcpConnection, dst: { family: 4 | 6; ip: Uint8Array; port: number }): boolean;
  /** A UDP datagram from the guest; return false to answer "administratively prohibited". */
  udp(family: 4 | 6, src: Uint8Array, srcPort: number, dst: Uint8Array, dstPort: number, payload: Uint8Array): boolean;
  /** The link toward the guest can take frames again. */
  linkSend(framed: Uint8Array): void;
  linkFull(): boolean;
  /**
   * Traffic the interface refuses by itself, reported for the denial log: pings beyond the gateway,
   * protocols other than TCP/UDP/ICMP, fragments, multicast/broadcast UDP (detail: the port), and
   * SYNs beyond the connection limit (detail: the port).
   */
  blocked?(what: "icmp" | "proto" | "fragment" | "multicast" | "conn-limit", family: 4 | 6, dst: Uint8Array, detail: number): void;
}

export interface InterfaceStats {
  rxFrames: number; txFrames: number; dropped: number;
  /** Drops by reason (WireError code or a short reason), for tests and `msb` diagnostics. */
  drops: Record<string, number>;
}

const TCP_TICK_MS = 10;

export class Interface {
  guestMac: Mac | null;
  readonly tcp = new Map<string, TcpConnection>();
  readonly stats: InterfaceStats = { rxFrames: 0, txFrames: 0, dropped: 0, drops: {} };
  private timerConns = new Set<TcpConnection>();
  private ackConns = new Set<TcpConnection>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private nextEphemeral = 40000 + Math.floor(Math.random() * 10000);
  private readonly tcpEnv: TcpEnv;
  private readonly gatewayLinkLocal: Uint8Array;
  /** Where the Ethernet frame starts in an outgoing buffer: after the length prefix and any virtio-net header. */
  private readonly F: number;
  /** The current frame's L4 checksum was vouched for by the virtio-net header (offload): skip verifying it. */
  private rxChecksumTrusted = false;

  constructor(readonly cfg: InterfaceConfig, private readonly h: InterfaceHandlers) {
    this.guestMac = cfg.guestMac ?? null;
    this.F = FRAME_LEN_BYTES + (cfg.vnetHdr ? VNET_HEADER_LEN : 0);
    // fe80::2 answers NDP too, so a guest that routes via a link-local next hop still finds us.
    this.gatewayLinkLocal = new Uint8Array(16);
    this.gatewayLinkLocal.set([0xfe, 0x80], 0);
    this.gatewayLinkLocal[15] = cfg.gatewayIPv6[15]!;
    this.tcpEnv = {
      emit: (ep, repr, len, fill, gso) => this.emitTcp(ep, repr, len, fill, gso),
      linkFull: () => this.h.linkFull(),
      wantTimer: (c) => { this.timerConns.add(c); if (c.ackNeeded) this.ackConns.add(c); this.startTimer(); },
      removed: (c) => { if (this.tcp.get(c.key) === c) this.tcp.delete(c.key); this.timerConns.delete(c); this.ackConns.delete(c); },
      now: () => performance.now(),
    };
  }

  private drop(reason: string): void {
    this.stats.dropped++;
    this.stats.drops[reason] = (this.stats.drops[reason] ?? 0) + 1;
  }

  private startTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), TCP_TICK_MS);
  }

  private tick(): void {
    const now = performance.now();
    for (const c of this.timerConns) if (!c.onTimer(now)) this.timerConns.delete(c);
    if (this.timerConns.size === 0 && this.timer) { clearInterval(this.timer); this.timer = null; }
  }

  /** One frame from the guest. Never throws. */
  receive(frame: Uint8Array): void {
    this.stats.rxFrames++;
    try {
      if (this.cfg.vnetHdr) {
        const v = VnetRepr.parse(frame);
        this.rxChecksumTrusted = (v.flags & (VnetFlag.NEEDS_CSUM | VnetFlag.DATA_VALID)) !== 0;
        frame = frame.subarray(VNET_HEADER_LEN);
      }
      this.receiveFrame(frame);
    } catch (e) {
      if (e instanceof WireError) this.drop(e.code);
      else throw e;
    }
  }

  /** After a batch of frames: send the coalesced ACKs (one per connection instead of one per segment). */
  endOfBatch(): void {
    for (const c of this.ackConns) c.flushAck();
    this.ackConns.clear();
  }

  /** The link can take frames again: let every connection send what it held back. */
  linkWritable(): void {
    for (const c of this.tcp.values()) c.output();
  }

  private receiveFrame(buf: Uint8Array): void {
    const eth = EthernetFrame.newChecked(buf);
    // Addresses are compared in place: allocating views per frame shows up in profiles.
    if (!macAt(buf, ETH_DST, this.cfg.gatewayMac) && (buf[ETH_DST]! & 1) === 0) return this.drop("not-for-us");
    if (buf[ETH_SRC]! & 1) return this.drop("multicast-source");
    switch (eth.etherType) {
      case EtherType.ARP: return this.onArp(eth.src, eth.payload);
      case EtherType.IPv4: return this.onIpv4(buf, eth.payload);
      case EtherType.IPv6: return this.onIpv6(eth.src, eth.payload);
      default: return this.drop("ethertype");
    }
  }

  private learn(mac: Mac): void {
    if (!this.guestMac || !bytesEqual(this.guestMac, mac)) this.guestMac = mac.slice();
  }

  /** Learns the guest's MAC from a frame's source field without allocating when it is unchanged. */
  private learnFrom(frame: Uint8Array): void {
    if (!this.guestMac || !macAt(frame, ETH_SRC, this.guestMac)) this.guestMac = frame.slice(ETH_SRC, ETH_SRC + 6);
  }

  // ---- ARP ----

  private onArp(src: Mac, payload: Uint8Array): void {
    const arp = ArpRepr.parse(ArpPacket.newChecked(payload));
    if (!bytesEqual(arp.senderMac, src)) return this.drop("arp-spoof");
    if (bytesEqual(arp.senderIp, this.cfg.guestIPv4)) this.learn(src);
    if (arp.op !== ArpOp.Request) return;
    if (!bytesEqual(arp.targetIp, this.cfg.gatewayIPv4) && !bytesEqual(arp.targetIp, this.cfg.dnsIPv4)) return;
    const framed = allocFrame(this.F - FRAME_LEN_BYTES + ETH_HEADER_LEN + ArpRepr.bufferLen);
    EthernetRepr.emit({ src: this.cfg.gatewayMac, dst: src, etherType: EtherType.ARP }, framed, this.F);
    ArpRepr.emit({ op: ArpOp.Reply, senderMac: this.cfg.gatewayMac, senderIp: arp.targetIp, targetMac: arp.senderMac, targetIp: arp.senderIp },
      framed.subarray(this.F + ETH_HEADER_LEN));
    this.transmit(framed);
  }

  /** Asks the guest for its MAC (needed before the first stack-initiated packet if the guest was silent). */
  private arpForGuest(): void {
    const framed = allocFrame(this.F - FRAME_LEN_BYTES + ETH_HEADER_LEN + ArpRepr.bufferLen);
    EthernetRepr.emit({ src: this.cfg.gatewayMac, dst: BROADCAST_MAC, etherType: EtherType.ARP }, framed, this.F);
    ArpRepr.emit({ op: ArpOp.Request, senderMac: this.cfg.gatewayMac, senderIp: this.cfg.gatewayIPv4, targetMac: new Uint8Array(6), targetIp: this.cfg.guestIPv4 },
      framed.subarray(this.F + ETH_HEADER_LEN));
    this.transmit(framed);
  }

  private transmit(framed: Uint8Array): void {
    this.stats.txFrames++;
    this.h.linkSend(framed);
  }

  // ---- IPv4 ----

  private isLocalV4(a: Uint8Array) {
    return bytesEqual(a, this.cfg.gatewayIPv4) || bytesEqual(a, this.cfg.dnsIPv4);
  }

  private onIpv4(frame: Uint8Array, payload: Uint8Array): void {
    const pkt = Ipv4Packet.newChecked(payload);
    if (pkt.moreFrags || pkt.fragOffset !== 0) {
      this.h.blocked?.("fragment", 4, pkt.buf.slice(16, 20), 0);
      return this.drop("ipv4-fragment");
    }
    const ip = Ipv4Repr.parse(pkt);
    if (!bytesEqual(ip.src, this.cfg.guestIPv4)) return this.drop("ipv4-source");
    this.learnFrom(frame);
    const body = pkt.payload;
    switch (ip.protocol) {
      case IpProto.TCP: return this.onTcp(4, ip.src, ip.dst, body);
      case IpProto.UDP: {
        const u = UdpRepr.parse(UdpPacket.newChecked(body), ip.src, ip.dst, !this.rxChecksumTrusted);
        // No ICMP errors about broadcast or multicast datagrams (RFC 1122 §3.2.2): mDNS, DHCP and
        // the like are dropped quietly.
        if (ip.dst[0]! >= 224 || this.isBroadcastV4(ip.dst)) {
          this.h.blocked?.("multicast", 4, ip.dst, u.dstPort);
          return this.drop("udp-multicast");
        }
        if (!this.h.udp(4, ip.src, u.srcPort, ip.dst, u.dstPort, u.payload)) this.unreachableV4(ip.src, ip.dst, pkt.buf.subarray(0, pkt.totalLen), 13);
        return;
      }
      case IpProto.ICMP: {
        const icmp = Icmpv4Repr.parse(Icmpv4Packet.newChecked(body));
        if (icmp.kind !== "echoRequest") return;
        if (!this.isLocalV4(ip.dst)) {
          this.h.blocked?.("icmp", 4, ip.dst, 0);
          return this.unreachableV4(ip.src, ip.dst, pkt.buf.subarray(0, pkt.totalLen), 13);
        }
        return this.sendIcmpv4(ip.dst, ip.src, { kind: "echoReply", ident: icmp.ident, seq: icmp.seq, data: icmp.data });
      }
      default:
        this.h.blocked?.("proto", 4, ip.dst, ip.protocol);
        return this.unreachableV4(ip.src, ip.dst, pkt.buf.subarray(0, pkt.totalLen), 2);
    }
  }

  /** The guest subnet's directed broadcast address. */
  private isBroadcastV4(a: Uint8Array): boolean {
    const hostBits = 32 - this.cfg.guestPrefixV4;
    if (hostBits <= 0) return false;
    const ip = ((a[0]! << 24) | (a[1]! << 16) | (a[2]! << 8) | a[3]!) >>> 0;
    const mask = hostBits >= 32 ? 0xffffffff : (2 ** hostBits - 1);
    return (ip & mask) >>> 0 === mask && inPrefix(a, this.cfg.guestIPv4, this.cfg.guestPrefixV4);
  }

  /** ICMP destination unreachable with the offending header + 8 bytes (RFC 792), from the address the guest tried. */
  unreachableV4(guest: Uint8Array, dst: Uint8Array, datagram: Uint8Array, code: number): void {
    const data = datagram.subarray(0, Math.min(datagram.length, IPV4_HEADER_LEN + 8 + 40));
    this.sendIcmpv4(dst, guest, { kind: "destUnreachable", code, data });
  }

  private sendIcmpv4(src: Uint8Array, dst: Uint8Array, r: Icmpv4ReprT): void {
    const len = Icmpv4Repr.bufferLen(r);
    const frame = this.ipFrame(4, src, dst, IpProto.ICMP, len);
    if (!frame) return;
    Icmpv4Repr.emit(r, frame.frame, frame.off);
    this.transmit(frame.framed);
  }

  /** Allocates a frame toward the guest with Ethernet and IP headers written; returns where the payload goes. */
  private ipFrame(family: 4 | 6, src: Uint8Array, dst: Uint8Array, proto: number, payloadLen: number) {
    const ipLen = family === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN;
    let dstMac = this.guestMac;
    if (!dstMac) { this.arpForGuest(); dstMac = BROADCAST_MAC; }
    const framed = allocFrame(this.F - FRAME_LEN_BYTES + ETH_HEADER_LEN + ipLen + payloadLen);
    if (this.cfg.vnetHdr) VnetRepr.emit(NO_OFFLOAD, framed, FRAME_LEN_BYTES);
    EthernetRepr.emit({ src: this.cfg.gatewayMac, dst: dstMac, etherType: family === 4 ? EtherType.IPv4 : EtherType.IPv6 }, framed, this.F);
    if (family === 4) Ipv4Repr.emit({ src, dst, protocol: proto, payloadLen, ttl: 64 }, framed, this.F + ETH_HEADER_LEN);
    else Ipv6Repr.emit({ src, dst, nextHeader: proto, payloadLen, hopLimit: 64 }, framed, this.F + ETH_HEADER_LEN);
    return { framed, frame: framed, off: this.F + ETH_HEADER_LEN + ipLen };
  }

  // ---- IPv6 ----

  private isLocalV6(a: Uint8Array) {
    return bytesEqual(a, this.cfg.gatewayIPv6) || bytesEqual(a, this.cfg.dnsIPv6) || bytesEqual(a, this.gatewayLinkLocal);
  }

  private onIpv6(src: Mac, payload: Uint8Array): void {
    const pkt = Ipv6Packet.newChecked(payload);
    const ip = Ipv6Repr.parse(pkt);
    const linkLocal = ip.src[0] === 0xfe && (ip.src[1]! & 0xc0) === 0x80;
    const unspecified = ip.src.every((b) => b === 0);
    const fromGuest = inPrefix(ip.src, this.cfg.guestIPv6, this.cfg.guestPrefixV6);
    if (!fromGuest && !linkLocal && !unspecified) return this.drop("ipv6-source");
    const body = pkt.payload;
    if (ip.nextHeader === IpProto.ICMPv6) return this.onIcmpv6(src, ip.src, ip.dst, ip.hopLimit, body, unspecified);
    if (!fromGuest) return this.drop("ipv6-source");
    this.learn(src);
    switch (ip.nextHeader) {
      case IpProto.TCP: return this.onTcp(6, ip.src, ip.dst, body);
      case IpProto.UDP: {
        const u = UdpRepr.parse(UdpPacket.newChecked(body), ip.src, ip.dst, !this.rxChecksumTrusted);
        if (ip.dst[0] === 0xff) {
          this.h.blocked?.("multicast", 6, ip.dst, u.dstPort);
          return this.drop("udp-multicast");
        }
        if (!this.h.udp(6, ip.src, u.srcPort, ip.dst, u.dstPort, u.payload)) this.unreachableV6(ip.src, ip.dst, pkt.buf.subarray(0, IPV6_HEADER_LEN + ip.payloadLen), 1);
        return;
      }
      default:
        // Extension headers are not followed (hop-by-hop MLD reports are ignored quietly).
        if (ip.nextHeader === 44) this.h.blocked?.("fragment", 6, ip.dst, 0);
        else if (ip.nextHeader !== 0) this.h.blocked?.("proto", 6, ip.dst, ip.nextHeader);
        return this.drop("ipv6-next-header");
    }
  }

  private onIcmpv6(srcMac: Mac, src: Uint8Array, dst: Uint8Array, hopLimit: number, body: Uint8Array, unspecified: boolean): void {
    const icmp = Icmpv6Repr.parse(Icmpv6Packet.newChecked(body), src, dst);
    switch (icmp.kind) {
      case "neighborSolicit": {
        // NDP must arrive with hop limit 255 (RFC 4861 §7.1.1): proof it was not routed.
        if (hopLimit !== 255 || unspecified) return; // DAD probes need no answer: the address is the guest's
        if (!this.isLocalV6(icmp.target)) return;
        const mac = icmp.sourceMac ?? srcMac;
        this.learn(mac);
        return this.sendIcmpv6(icmp.target, src, { kind: "neighborAdvert", target: icmp.target, router: true, solicited: true, override: true, targetMac: this.cfg.gatewayMac }, mac);
      }
      case "routerSolicit": {
        if (hopLimit !== 255) return;
        const allNodes = new Uint8Array([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        return this.sendIcmpv6(this.gatewayLinkLocal, unspecified ? allNodes : src, {
          kind: "routerAdvert", hopLimit: 64, lifetime: 1800, sourceMac: this.cfg.gatewayMac, mtu: this.cfg.mtu,
          prefix: { addr: this.cfg.guestIPv6, len: this.cfg.guestPrefixV6 },
        }, srcMac);
      }
      case "echoRequest": {
        this.learn(srcMac);
        if (!this.isLocalV6(dst)) {
          this.h.blocked?.("icmp", 6, dst, 0);
          return this.unreachableV6(src, dst, new Uint8Array(0), 1);
        }
        return this.sendIcmpv6(dst, src, { kind: "echoReply", ident: icmp.ident, seq: icmp.seq, data: icmp.data });
      }
      default:
        return;
    }
  }

  unreachableV6(guest: Uint8Array, dst: Uint8Array, packet: Uint8Array, code: number): void {
    this.sendIcmpv6(dst, guest, { kind: "destUnreachable", code, data: packet.subarray(0, Math.min(packet.length, 1232 - 48)) });
  }

  private sendIcmpv6(src: Uint8Array, dst: Uint8Array, r: Icmpv6ReprT, dstMac?: Mac): void {
    const len = Icmpv6Repr.bufferLen(r);
    const hop = r.kind === "neighborAdvert" || r.kind === "routerAdvert" ? 255 : 64;
    const framed = allocFrame(this.F - FRAME_LEN_BYTES + ETH_HEADER_LEN + IPV6_HEADER_LEN + len);
    const mac = dstMac ?? this.guestMac ?? BROADCAST_MAC;
    EthernetRepr.emit({ src: this.cfg.gatewayMac, dst: mac, etherType: EtherType.IPv6 }, framed, this.F);
    Ipv6Repr.emit({ src, dst, nextHeader: IpProto.ICMPv6, payloadLen: len, hopLimit: hop }, framed, this.F + ETH_HEADER_LEN);
    Icmpv6Repr.emit(r, framed, this.F + ETH_HEADER_LEN + IPV6_HEADER_LEN, src, dst);
    this.transmit(framed);
  }

  // ---- UDP toward the guest ----

  sendUdp(family: 4 | 6, src: Uint8Array, srcPort: number, dst: Uint8Array, dstPort: number, payload: Uint8Array): void {
    const max = this.cfg.mtu - (family === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN) - UDP_HEADER_LEN;
    if (payload.length > max) return this.drop("udp-too-big-for-guest-mtu");
    const f = this.ipFrame(family, src, dst, IpProto.UDP, UDP_HEADER_LEN + payload.length);
    UdpRepr.emit({ srcPort, dstPort, payload }, f.frame, f.off, src, dst);
    this.transmit(f.framed);
  }

  // ---- TCP ----

  private tcpKey(family: 4 | 6, guestIp: Uint8Array, guestPort: number, localIp: Uint8Array, localPort: number): string {
    return `${family}|${ipToString(guestIp)}|${guestPort}|${ipToString(localIp)}|${localPort}`;
  }

  /** With TSO, segments toward the guest may carry up to this much payload whatever the MTU. */
  private tcpConfig(family: 4 | 6): TcpConfig {
    return { ...this.cfg.tcp, mss: this.mss(family), tsoMax: this.cfg.vnetHdr ? TSO_MAX_PAYLOAD : undefined };
  }

  private mss(family: 4 | 6): number {
    return this.cfg.mtu - (family === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN) - 20;
  }

  private onTcp(family: 4 | 6, src: Uint8Array, dst: Uint8Array, body: Uint8Array): void {
    const seg = TcpRepr.parse(TcpPacket.newChecked(body), src, dst, !this.rxChecksumTrusted);
    const key = this.tcpKey(family, src, seg.srcPort, dst, seg.dstPort);
    let conn = this.tcp.get(key);
    if (conn && seg.flags & TcpFlag.SYN && seg.ack === null && conn.canReuse(seg.seq)) {
      conn.finish();
      conn = undefined;
    }
    if (conn) {
      conn.onSegment(seg);
      if (conn.ackNeeded) this.ackConns.add(conn);
      return;
    }
    if (seg.flags & TcpFlag.RST) return;
    const ep: Endpoint = { family, localIp: dst.slice(), localPort: seg.dstPort, guestIp: src.slice(), guestPort: seg.srcPort };
    if (!(seg.flags & TcpFlag.SYN) || seg.ack !== null) {
      // No connection: RST as RFC 9293 §3.10.7.1 prescribes.
      const len = seg.payload.length + (seg.flags & TcpFlag.FIN ? 1 : 0);
      if (seg.ack !== null) this.emitTcp(ep, { seq: seg.ack, ack: null, flags: TcpFlag.RST, window: 0, options: {} }, 0);
      else this.emitTcp(ep, { seq: 0, ack: (seg.seq + len) >>> 0, flags: TcpFlag.RST, window: 0, options: {} }, 0);
      return;
    }
    if (this.tcp.size >= this.cfg.maxTcpConnections) this.evictTimeWait();
    if (this.tcp.size >= this.cfg.maxTcpConnections) {
      this.drop("tcp-connection-limit");
      this.h.blocked?.("conn-limit", family, dst, seg.dstPort);
      this.emitTcp(ep, { seq: 0, ack: (seg.seq + 1) >>> 0, flags: TcpFlag.RST, window: 0, options: {} }, 0);
      return;
    }
    conn = new TcpConnection(ep, key, this.tcpEnv, this.tcpConfig(family), "CONNECTING");
    conn.acceptSyn(seg);
    this.tcp.set(key, conn);
    if (!this.h.tcpConnect(conn, { family, ip: ep.localIp, port: ep.localPort })) conn.reset(true);
  }

  /** At the connection limit, the oldest TIME_WAIT entry gives way: it only guards against stray old segments. */
  private evictTimeWait(): void {
    for (const c of this.tcp.values()) if (c.state === "TIME_WAIT") { c.finish(); return; }
  }

  /** Opens a connection into the guest (published ports): from the gateway address to guest:port. */
  connectToGuest(family: 4 | 6, guestPort: number): TcpConnection | null {
    if (this.tcp.size >= this.cfg.maxTcpConnections) this.evictTimeWait();
    if (this.tcp.size >= this.cfg.maxTcpConnections) return null;
    const localIp = family === 4 ? this.cfg.gatewayIPv4 : this.cfg.gatewayIPv6;
    const guestIp = family === 4 ? this.cfg.guestIPv4 : this.cfg.guestIPv6;
    for (let i = 0; i < 20000; i++) {
      const port = this.nextEphemeral;
      this.nextEphemeral = this.nextEphemeral >= 60999 ? 40000 : this.nextEphemeral + 1;
      const key = this.tcpKey(family, guestIp, guestPort, localIp, port);
      if (this.tcp.has(key)) continue;
      const conn = new TcpConnection({ family, localIp, localPort: port, guestIp, guestPort }, key, this.tcpEnv, this.tcpConfig(family), "SYN_SENT");
      this.tcp.set(key, conn);
      return conn;
    }
    return null;
  }

  private emitTcp(ep: Endpoint, r: Omit<TcpRepr, "srcPort" | "dstPort" | "payload">, payloadLen: number, fill?: (dst: Uint8Array, off: number) => void, gsoSize = 0): void {
    const repr: TcpRepr = { srcPort: ep.localPort, dstPort: ep.guestPort, seq: r.seq, ack: r.ack, flags: r.flags, window: r.window, options: r.options, payload: EMPTY };
    const hl = TcpRepr.headerLen(repr);
    const f = this.ipFrame(ep.family, ep.localIp, ep.guestIp, IpProto.TCP, hl + payloadLen);
    if (payloadLen && fill) fill(f.frame, f.off + hl);
    const offload = this.cfg.vnetHdr === true;
    if (offload) {
      // The device (or the guest's stack) completes the checksum and, above the guest's MSS, segments.
      const tcpStart = f.off - this.F;
      const gso = gsoSize > 0 && payloadLen > gsoSize;
      VnetRepr.emit({
        flags: VnetFlag.NEEDS_CSUM, gsoType: gso ? (ep.family === 4 ? VnetGso.TCPV4 : VnetGso.TCPV6) : VnetGso.NONE,
        hdrLen: tcpStart + hl, gsoSize: gso ? gsoSize : 0, csumStart: tcpStart, csumOffset: 16,
      }, f.frame, FRAME_LEN_BYTES);
    }
    TcpRepr.emit(repr, f.frame, f.off, ep.localIp, ep.guestIp, payloadLen && fill ? payloadLen : 0, offload);
    this.transmit(f.framed);
  }

  close(): void {
    for (const c of [...this.tcp.values()]) c.reset(false);
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

const EMPTY = new Uint8Array(0);
/** Largest TSO payload: an IP packet stays within 65535 bytes with room for IPv6 and TCP options. */
const TSO_MAX_PAYLOAD = 65535 - 40 - 60;
