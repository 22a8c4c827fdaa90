// One TCP connection between the guest and the stack, joined to an Upstream (a host socket, a DNS
// handler, or a published port's accepted socket). The stack is the guest's peer: it acknowledges
// only what the upstream has taken or can hold within the advertised window, so a slow upstream
// closes the guest's window and a slow guest pauses the upstream — memory stays bounded both ways.
import { TcpFlag, type TcpOptions, type TcpRepr } from "../wire/tcp";
import { MemoryBudget } from "./budget";
import { ByteQueue } from "./byte-queue";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq";

/** What a connection is joined to on the host side. */
export interface Upstream {
  /** Offers bytes; returns how many were taken (the rest is offered again after `drain`). */
  write(data: Uint8Array): number;
  /** The guest will send no more (FIN): half-close toward the host. */
  shutdown(): void;
  /** Stop / restart delivering data (send buffer toward the guest is full / has room). */
  pause(): void;
  resume(): void;
  /** Orderly close after both directions finished. */
  close(): void;
  /** Abortive close (the guest reset the connection or it timed out). */
  abort(): void;
}

export type TcpState =
  | "CONNECTING" // guest SYN seen, host connection being opened
  | "SYN_SENT" | "SYN_RECEIVED" | "ESTABLISHED"
  | "FIN_WAIT_1" | "FIN_WAIT_2" | "CLOSING" | "TIME_WAIT"
  | "CLOSE_WAIT" | "LAST_ACK" | "CLOSED";

export interface Endpoint { family: 4 | 6; localIp: Uint8Array; localPort: number; guestIp: Uint8Array; guestPort: number }

/** What a connection needs from the interface that owns it. */
export interface TcpEnv {
  /** Emits a segment toward the guest; `fill` writes `payloadLen` bytes of payload at the given offset. */
  emit(ep: Endpoint, repr: Omit<TcpRepr, "srcPort" | "dstPort" | "payload">, payloadLen: number, fill?: (dst: Uint8Array, off: number) => void, gsoSize?: number): void;
  /** True while the link toward the guest is backed up; the connection waits for `onLinkWritable`. */
  linkFull(): boolean;
  /** The connection's timers changed: include it in the timer sweep. */
  wantTimer(c: TcpConnection): void;
  removed(c: TcpConnection): void;
  now(): number;
}

export interface TcpConfig {
  /** Our MSS toward the guest (MTU - 40 for IPv4, - 60 for IPv6). */
  mss: number;
  /** Receive buffer per connection: caps the advertised window and what we hold for a slow upstream. */
  rcvBuf: number;
  /** Send buffer per connection: host bytes held for the guest; above it the upstream is paused. */
  sndBuf: number;
  timeWaitMs: number;
  /** Give up after this many retransmissions of the same data without progress. */
  maxRetries: number;
  /** Shared by all connections of a stack; absent in unit tests (then only the per-connection bounds apply). */
  budget?: MemoryBudget;
  /** With segmentation offload, the largest payload per segment toward the guest (else the guest's MSS). */
  tsoMax?: number;
}

export const RTO_MIN_MS = 200;
export const RTO_MAX_MS = 60_000;
export const RTO_INITIAL_MS = 1_000;
export const WSCALE = 7;
/** Out-of-order segments held per connection (their bytes also count against the window). */
const OOO_MAX_SEGMENTS = 4096;
/** SACK blocks per ACK: 3 fit beside no other options (RFC 2018 §3). */
const MAX_SACK_BLOCKS = 3;

export class TcpConnection {
  state: TcpState;
  upstream: Upstream | null = null;
  // send side: stack → guest
  iss: number;
  sndUna: number;
  sndNxt: number;
  sndWnd = 0;
  private sndWl1 = 0;
  private sndWl2 = 0;
  sndScale = 0;
  guestMss = 536;
  readonly sendQ = new ByteQueue();
  private finQueued = false;
  private finSent = false;
  private upstreamPaused = false;
  private dupAcks = 0;
  // receive side: guest → stack
  rcvNxt = 0;
  rcvScale = 0;
  private pending: Uint8Array[] = []; // accepted from the guest, not yet taken by the upstream
  pendingBytes = 0;
  private ooo: Array<{ seq: number; data: Uint8Array; fin: boolean }> = [];
  private oooBytes = 0;
  private guestFin = false;
  private shutdownSent = false;
  ackNeeded = false;
  // timers (absolute ms, 0 = off)
  rtoAt = 0;
  persistAt = 0;
  timeWaitAt = 0;
  private rto = RTO_INITIAL_MS;
  private srtt = 0;
  private rttvar = 0;
  private rttSeq: number | null = null;
  private rttStart = 0;
  private retries = 0;
  private persistBackoff = 0;
  // guest options seen on its SYN
  private guestWscale: number | undefined;
  /** Both sides agreed on SACK: our ACKs tell the guest which out-of-order data we hold (RFC 2018). */
  private sackOk = false;
  private lastOooSeq = 0;
  /** What the guest reported holding beyond sndUna (merged, sorted), and loss-recovery state. */
  private sacked: Array<[number, number]> = [];
  private inRecovery = false;
  private recoverEnd = 0;
  private rexmitNext = 0;
  private accounted = 0; // bytes currently charged to the shared budget
  private readonly retryResume = () => this.tryResume();

  constructor(
    readonly ep: Endpoint,
    readonly key: string,
    private readonly env: TcpEnv,
    private readonly cfg: TcpConfig,
    state: "CONNECTING" | "SYN_SENT",
  ) {
    this.state = state;
    this.iss = (Math.random() * 0x1_0000_0000) >>> 0;
    this.sndUna = this.iss;
    this.sndNxt = this.iss;
  }

  // ---- opening ----

  /** Guest-initiated: records the guest's SYN; the SYN-ACK waits for `upstreamOpened`. */
  acceptSyn(seg: TcpRepr): void {
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.applySynOptions(seg.options, seg.window);
  }

  private applySynOptions(o: TcpOptions, window: number): void {
    this.guestMss = Math.max(64, Math.min(o.mss ?? 536, this.cfg.mss));
    this.guestWscale = o.wscale;
    this.sackOk = o.sackPermitted === true;
    if (o.wscale !== undefined) { this.sndScale = o.wscale; this.rcvScale = WSCALE; }
    this.sndWnd = window; // SYN windows are never scaled
  }

  /** The host side is connected: answer the guest's SYN. */
  upstreamOpened(up: Upstream): void {
    this.upstream = up;
    if (this.state !== "CONNECTING") return;
    this.state = "SYN_RECEIVED";
    this.sendSyn();
  }

  /** Stack-initiated (published port): send our SYN to the guest. */
  openActive(up: Upstream): void {
    this.upstream = up;
    up.pause(); // nothing to deliver until the guest accepts
    this.upstreamPaused = true;
    this.sendSyn();
  }

  private sendSyn(): void {
    const isSynAck = this.state === "SYN_RECEIVED";
    const options: TcpOptions = { mss: this.cfg.mss };
    if (!isSynAck || this.guestWscale !== undefined) options.wscale = WSCALE;
    if (!isSynAck || this.sackOk) options.sackPermitted = true;
    this.env.emit(this.ep, {
      seq: this.iss, ack: isSynAck ? this.rcvNxt : null, flags: TcpFlag.SYN,
      window: Math.min(this.cfg.rcvBuf, 0xffff), options,
    }, 0);
    this.sndNxt = seqAdd(this.iss, 1);
    this.armRto();
  }

  // ---- segment arrival (RFC 9293 §3.10.7) ----

  onSegment(seg: TcpRepr): void {
    switch (this.state) {
      case "CONNECTING":
        // The guest gave up before the host answered: drop the attempt (the host socket is
        // terminated when it opens). Retransmitted SYNs just wait for the outcome.
        if (seg.flags & TcpFlag.RST && seg.seq === this.rcvNxt) this.reset(false);
        return;
      case "SYN_SENT":
        return this.onSegmentSynSent(seg);
      case "CLOSED":
        return;
    }
    if (this.state === "SYN_RECEIVED" && seg.flags & TcpFlag.SYN && seg.ack === null) {
      if (seqAdd(seg.seq, 1) === this.rcvNxt) this.sendSyn(); // our SYN-ACK was lost
      return;
    }
    const segLen = seg.payload.length + (seg.flags & TcpFlag.SYN ? 1 : 0) + (seg.flags & TcpFlag.FIN ? 1 : 0);
    if (!this.acceptable(seg.seq, segLen)) {
      if (seg.flags & TcpFlag.RST) return;
      // With our window closed, the guest's ACKs (and window updates) still count (RFC 9293 §3.10.7.4).
      if (seg.seq === this.rcvNxt && seg.ack !== null && this.state !== "SYN_RECEIVED" && this.processAck(seg)) { this.output(); this.sync(); }
      this.sendAck();
      return;
    }
    if (seg.flags & TcpFlag.RST) {
      // RFC 5961 §3.2: only an exact match resets; anything else in-window gets a challenge ACK.
      if (seg.seq === this.rcvNxt || this.state === "SYN_RECEIVED") return this.reset(false);
      return this.sendAck();
    }
    if (seg.flags & TcpFlag.SYN) {
      if (this.state === "TIME_WAIT") return; // handled by the interface (reuse)
      return this.sendAck(); // RFC 5961 §4: challenge ACK
    }
    if (seg.ack === null) return;
    if (this.state === "SYN_RECEIVED") {
      if (seg.ack !== this.sndNxt) return this.sendRst(seg.ack);
      this.state = "ESTABLISHED";
      this.sndUna = seg.ack;
      this.setWindow(seg);
      this.sndWl1 = seg.seq; this.sndWl2 = seg.ack;
      this.stopRto();
      this.retries = 0;
      this.rto = RTO_INITIAL_MS;
    } else if (!this.processAck(seg)) return;
    if (seg.payload.length || seg.flags & TcpFlag.FIN) this.processData(seg);
    this.output();
    this.sync();
  }

  private onSegmentSynSent(seg: TcpRepr): void {
    if (seg.ack !== null && seg.ack !== this.sndNxt) {
      if (!(seg.flags & TcpFlag.RST)) this.sendRst(seg.ack);
      return;
    }
    if (seg.flags & TcpFlag.RST) { if (seg.ack !== null) this.reset(false); return; }
    if (!(seg.flags & TcpFlag.SYN) || seg.ack === null) return; // simultaneous open is not offered to guests
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.applySynOptions(seg.options, seg.window);
    this.sndUna = seg.ack;
    this.sndWl1 = seg.seq; this.sndWl2 = seg.ack;
    this.state = "ESTABLISHED";
    this.stopRto();
    this.retries = 0;
    this.sendAck();
    this.upstreamPaused = false;
    this.upstream?.resume();
    this.output();
  }

  private acceptable(seq: number, len: number): boolean {
    const wnd = this.rcvWindow();
    const right = seqAdd(this.rcvNxt, wnd);
    if (len === 0) return wnd === 0 ? seq === this.rcvNxt : seqGe(seq, this.rcvNxt) && seqLt(seq, right);
    if (wnd === 0) return false;
    const end = seqAdd(seq, len - 1);
    return (seqGe(seq, this.rcvNxt) && seqLt(seq, right)) || (seqGe(end, this.rcvNxt) && seqLt(end, right));
  }

  private setWindow(seg: TcpRepr): void {
    this.sndWnd = seg.window << this.sndScale;
  }

  /** Returns false when the segment must be dropped. */
  private processAck(seg: TcpRepr): boolean {
    const ack = seg.ack!;
    if (seqGt(ack, this.sndNxt)) { this.sendAck(); return false; } // acks what we never sent
    if (seqLt(ack, this.sndUna)) return true; // old duplicate: ignore the ack, keep the data
    const acked = seqDiff(ack, this.sndUna);
    const oldWnd = this.sndWnd;
    if (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack))) {
      this.setWindow(seg);
      this.sndWl1 = seg.seq; this.sndWl2 = ack;
    }
    if (this.sackOk && seg.options.sack) this.addSack(seg.options.sack);
    if (acked > 0) {
      const finAcked = this.finSent && ack === this.sndNxt;
      this.sendQ.consume(Math.min(acked, this.sendQ.length));
      this.sndUna = ack;
      this.dupAcks = 0;
      this.pruneSack();
      if (this.inRecovery) {
        if (seqGe(ack, this.recoverEnd)) this.inRecovery = false;
        else this.retransmitHoles(); // partial ACK: the next hole is lost too (RFC 6582 / 6675)
      }
      this.retries = 0;
      if (this.rttSeq !== null && seqGe(ack, this.rttSeq)) { this.sampleRtt(this.env.now() - this.rttStart); this.rttSeq = null; }
      if (this.sndUna === this.sndNxt) this.stopRto(); else this.armRto(true);
      if (this.upstreamPaused && this.canResume() && this.state !== "SYN_SENT") {
        this.upstreamPaused = false;
        this.upstream?.resume();
      }
      if (finAcked) {
        if (this.state === "FIN_WAIT_1") this.state = "FIN_WAIT_2";
        else if (this.state === "CLOSING") this.enterTimeWait();
        else if (this.state === "LAST_ACK") { this.finish(); return false; }
      }
    } else if (seg.payload.length === 0 && !(seg.flags & TcpFlag.FIN) && this.sndNxt !== this.sndUna && this.sndWnd === oldWnd) {
      // Three duplicate ACKs: the guest lost a segment; resend the holes without waiting for the timer.
      if (++this.dupAcks === 3 && !this.inRecovery) {
        this.inRecovery = true;
        this.recoverEnd = this.sndNxt;
        this.rexmitNext = this.sndUna;
        this.retransmitHoles();
      } else if (this.inRecovery && this.sacked.length) this.retransmitHoles();
    }
    if (this.sndWnd > 0) { this.persistAt = 0; this.persistBackoff = 0; }
    return true;
  }

  private processData(seg: TcpRepr): void {
    if (this.state !== "ESTABLISHED" && this.state !== "FIN_WAIT_1" && this.state !== "FIN_WAIT_2") {
      // After the guest's FIN there is nothing more to receive; a retransmitted FIN just gets an ACK.
      this.ackNeeded = true;
      this.env.wantTimer(this);
      return;
    }
    let data = seg.payload;
    let seq = seg.seq;
    let fin = (seg.flags & TcpFlag.FIN) !== 0;
    // Trim what we already have.
    const dup = seqDiff(this.rcvNxt, seq);
    if (dup > 0) {
      if (dup > data.length) { data = data.subarray(data.length); fin = fin && dup === data.length + 1; }
      else data = data.subarray(dup);
      seq = this.rcvNxt;
    }
    // Trim what lies beyond the window (the guest must not exceed it; we do not buffer past it).
    const wnd = this.rcvWindow();
    const room = seqDiff(seqAdd(this.rcvNxt, wnd), seq);
    if (data.length > room) { data = data.subarray(0, Math.max(0, room)); fin = false; }
    if (seq !== this.rcvNxt) {
      // Out of order: keep it (bounded by the window) and send a duplicate ACK at once so the guest
      // fast-retransmits the hole.
      if (data.length) this.holdOutOfOrder(seq, data, fin);
      this.sendAck();
      return;
    }
    this.deliver(data, fin);
    // Pull whatever the hole was hiding.
    while (this.ooo.length) {
      const s = this.ooo[0]!;
      const d = seqDiff(this.rcvNxt, s.seq);
      if (d < 0) break;
      this.ooo.shift();
      this.oooBytes -= s.data.length;
      if (d < s.data.length || (d === s.data.length && s.fin)) this.deliver(s.data.subarray(Math.min(d, s.data.length)), s.fin);
    }
    this.ackNeeded = true;
    this.env.wantTimer(this);
  }

  /** Keeps an out-of-order segment, sorted by sequence; repeats are not stored twice (they would eat the window they count in). */
  private holdOutOfOrder(seq: number, data: Uint8Array, fin: boolean): void {
    const q = this.ooo;
    let lo = 0, hi = q.length;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (seqLt(q[mid]!.seq, seq)) lo = mid + 1; else hi = mid; }
    if (q[lo] && q[lo]!.seq === seq && q[lo]!.data.length >= data.length) return;
    if (q.length >= OOO_MAX_SEGMENTS) return;
    q.splice(lo, 0, { seq, data: data.slice(), fin });
    this.oooBytes += data.length;
    this.lastOooSeq = seq;
  }

  /** SACK blocks for the held out-of-order data, the one holding the latest arrival first (RFC 2018 §4). */
  private sackBlocks(): Array<[number, number]> | undefined {
    if (!this.sackOk || this.ooo.length === 0) return undefined;
    const blocks: Array<[number, number]> = [];
    for (const s of this.ooo) {
      const end = seqAdd(s.seq, s.data.length);
      const last = blocks[blocks.length - 1];
      if (last && seqLe(s.seq, last[1])) { if (seqGt(end, last[1])) last[1] = end; }
      else blocks.push([s.seq, end]);
    }
    const i = blocks.findIndex(([l, r]) => seqGe(this.lastOooSeq, l) && seqLt(this.lastOooSeq, r));
    if (i > 0) blocks.unshift(...blocks.splice(i, 1));
    return blocks.slice(0, MAX_SACK_BLOCKS);
  }

  private deliver(data: Uint8Array, fin: boolean): void {
    if (this.guestFin) return;
    if (data.length) {
      this.rcvNxt = seqAdd(this.rcvNxt, data.length);
      // Held until the end of the frame batch, then written to the upstream in one call: one
      // syscall per batch instead of per segment. Frames are views into received chunks, which the
      // link hands over for good (NetLink.receive); small segments are copied anyway so a few bytes
      // never pin a large chunk.
      this.pending.push(data.length >= 2048 ? data : data.slice());
      this.pendingBytes += data.length;
    }
    if (fin) {
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      this.guestFin = true;
      this.ooo = [];
      this.oooBytes = 0;
      if (this.state === "ESTABLISHED") this.state = "CLOSE_WAIT";
      else if (this.state === "FIN_WAIT_1") this.state = this.finSent && this.sndUna === this.sndNxt ? "TIME_WAIT" : "CLOSING";
      else if (this.state === "FIN_WAIT_2") this.state = "TIME_WAIT";
      if (this.state === "TIME_WAIT") this.enterTimeWait();
      this.flushPending();
    }
  }

  /** Bytes we can still accept: the buffer minus what the upstream has not yet taken. */
  rcvWindow(): number {
    const own = this.cfg.rcvBuf - this.pendingBytes - this.oooBytes;
    // Under memory pressure the shared budget caps every window (which may shrink it: guests cope by probing).
    const shared = this.cfg.budget ? this.cfg.budget.room : own;
    return Math.max(0, Math.min(own, shared, 0xffff << this.rcvScale));
  }

  // ---- upstream events ----

  /** Data from the host for the guest. */
  upstreamData(data: Uint8Array): void {
    if (this.finQueued || this.state === "CLOSED") return;
    this.sendQ.push(data);
    this.sync();
    if (!this.upstreamPaused && (this.sendQ.length >= this.cfg.sndBuf || this.cfg.budget?.exhausted)) {
      this.upstreamPaused = true;
      this.upstream?.pause();
      if (this.cfg.budget?.exhausted) this.cfg.budget.wait(this.retryResume);
    }
    this.output();
  }

  /** The host finished sending: FIN toward the guest after the queued data. */
  upstreamEnd(): void {
    if (this.finQueued || this.state === "CLOSED") return;
    this.finQueued = true;
    if (this.state === "SYN_SENT") return this.reset(true);
    this.output();
  }

  /** The upstream can take more of what the guest sent. */
  upstreamDrain(): void {
    this.flushPending();
  }

  /** The host connection failed or was reset: reset the guest's connection too. */
  upstreamError(): void {
    if (this.state === "CLOSED" || this.state === "TIME_WAIT") return;
    this.reset(true);
  }

  private flushPending(): void {
    const before = this.rcvWindow();
    // Coalesce small segments into one write; large ones are written as they are (no copy).
    if (this.pending.length > 1 && this.pendingBytes < this.pending.length * 16384) {
      const all = new Uint8Array(this.pendingBytes);
      let o = 0;
      for (const p of this.pending) { all.set(p, o); o += p.length; }
      this.pending = [all];
    }
    while (this.pending.length && this.upstream) {
      const d = this.pending[0]!;
      const n = Math.max(0, this.upstream.write(d));
      this.pendingBytes -= n;
      if (n < d.length) { this.pending[0] = d.subarray(n); break; }
      this.pending.shift();
    }
    if (this.pending.length === 0 && this.guestFin && !this.shutdownSent) {
      this.shutdownSent = true;
      this.upstream?.shutdown();
      this.maybeFinish();
    }
    this.sync();
    // Window update once at least a segment's (or a quarter buffer's) room reopened (RFC 9293 §3.8.6.2.2).
    const after = this.rcvWindow();
    if (after > before && (before < this.guestMss || after - before >= this.cfg.rcvBuf / 4)) this.sendAck();
  }

  // ---- output ----

  /** Sends whatever the window and the link allow. */
  output(): void {
    if (this.state === "CLOSED" || this.state === "CONNECTING" || this.state === "SYN_SENT" || this.state === "SYN_RECEIVED") return;
    const mss = Math.max(this.guestMss, this.cfg.tsoMax ?? 0);
    for (;;) {
      if (this.env.linkFull()) return;
      const inFlight = seqDiff(this.sndNxt, this.sndUna) - (this.finSent ? 1 : 0);
      const unsent = this.sendQ.length - inFlight;
      const wndRoom = this.sndWnd - inFlight;
      if (unsent > 0 && wndRoom > 0) {
        const n = Math.min(unsent, wndRoom, mss);
        const from = inFlight;
        this.emitData(this.sndNxt, from, n, n === unsent);
        if (this.rttSeq === null) { this.rttSeq = seqAdd(this.sndNxt, n); this.rttStart = this.env.now(); }
        this.sndNxt = seqAdd(this.sndNxt, n);
        this.armRto();
        continue;
      }
      if (unsent > 0 && this.sndWnd === 0 && this.sndNxt === this.sndUna && !this.persistAt) {
        // Zero window with data waiting: probe until the guest opens it.
        this.persistBackoff = 0;
        this.persistAt = this.env.now() + this.rto;
        this.env.wantTimer(this);
      }
      if (unsent === 0 && this.finQueued && !this.finSent && this.pendingFinState()) {
        this.finSent = true;
        this.emitFlags(this.sndNxt, TcpFlag.FIN);
        this.sndNxt = seqAdd(this.sndNxt, 1);
        this.armRto();
      }
      break;
    }
  }

  /** Moves to the FIN-sending state; false if a FIN cannot be sent now. */
  private pendingFinState(): boolean {
    if (this.state === "ESTABLISHED") this.state = "FIN_WAIT_1";
    else if (this.state === "CLOSE_WAIT") this.state = "LAST_ACK";
    else if (this.state !== "FIN_WAIT_1" && this.state !== "LAST_ACK" && this.state !== "CLOSING") return false;
    return true;
  }

  private emitData(seq: number, from: number, len: number, push: boolean): void {
    this.ackNeeded = false;
    const q = this.sendQ;
    this.env.emit(this.ep, { seq, ack: this.rcvNxt, flags: push ? TcpFlag.PSH : 0, window: this.advertisedWindow(), options: {} },
      len, (dst, off) => q.copyTo(dst, off, from, len), this.guestMss);
  }

  private emitFlags(seq: number, flags: number): void {
    this.ackNeeded = false;
    const sack = this.sackBlocks();
    this.env.emit(this.ep, { seq, ack: this.rcvNxt, flags, window: this.advertisedWindow(), options: sack ? { sack } : {} }, 0);
  }

  private advertisedWindow(): number {
    const w = this.rcvWindow() >>> this.rcvScale;
    return Math.min(w, 0xffff);
  }

  sendAck(): void {
    if (this.state === "CLOSED" || this.state === "CONNECTING") return;
    this.emitFlags(this.sndNxt, 0);
  }

  private sendRst(seq: number): void {
    this.env.emit(this.ep, { seq, ack: null, flags: TcpFlag.RST, window: 0, options: {} }, 0);
  }

  /** End of a frame batch: hand the batch's data to the upstream, then send the coalesced ACK. */
  flushAck(): void {
    if (this.pendingBytes && this.state !== "CLOSED") this.flushPending();
    if (this.ackNeeded) this.sendAck();
  }

  /** Merges SACK blocks that lie within what is in flight into the scoreboard. */
  private addSack(blocks: Array<[number, number]>): void {
    for (const [l, r] of blocks) {
      if (!seqLt(l, r) || seqLe(r, this.sndUna) || seqGt(r, this.sndNxt)) continue; // stale or bogus
      this.sacked.push([seqLt(l, this.sndUna) ? this.sndUna : l, r]);
    }
    this.sacked.sort((a, b) => seqDiff(a[0], b[0]));
    const merged: Array<[number, number]> = [];
    for (const b of this.sacked) {
      const last = merged[merged.length - 1];
      if (last && seqLe(b[0], last[1])) { if (seqGt(b[1], last[1])) last[1] = b[1]; }
      else merged.push([b[0], b[1]]);
    }
    this.sacked = merged.slice(0, 64);
  }

  private pruneSack(): void {
    if (!this.sacked.length) return;
    this.sacked = this.sacked.filter(([, r]) => seqGt(r, this.sndUna)).map(([l, r]) => [seqLt(l, this.sndUna) ? this.sndUna : l, r]);
  }

  /**
   * Resends what the guest is missing. With SACK: every not-yet-resent hole below the highest
   * SACKed byte (the link is local, so no congestion window holds this back); without: the first
   * unacknowledged segment (NewReno).
   */
  private retransmitHoles(): void {
    if (!this.sacked.length) { this.retransmitFirst(); return; }
    const highest = this.sacked[this.sacked.length - 1]![1];
    let p = seqLt(this.rexmitNext, this.sndUna) ? this.sndUna : this.rexmitNext;
    let sent = 0;
    while (seqLt(p, highest) && sent < 64 && !this.env.linkFull()) {
      const blk = this.sacked.find(([l, r]) => seqGe(p, l) && seqLt(p, r));
      if (blk) { p = blk[1]; continue; }
      const next = this.sacked.find(([l]) => seqGt(l, p));
      const len = Math.min(this.guestMss, next ? seqDiff(next[0], p) : seqDiff(highest, p), this.sendQ.length - seqDiff(p, this.sndUna));
      if (len <= 0) break;
      this.emitData(p, seqDiff(p, this.sndUna), len, false);
      p = seqAdd(p, len);
      sent++;
    }
    this.rexmitNext = p;
    this.rttSeq = null;
  }

  private retransmitFirst(): void {
    const inFlight = seqDiff(this.sndNxt, this.sndUna) - (this.finSent ? 1 : 0);
    const n = Math.min(inFlight, this.guestMss, this.sendQ.length);
    if (n > 0) this.emitData(this.sndUna, 0, n, false);
    else if (this.finSent) this.emitFlags(this.sndUna, TcpFlag.FIN);
    this.rttSeq = null; // Karn: no samples from retransmitted data
  }

  // ---- timers ----

  private armRto(restart = false): void {
    if (this.rtoAt && !restart) return;
    this.rtoAt = this.env.now() + this.rto;
    this.env.wantTimer(this);
  }
  private stopRto(): void {
    this.rtoAt = 0;
  }

  private sampleRtt(ms: number): void {
    if (this.srtt === 0) { this.srtt = ms; this.rttvar = ms / 2; }
    else { this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - ms); this.srtt = 0.875 * this.srtt + 0.125 * ms; }
    this.rto = Math.min(RTO_MAX_MS, Math.max(RTO_MIN_MS, this.srtt + 4 * this.rttvar));
  }

  /** Runs due timers; returns true while the connection still needs the sweep. */
  onTimer(now: number): boolean {
    if (this.state === "CLOSED") return false;
    if (this.timeWaitAt && now >= this.timeWaitAt) { this.finish(); return false; }
    if (this.rtoAt && now >= this.rtoAt) {
      this.rtoAt = 0;
      if (++this.retries > this.cfg.maxRetries) { this.reset(true); return false; }
      this.rto = Math.min(RTO_MAX_MS, this.rto * 2);
      this.rttSeq = null;
      if (this.state === "SYN_SENT" || this.state === "SYN_RECEIVED") this.sendSyn();
      else {
        // Go back to the first unacknowledged byte; output() resends from the queue. SACK
        // information is dropped: the guest may have discarded what it reported (RFC 2018 §8).
        this.sndNxt = this.sndUna;
        this.sacked = [];
        this.inRecovery = false;
        this.finSent = false;
        this.dupAcks = 0;
        if (this.sndWnd === 0 && this.sendQ.length) this.sendProbe();
        this.output();
        if (this.sndNxt !== this.sndUna) this.armRto();
      }
    }
    if (this.persistAt && now >= this.persistAt) {
      if (this.sndWnd === 0 && this.sendQ.length > seqDiff(this.sndNxt, this.sndUna)) {
        this.sendProbe();
        this.persistBackoff = Math.min(this.persistBackoff + 1, 6);
        this.persistAt = now + Math.min(RTO_MAX_MS, this.rto << this.persistBackoff);
      } else this.persistAt = 0;
    }
    return this.rtoAt !== 0 || this.persistAt !== 0 || this.timeWaitAt !== 0 || this.ackNeeded;
  }

  /** A zero-window probe: an ACK one below sndNxt is outside the guest's window and makes it answer with its window. */
  private sendProbe(): void {
    this.emitFlags(seqAdd(this.sndNxt, -1), 0);
  }

  private enterTimeWait(): void {
    this.state = "TIME_WAIT";
    this.stopRto();
    this.timeWaitAt = this.env.now() + this.cfg.timeWaitMs;
    this.env.wantTimer(this);
    this.maybeFinish();
  }

  /** Once both directions are done, release the upstream (the entry itself may linger in TIME_WAIT). */
  private maybeFinish(): void {
    if (this.state === "TIME_WAIT" && this.shutdownSent) this.upstream?.close();
  }

  /** True if a new SYN may take over this 4-tuple (RFC 9293 §3.6.1: seq beyond what we saw). */
  canReuse(synSeq: number): boolean {
    return this.state === "TIME_WAIT" && seqGt(synSeq, this.rcvNxt);
  }

  /** Resets the connection; `toGuest` also sends a RST to the guest. */
  reset(toGuest: boolean): void {
    if (this.state === "CLOSED") return;
    if (toGuest && this.state !== "CONNECTING" && this.state !== "TIME_WAIT")
      this.env.emit(this.ep, { seq: this.sndNxt, ack: this.rcvNxt, flags: TcpFlag.RST, window: 0, options: {} }, 0);
    else if (toGuest && this.state === "CONNECTING")
      this.env.emit(this.ep, { seq: 0, ack: this.rcvNxt, flags: TcpFlag.RST, window: 0, options: {} }, 0);
    this.state = "CLOSED";
    this.upstream?.abort();
    this.release();
  }

  /** Orderly end of everything. */
  finish(): void {
    if (this.state === "CLOSED") return;
    this.state = "CLOSED";
    this.upstream?.close();
    this.release();
  }

  private release(): void {
    this.upstream = null;
    this.sendQ.clear();
    this.pending = [];
    this.pendingBytes = 0;
    this.ooo = [];
    this.oooBytes = 0;
    this.rtoAt = this.persistAt = this.timeWaitAt = 0;
    this.sync();
    this.cfg.budget?.cancel(this.retryResume);
    this.env.removed(this);
  }

  /** Charges the change in held bytes to the shared budget. */
  private sync(): void {
    const b = this.cfg.budget;
    if (!b) return;
    const held = this.heldBytes;
    if (held !== this.accounted) { b.add(held - this.accounted); this.accounted = held; }
  }

  private canResume(): boolean {
    return this.sendQ.length < this.cfg.sndBuf / 2 && !(this.cfg.budget?.exhausted ?? false);
  }

  /** Budget waiter: resumes the upstream if this connection's own queue allows it too. */
  private tryResume(): boolean {
    if (this.state === "CLOSED") return true;
    if (!this.upstreamPaused || this.state === "SYN_SENT") return !this.upstreamPaused;
    if (!this.canResume()) return this.sendQ.length >= this.cfg.sndBuf / 2; // our own ack will resume us
    this.upstreamPaused = false;
    this.upstream?.resume();
    return true;
  }

  /** Bytes held for this connection (both directions), for the memory bound tests. */
  get heldBytes(): number {
    return this.sendQ.length + this.pendingBytes + this.oooBytes;
  }
}
