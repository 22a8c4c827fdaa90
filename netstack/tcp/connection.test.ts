// TCP state-machine tests against a scripted guest: every segment the connection sends is captured,
// every segment the "guest" sends is built by hand, and time is driven explicitly.
import { describe, expect, test } from "bun:test";
import { TcpFlag, type TcpRepr } from "../wire/tcp";
import { TcpConnection, type TcpEnv, type TcpState, type Upstream } from "./connection";

type Out = Omit<TcpRepr, "srcPort" | "dstPort"> & { payload: Uint8Array };

function setup(opts: { accept?: number; rcvBuf?: number; state?: "CONNECTING" | "SYN_SENT" } = {}) {
  const out: Out[] = [];
  let now = 0;
  let removed = false;
  const env: TcpEnv = {
    emit(_ep, r, len, fill) {
      const payload = new Uint8Array(len);
      if (fill) fill(payload, 0);
      out.push({ ...r, payload });
    },
    linkFull: () => false,
    wantTimer: () => {},
    removed: () => { removed = true; },
    now: () => now,
  };
  const up = {
    written: [] as number[],
    accept: opts.accept ?? Infinity,
    calls: [] as string[],
    write(d: Uint8Array) { const n = Math.min(d.length, this.accept); this.accept -= n; if (n) this.written.push(...d.subarray(0, n)); return n; },
    shutdown() { this.calls.push("shutdown"); }, pause() { this.calls.push("pause"); }, resume() { this.calls.push("resume"); },
    close() { this.calls.push("close"); }, abort() { this.calls.push("abort"); },
  };
  up satisfies Upstream;
  const c = new TcpConnection({ family: 4, localIp: new Uint8Array(4), localPort: 80, guestIp: new Uint8Array(4), guestPort: 4000 }, "k", env,
    { mss: 1460, rcvBuf: opts.rcvBuf ?? 65536, sndBuf: 8000, timeWaitMs: 1000, maxRetries: 3 }, opts.state ?? "CONNECTING");
  const seg = (r: Partial<TcpRepr>): TcpRepr => ({ srcPort: 4000, dstPort: 80, seq: 0, ack: null, flags: 0, window: 1000, options: {}, payload: new Uint8Array(0), ...r });
  return { c, out, up, seg, tick: (ms: number) => { now += ms; c.onTimer(now); }, isRemoved: () => removed };
}

/** A connection the guest opened (ISN 1000), established, guest window 3000 bytes (scale 0), MSS 1000. */
function established(opts: { accept?: number; rcvBuf?: number } = {}) {
  const t = setup(opts);
  t.c.acceptSyn(t.seg({ seq: 1000, flags: TcpFlag.SYN, window: 3000, options: { mss: 1000 } }));
  t.c.upstreamOpened(t.up);
  const synAck = t.out.pop()!;
  expect(synAck.flags).toBe(TcpFlag.SYN);
  expect(synAck.ack).toBe(1001);
  expect(synAck.options.mss).toBe(1460);
  expect(synAck.options.wscale).toBeUndefined(); // the guest offered no scaling, so neither do we
  const iss = synAck.seq;
  t.c.onSegment(t.seg({ seq: 1001, ack: iss + 1, window: 3000 }));
  expect(t.c.state).toBe("ESTABLISHED");
  return { ...t, iss, data: (seq: number, bytes: number[], flags = 0) => t.seg({ seq, ack: t.c.sndNxt, flags, window: 3000, payload: new Uint8Array(bytes) }) };
}

describe("handshake", () => {
  test("window scaling is offered when the guest offers it", () => {
    const t = setup();
    t.c.acceptSyn(t.seg({ seq: 5, flags: TcpFlag.SYN, options: { mss: 9000, wscale: 9, sackPermitted: true } }));
    t.c.upstreamOpened(t.up);
    expect(t.out[0]!.options.wscale).toBe(7);
    expect(t.c.guestMss).toBe(1460); // clamped to our own MSS
    expect(t.c.sndScale).toBe(9);
  });
  test("a lost SYN-ACK is resent on the guest's retransmitted SYN and on timeout; retries end in a reset", () => {
    const t = setup();
    t.c.acceptSyn(t.seg({ seq: 5, flags: TcpFlag.SYN }));
    t.c.upstreamOpened(t.up);
    t.c.onSegment(t.seg({ seq: 5, flags: TcpFlag.SYN }));
    expect(t.out.filter((o) => o.flags === TcpFlag.SYN).length).toBe(2);
    for (let i = 0; i < 10; i++) t.tick(70_000);
    expect(t.c.state).toBe("CLOSED");
    expect(t.up.calls).toContain("abort");
  });
  test("active open (published port): SYN, SYN-ACK, then the upstream is resumed", () => {
    const t = setup({ state: "SYN_SENT" });
    t.c.openActive(t.up);
    const syn = t.out[0]!;
    expect(syn.flags).toBe(TcpFlag.SYN);
    expect(syn.ack).toBeNull();
    t.c.onSegment(t.seg({ seq: 77, ack: syn.seq + 1, flags: TcpFlag.SYN, options: { mss: 1200 } }));
    expect(t.c.state).toBe("ESTABLISHED");
    expect(t.out.at(-1)!.ack).toBe(78);
    expect(t.up.calls).toEqual(["pause", "resume"]);
  });
  test("active open refused by the guest (RST) aborts the host side", () => {
    const t = setup({ state: "SYN_SENT" });
    t.c.openActive(t.up);
    t.c.onSegment(t.seg({ seq: 0, ack: t.out[0]!.seq + 1, flags: TcpFlag.RST }));
    expect(t.c.state).toBe("CLOSED");
    expect(t.up.calls).toContain("abort");
  });
});

describe("receiving from the guest", () => {
  test("out-of-order segments are held, duplicates ignored, the hole's arrival delivers all", () => {
    const t = established();
    t.c.onSegment(t.data(1004, [4, 5, 6]));
    expect(t.up.written).toEqual([]);
    expect(t.out.at(-1)!.ack).toBe(1001); // immediate duplicate ACK for fast retransmit
    t.c.onSegment(t.data(1001, [1, 2, 3]));
    t.c.flushAck();
    expect(t.up.written).toEqual([1, 2, 3, 4, 5, 6]);
    t.c.onSegment(t.data(1001, [1, 2, 3])); // duplicate
    t.c.onSegment(t.data(1003, [3, 4, 5, 6, 7])); // overlapping
    t.c.flushAck();
    expect(t.up.written).toEqual([1, 2, 3, 4, 5, 6, 7]);
    t.c.flushAck();
    expect(t.out.at(-1)!.ack).toBe(1008);
  });
  test("a slow upstream shrinks the window; its drain reopens it with a window update", () => {
    const t = established({ accept: 0, rcvBuf: 4000 });
    t.c.onSegment(t.data(1001, new Array(1000).fill(1)));
    t.c.onSegment(t.data(2001, new Array(1000).fill(2)));
    t.c.flushAck();
    expect(t.out.at(-1)!.window).toBe(2000);
    // Beyond the window: trimmed, not buffered.
    t.c.onSegment(t.data(3001, new Array(3000).fill(3)));
    expect(t.c.pendingBytes).toBe(4000);
    expect(t.c.rcvWindow()).toBe(0);
    t.up.accept = Infinity;
    const before = t.out.length;
    t.c.upstreamDrain();
    expect(t.out.length).toBe(before + 1);
    expect(t.out.at(-1)!.window).toBe(4000);
    expect(t.up.written.length).toBe(4000);
  });
});

describe("sending to the guest", () => {
  test("respects MSS and window; three duplicate ACKs trigger a fast retransmit; RTO goes back to sndUna", () => {
    const t = established();
    t.c.upstreamData(new Uint8Array(5000).fill(9));
    const data = t.out.filter((o) => o.payload.length);
    expect(data.map((d) => d.payload.length)).toEqual([1000, 1000, 1000]); // 3000-byte window
    const first = data[0]!.seq;
    t.c.onSegment(t.seg({ seq: 1001, ack: first + 1000, window: 3000 }));
    expect(t.out.at(-1)!.seq).toBe(first + 3000); // window slid by one segment
    for (let i = 0; i < 3; i++) t.c.onSegment(t.seg({ seq: 1001, ack: first + 1000, window: 3000 }));
    expect(t.out.at(-1)!.seq).toBe(first + 1000); // fast retransmit of the first unacked segment
    t.out.length = 0;
    t.tick(1500);
    expect(t.out[0]!.seq).toBe(first + 1000);
  });
  test("zero window: probes until the guest opens it, then sends", () => {
    const t = established();
    t.c.onSegment(t.seg({ seq: 1001, ack: t.iss + 1, window: 0 }));
    t.c.upstreamData(new Uint8Array(10).fill(1));
    expect(t.out.filter((o) => o.payload.length).length).toBe(0);
    t.out.length = 0;
    t.tick(1100);
    expect(t.out.length).toBe(1);
    expect(t.out[0]!.seq).toBe((t.iss + 1 - 1) >>> 0); // probe outside the window forces an answer
    t.c.onSegment(t.seg({ seq: 1001, ack: t.iss + 1, window: 500 }));
    expect(t.out.at(-1)!.payload.length).toBe(10);
  });
  test("a full send buffer pauses the host side until the guest acknowledges", () => {
    const t = established();
    t.c.upstreamData(new Uint8Array(9000));
    expect(t.up.calls).toContain("pause");
    t.c.onSegment(t.seg({ seq: 1001, ack: t.iss + 1 + 3000, window: 3000 }));
    t.c.onSegment(t.seg({ seq: 1001, ack: t.iss + 1 + 6000, window: 3000 }));
    expect(t.up.calls).toContain("resume");
  });
});

describe("closing", () => {
  test("guest closes first: CLOSE_WAIT, host FIN, LAST_ACK, CLOSED", () => {
    const t = established();
    t.c.onSegment(t.data(1001, [1], TcpFlag.FIN));
    expect(t.c.state).toBe("CLOSE_WAIT");
    expect(t.up.calls).toContain("shutdown");
    t.c.upstreamData(new Uint8Array([7, 7])); // half-close: the host may still send
    t.c.upstreamEnd();
    const fin = t.out.at(-1)!;
    expect(fin.flags & TcpFlag.FIN).toBeTruthy();
    expect(t.c.state).toBe("LAST_ACK");
    t.c.onSegment(t.seg({ seq: 1003, ack: t.c.sndNxt }));
    expect(t.c.state).toBe("CLOSED");
    expect(t.up.calls.at(-1)).toBe("close");
  });
  test("host closes first: FIN_WAIT_1, FIN_WAIT_2, TIME_WAIT re-ACKs a retransmitted FIN, then CLOSED", () => {
    const t = established();
    t.c.upstreamEnd();
    expect(t.c.state).toBe("FIN_WAIT_1");
    t.c.onSegment(t.seg({ seq: 1001, ack: t.c.sndNxt }));
    expect(t.c.state).toBe("FIN_WAIT_2");
    t.c.onSegment(t.seg({ seq: 1001, ack: t.c.sndNxt, flags: TcpFlag.FIN }));
    expect(t.c.state).toBe("TIME_WAIT");
    const n = t.out.length;
    t.c.onSegment(t.seg({ seq: 1001, ack: t.c.sndNxt, flags: TcpFlag.FIN }));
    expect(t.out.length).toBe(n + 1);
    expect(t.c.canReuse(5000)).toBe(true);
    t.tick(1001);
    expect(t.c.state).toBe("CLOSED");
    expect(t.isRemoved()).toBe(true);
  });
  test("simultaneous close goes through CLOSING", () => {
    const t = established();
    t.c.upstreamEnd();
    t.c.onSegment(t.seg({ seq: 1001, ack: t.iss + 1, flags: TcpFlag.FIN }));
    expect(t.c.state).toBe("CLOSING");
    t.c.onSegment(t.seg({ seq: 1002, ack: t.c.sndNxt }));
    expect(t.c.state).toBe("TIME_WAIT");
  });
});

describe("RST in every state", () => {
  const drive: Record<string, (t: ReturnType<typeof established>) => void> = {
    ESTABLISHED: () => {},
    FIN_WAIT_1: (t) => t.c.upstreamEnd(),
    FIN_WAIT_2: (t) => { t.c.upstreamEnd(); t.c.onSegment(t.seg({ seq: 1001, ack: t.c.sndNxt })); },
    CLOSE_WAIT: (t) => t.c.onSegment(t.seg({ seq: 1001, ack: t.c.sndNxt, flags: TcpFlag.FIN })),
    LAST_ACK: (t) => { t.c.onSegment(t.seg({ seq: 1001, ack: t.c.sndNxt, flags: TcpFlag.FIN })); t.c.upstreamEnd(); },
    CLOSING: (t) => { t.c.upstreamEnd(); t.c.onSegment(t.seg({ seq: 1001, ack: t.iss + 1, flags: TcpFlag.FIN })); },
  };
  for (const [state, go] of Object.entries(drive)) {
    test(`${state}: an exact RST aborts, an in-window inexact one gets a challenge ACK, an old one is ignored`, () => {
      const t = established();
      go(t);
      expect(t.c.state).toBe(state as TcpState);
      const rcv = t.c.rcvNxt;
      const n = t.out.length;
      t.c.onSegment(t.seg({ seq: rcv - 5000, flags: TcpFlag.RST }));
      expect(t.out.length).toBe(n);
      if (t.c.rcvWindow() > 10) {
        t.c.onSegment(t.seg({ seq: rcv + 10, flags: TcpFlag.RST }));
        expect(t.out.length).toBe(n + 1);
        expect(t.c.state).toBe(state as TcpState);
      }
      t.c.onSegment(t.seg({ seq: rcv, flags: TcpFlag.RST }));
      expect(t.c.state).toBe("CLOSED");
      expect(t.up.calls).toContain("abort");
    });
  }
  test("SYN_RECEIVED: RST aborts the half-open connection", () => {
    const t = setup();
    t.c.acceptSyn(t.seg({ seq: 5, flags: TcpFlag.SYN }));
    t.c.upstreamOpened(t.up);
    t.c.onSegment(t.seg({ seq: 6, flags: TcpFlag.RST }));
    expect(t.c.state).toBe("CLOSED");
  });
  test("the host resetting resets the guest", () => {
    const t = established();
    t.c.upstreamError();
    expect(t.out.at(-1)!.flags & TcpFlag.RST).toBeTruthy();
    expect(t.c.state).toBe("CLOSED");
  });
});

describe("shared memory budget", () => {
  test("connections together stay within the budget: upstreams pause, windows close, and resume when it frees", async () => {
    const { MemoryBudget } = await import("./budget");
    const budget = new MemoryBudget(10_000);
    const mk = () => {
      const t = setup();
      // Re-create with the budget attached (setup() builds without one).
      const c = new TcpConnection(t.c.ep, "b", (t.c as unknown as { env: TcpEnv }).env,
        { mss: 1460, rcvBuf: 65536, sndBuf: 8000, timeWaitMs: 1000, maxRetries: 3, budget }, "CONNECTING");
      c.acceptSyn(t.seg({ seq: 1000, flags: TcpFlag.SYN, window: 0, options: { mss: 1000 } }));
      c.upstreamOpened(t.up);
      c.onSegment(t.seg({ seq: 1001, ack: c.sndNxt, window: 0 }));
      return { c, up: t.up, seg: t.seg };
    };
    const a = mk(), b = mk();
    a.c.upstreamData(new Uint8Array(7000)); // guest window 0: everything stays queued
    expect(a.up.calls).not.toContain("pause");
    b.c.upstreamData(new Uint8Array(3500));
    expect(budget.used).toBe(10_500);
    expect(b.up.calls).toContain("pause"); // over the shared limit although under its own sndBuf
    expect(a.c.rcvWindow()).toBe(0); // and no connection offers the guest more room
    a.c.onSegment(a.seg({ seq: 1001, ack: a.c.sndUna, window: 8000 })); // a's guest opens its window
    a.c.onSegment(a.seg({ seq: 1001, ack: (a.c.sndUna + 7000) >>> 0, window: 8000 })); // and takes all of a's data
    expect(budget.used).toBe(3500);
    expect(b.up.calls.at(-1)).toBe("resume");
    a.c.reset(false); b.c.reset(false);
    expect(budget.used).toBe(0);
  });
});

test("repeated out-of-order segments are held once and do not close the window", () => {
  const t = established({ rcvBuf: 4000 });
  for (let i = 0; i < 50; i++) t.c.onSegment(t.data(2001, new Array(1000).fill(5)));
  expect(t.c.heldBytes).toBe(1000);
  expect(t.c.rcvWindow()).toBe(3000);
  t.c.onSegment(t.data(1001, new Array(1000).fill(4)));
  t.c.flushAck();
  expect(t.up.written.length).toBe(2000);
});

test("with SACK agreed, ACKs report held out-of-order ranges, the latest first", () => {
  const t = setup();
  t.c.acceptSyn(t.seg({ seq: 1000, flags: TcpFlag.SYN, window: 3000, options: { mss: 1000, sackPermitted: true } }));
  t.c.upstreamOpened(t.up);
  expect(t.out[0]!.options.sackPermitted).toBe(true);
  t.c.onSegment(t.seg({ seq: 1001, ack: t.c.sndNxt, window: 3000 }));
  const d = (seq: number, n: number) => t.seg({ seq, ack: t.c.sndNxt, window: 3000, payload: new Uint8Array(n) });
  t.c.onSegment(d(1101, 100)); // hole 1001..1101
  t.c.onSegment(d(1401, 100)); // hole 1201..1401
  t.c.onSegment(d(1601, 100)); // hole 1501..1601
  expect(t.out.at(-1)!.options.sack).toEqual([[1601, 1701], [1101, 1201], [1401, 1501]]);
  t.c.onSegment(d(1201, 50)); // joins the first range
  const ack = t.out.at(-1)!;
  expect(ack.ack).toBe(1001);
  expect(ack.options.sack).toEqual([[1101, 1251], [1401, 1501], [1601, 1701]]);
  t.c.onSegment(d(1251, 150)); // fills up to 1401
  t.c.onSegment(d(1001, 100));
  t.c.flushAck();
  expect(t.out.at(-1)!.ack).toBe(1501);
  expect(t.out.at(-1)!.options.sack).toEqual([[1601, 1701]]);
});

test("the guest's SACK blocks steer retransmission to the holes only", () => {
  const t = setup();
  t.c.acceptSyn(t.seg({ seq: 1000, flags: TcpFlag.SYN, window: 20000, options: { mss: 1000, sackPermitted: true } }));
  t.c.upstreamOpened(t.up);
  const iss = t.out[0]!.seq;
  t.c.onSegment(t.seg({ seq: 1001, ack: iss + 1, window: 20000 }));
  t.c.upstreamData(new Uint8Array(8000));
  const base = iss + 1;
  expect(t.out.filter((o) => o.payload.length).length).toBe(8);
  t.out.length = 0;
  // Segments 0 and 3 lost; the guest SACKs 1-2 and 4-7.
  const dup = (sack: Array<[number, number]>) => t.c.onSegment(t.seg({ seq: 1001, ack: base, window: 20000, options: { sack } }));
  dup([[base + 1000, base + 3000]]);
  dup([[base + 4000, base + 8000], [base + 1000, base + 3000]]);
  expect(t.out.length).toBe(0);
  dup([[base + 4000, base + 8000], [base + 1000, base + 3000]]);
  expect(t.out.map((o) => o.seq - base)).toEqual([0, 3000]);
  // Partial ACK up to the second hole: nothing left to resend but it, which already went.
  t.c.onSegment(t.seg({ seq: 1001, ack: base + 3000, window: 20000, options: { sack: [[base + 4000, base + 8000]] } }));
  t.c.onSegment(t.seg({ seq: 1001, ack: base + 8000, window: 20000 }));
  expect(t.c.sendQ.length).toBe(0);
  expect(t.out.length).toBe(2);
});

test("a guest RST while the host connection is still opening abandons it", () => {
  const t = setup();
  t.c.acceptSyn(t.seg({ seq: 5, flags: TcpFlag.SYN }));
  t.c.onSegment(t.seg({ seq: 99, flags: TcpFlag.RST })); // not in sequence: ignored
  expect(t.c.state).toBe("CONNECTING");
  t.c.onSegment(t.seg({ seq: 6, flags: TcpFlag.RST }));
  expect(t.c.state).toBe("CLOSED");
  expect(t.out.length).toBe(0);
  expect(t.isRemoved()).toBe(true);
});
