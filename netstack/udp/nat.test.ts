// UDP NAT with real host sockets on loopback: replies come back to the right guest flow, only
// from peers that flow talked to; flows are capped and expire when idle.
import { afterAll, expect, test } from "bun:test";
import { parseIpv4 } from "../wire/address";
import { UdpNat } from "./nat";

const echo = await Bun.udpSocket({ hostname: "127.0.0.1", socket: { data(s, b, port, addr) { s.send(b, port, addr); } } });
afterAll(() => echo.close());
const GW = parseIpv4("10.0.2.2"), GUEST = parseIpv4("10.0.2.15");

function nat(o: { idleMs?: number; maxFlows?: number } = {}) {
  const got: Array<{ src: string; srcPort: number; guestPort: number; data: string }> = [];
  const n = new UdpNat({
    idleMs: o.idleMs ?? 60_000, maxFlows: o.maxFlows ?? 16, maxQueued: 4,
    toGuest: (_f, src, srcPort, _g, guestPort, p) => got.push({ src: src.join("."), srcPort, guestPort, data: new TextDecoder().decode(p) }),
  });
  return { n, got };
}
const until = async (f: () => boolean) => { for (let i = 0; i < 200 && !f(); i++) await Bun.sleep(10); };

test("replies reach the flow that sent, from the address the guest used", async () => {
  const { n, got } = nat();
  n.send(4, GUEST, 5001, GW, "127.0.0.1", echo.port, new TextEncoder().encode("a"));
  n.send(4, GUEST, 5002, GW, "127.0.0.1", echo.port, new TextEncoder().encode("b"));
  await until(() => got.length === 2);
  expect(got.sort((x, y) => x.guestPort - y.guestPort)).toEqual([
    { src: "10.0.2.2", srcPort: echo.port, guestPort: 5001, data: "a" },
    { src: "10.0.2.2", srcPort: echo.port, guestPort: 5002, data: "b" },
  ]);
  n.close();
});

test("datagrams from peers the flow never addressed are dropped", async () => {
  const { n, got } = nat();
  n.send(4, GUEST, 5003, GW, "127.0.0.1", echo.port, new TextEncoder().encode("x"));
  await until(() => got.length === 1);
  // Find the flow's host port by having it address a spy socket, then send from a socket it never addressed.
  const stranger = await Bun.udpSocket({ hostname: "127.0.0.1" });
  const flowPort = await new Promise<number>((resolve) => {
    const spy = Bun.udpSocket({ hostname: "127.0.0.1", socket: { data(_s, _b, port) { resolve(port); } } });
    spy.then((s) => { n.send(4, GUEST, 5003, GW, "127.0.0.1", s.port, new TextEncoder().encode("who")); setTimeout(() => s.close(), 500); });
  });
  stranger.send("intruder", flowPort, "127.0.0.1");
  await Bun.sleep(100);
  expect(got.map((g) => g.data)).toEqual(["x"]);
  stranger.close();
  n.close();
});

test("flows are capped (oldest evicted) and expire when idle", async () => {
  const { n } = nat({ maxFlows: 3, idleMs: 200 });
  for (let p = 6000; p < 6010; p++) n.send(4, GUEST, p, GW, "127.0.0.1", echo.port, new Uint8Array([1]));
  expect(n.size).toBe(3);
  await Bun.sleep(1500);
  expect(n.size).toBe(0);
  n.close();
});
