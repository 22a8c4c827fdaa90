// NetStack wiring tests without root: a socketpair fd (as the native VMM hands over) and a unix
// socket (as qemu -netdev stream connects to) carry framed ARP and ping exchanges; a corrupt stream
// is closed with a clear message; the guest configuration matches the options.
import { afterAll, expect, test } from "bun:test";
import { dlopen, FFIType, ptr } from "bun:ffi";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NetStack } from "./stack";
import { GUEST4, GUEST_MAC, GW4, GW_MAC } from "./test/fuzz";
import { ArpPacket, ArpRepr } from "./wire/arp";
import { EthernetFrame, EthernetRepr } from "./wire/ethernet";
import { Icmpv4Packet, Icmpv4Repr } from "./wire/icmpv4";
import { Ipv4Packet, Ipv4Repr } from "./wire/ipv4";

const dir = mkdtempSync(join(tmpdir(), "msb-netstack-stack-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function framed(frame: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + frame.length);
  new DataView(out.buffer).setUint32(0, frame.length);
  out.set(frame, 4);
  return out;
}
function arpRequest(): Uint8Array {
  const f = new Uint8Array(14 + 28);
  EthernetRepr.emit({ src: GUEST_MAC, dst: new Uint8Array(6).fill(0xff), etherType: 0x0806 }, f);
  ArpRepr.emit({ op: 1, senderMac: GUEST_MAC, senderIp: GUEST4, targetMac: new Uint8Array(6), targetIp: GW4 }, f.subarray(14));
  return f;
}
function ping(): Uint8Array {
  const icmp = { kind: "echoRequest" as const, ident: 9, seq: 1, data: new TextEncoder().encode("abc") };
  const len = Icmpv4Repr.bufferLen(icmp);
  const f = new Uint8Array(14 + 20 + len);
  EthernetRepr.emit({ src: GUEST_MAC, dst: GW_MAC, etherType: 0x0800 }, f);
  Ipv4Repr.emit({ src: GUEST4, dst: GW4, protocol: 1, payloadLen: len, ttl: 64 }, f, 14);
  Icmpv4Repr.emit(icmp, f, 34);
  return f;
}
function checkReplies(stream: Uint8Array) {
  const frames: Uint8Array[] = [];
  for (let o = 0; o + 4 <= stream.length; ) {
    const n = new DataView(stream.buffer, stream.byteOffset).getUint32(o);
    frames.push(stream.subarray(o + 4, o + 4 + n));
    o += 4 + n;
  }
  expect(frames.length).toBe(2);
  const arp = ArpRepr.parse(ArpPacket.newChecked(EthernetFrame.newChecked(frames[0]!).payload));
  expect(arp.op).toBe(2);
  expect([...arp.senderMac]).toEqual([...GW_MAC]);
  const ip = Ipv4Packet.newChecked(EthernetFrame.newChecked(frames[1]!).payload);
  expect(Ipv4Repr.parse(ip).protocol).toBe(1);
  expect(Icmpv4Repr.parse(Icmpv4Packet.newChecked(ip.payload))).toMatchObject({ kind: "echoReply", ident: 9, seq: 1 });
}

test("attachFd: frames over a socketpair (the native VMM's net channel)", async () => {
  const libc = dlopen("libc.so.6", {
    socketpair: { args: [FFIType.i32, FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
    write: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
    recv: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i64 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
  });
  const fds = new Int32Array(2);
  expect(libc.symbols.socketpair(1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0, ptr(fds))).toBe(0);
  const stack = new NetStack();
  const net = await stack.attachFd(fds[0]!);
  const req = new Uint8Array([...framed(arpRequest()), ...framed(ping())]);
  expect(Number(libc.symbols.write(fds[1]!, ptr(req), req.length))).toBe(req.length);
  const buf = new Uint8Array(4096);
  let got = 0;
  for (let i = 0; i < 50 && got < 2 * 4 + 42 + 45; i++) {
    await Bun.sleep(20);
    const n = Number(libc.symbols.recv(fds[1]!, ptr(buf, got), buf.length - got, 0x40 /* MSG_DONTWAIT */));
    if (n > 0) got += n;
  }
  checkReplies(buf.subarray(0, got));
  net.close();
  stack.close();
  libc.symbols.close(fds[1]!);
});

test("listenUnix: the VM backend connects; a corrupt length closes the stream with a reason", async () => {
  const logs: string[] = [];
  const stack = new NetStack({ log: (m) => logs.push(m) });
  const path = join(dir, "net.sock");
  const l = stack.listenUnix(path);
  let got = new Uint8Array(0);
  const { promise: closed, resolve } = Promise.withResolvers<void>();
  const s = await Bun.connect({ unix: path, socket: {
    data(_s, d) { const n = new Uint8Array(got.length + d.length); n.set(got); n.set(d, got.length); got = n; },
    close() { resolve(); },
  } });
  s.write(new Uint8Array([...framed(arpRequest()), ...framed(ping())]));
  for (let i = 0; i < 50 && got.length < 95; i++) await Bun.sleep(20);
  checkReplies(got);
  s.write(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
  await closed;
  expect(logs.join("\n")).toMatch(/frame length 4294967295 is outside/);
  l.close();
  stack.close();
});

test("guestConfig matches the options; bad options are refused with the reason", () => {
  const s = new NetStack({ mtu: 65520 });
  expect(s.guestConfig()).toEqual({
    mtu: 65520,
    ipv4: { address: "10.0.2.15", prefixLength: 24, gateway: "10.0.2.2" },
    ipv6: { address: "fd6d:7362::15", prefixLength: 64, gateway: "fd6d:7362::2" },
    nameservers: ["10.0.2.3", "fd6d:7362::3"],
    hosts: [{ name: "host.msb.internal", address: "10.0.2.2" }],
  });
  s.close();
  expect(() => new NetStack({ mtu: 70000 })).toThrow(/mtu 70000 is outside 576..65520/);
  expect(() => new NetStack({ guestIPv4: "10.0.2.300/24" })).toThrow(/not a dotted quad/);
  expect(() => new NetStack({ publishedPorts: ["x:80"] })).toThrow(/published port "x:80"/);
});

test("resolvedFor: host aliases map to host loopback; other names only through this stack's DNS answers", () => {
  const stack = new NetStack({ hostAliases: ["host.msb.internal", "db.local"] });
  expect(stack.resolvedFor("host.msb.internal", "127.0.0.1")).toBe(true);
  expect(stack.resolvedFor("DB.local.", "::1")).toBe(true);
  expect(stack.resolvedFor("host.msb.internal", "44.44.44.44")).toBe(false);
  expect(stack.resolvedFor("api.example.com", "127.0.0.1")).toBe(false);
  expect(stack.resolvedFor("api.example.com", "not an address")).toBe(false);
});
