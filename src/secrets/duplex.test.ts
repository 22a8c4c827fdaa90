// interceptTls on plain in-memory node:stream Duplex objects, as the netstack will hand it
// (no kernel socket on the guest side), with a node:tls client on the other end.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Duplex } from "node:stream";
import * as tls from "node:tls";
import { type Rig, startRig, UPSTREAM_IP } from "./harness.ts";
import { interceptTls } from "./intercept.ts";

/** Two Duplex ends joined in memory: what one writes, the other reads. */
function duplexPair(): [Duplex, Duplex] {
  let a!: Duplex, b!: Duplex;
  const mk = (peer: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk, _e, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
    });
  a = mk(() => b);
  b = mk(() => a);
  return [a, b];
}

const TOKEN = "duplex-REAL-token-42";
let rig: Rig;
beforeAll(async () => {
  rig = await startRig([{ name: "TOKEN", value: TOKEN, allow: ["api.test"] }]);
});
afterAll(() => rig?.stop());

async function exchange(request: (port: number) => string, servername = "api.test") {
  const [guestEnd, relayEnd] = duplexPair();
  const done = interceptTls(relayEnd, { ip: UPSTREAM_IP, port: rig.port }, rig.policy);
  const ca = await Bun.file(rig.msbCaFile).text();
  const c = tls.connect({ socket: guestEnd, servername, ca });
  let got = "";
  c.on("data", (d) => (got += d));
  await new Promise<void>((r, j) => {
    c.once("secureConnect", () => r());
    c.once("error", j);
  });
  c.write(request(rig.port));
  await new Promise<void>((r) => c.once("end", () => r()));
  c.end();
  return { got, result: await done };
}

describe("interceptTls over in-memory Duplex streams", () => {
  test("substitutes and relays the response back", async () => {
    const { got, result } = await exchange((p) => `GET /dup HTTP/1.1\r\nHost: api.test:${p}\r\nX-K: $MSB_TOKEN\r\nConnection: close\r\n\r\n`);
    expect(got).toStartWith("HTTP/1.1 200");
    expect(rig.seen.at(-1)?.headers["x-k"]).toBe(TOKEN);
    expect(got).not.toContain(TOKEN);
    expect(result).toMatchObject({ mode: "intercepted", serverName: "api.test", requests: [{ method: "GET", substituted: ["TOKEN"] }] });
  });

  test("blocks toward a host the secret does not allow", async () => {
    const { got, result } = await exchange((p) => `GET / HTTP/1.1\r\nHost: evil.test:${p}\r\nX-K: $MSB_TOKEN\r\n\r\n`, "evil.test");
    expect(got).toStartWith("HTTP/1.1 403 Forbidden");
    expect(result.stop?.reason).toBe("secret TOKEN is not allowed for host evil.test");
  });

  test("a guest reset while the relay dials upstream resolves the flow without an unhandled error", async () => {
    const [guestEnd, relayEnd] = duplexPair();
    // The "intercepted" line is logged just before the relay waits for the upstream handshake
    // (the guest offers h2): the guest side fails right then (the netstack reporting an RST).
    const policy = { ...rig.policy, log: (l: string) => l.endsWith(": intercepted") && relayEnd.destroy(new Error("connection reset by guest")) };
    const done = interceptTls(relayEnd, { ip: UPSTREAM_IP, port: rig.port }, policy);
    const c = tls.connect({ socket: guestEnd, servername: "api.test", ALPNProtocols: ["h2", "http/1.1"], rejectUnauthorized: false });
    c.on("error", () => {});
    const result = await Promise.race([done, Bun.sleep(8000).then(() => "hung" as const)]);
    expect(result).not.toBe("hung");
    c.destroy();
  });

  test("a guest that never sends a ClientHello is dropped after the timeout", async () => {
    const [guestEnd, relayEnd] = duplexPair();
    const t = performance.now();
    const result = await interceptTls(relayEnd, { ip: UPSTREAM_IP, port: rig.port }, { ...rig.policy, helloTimeoutMs: 200 });
    expect(result).toMatchObject({ mode: "refused", error: "no ClientHello within 200 ms" });
    expect(performance.now() - t).toBeGreaterThanOrEqual(190);
    guestEnd.destroy();
  });

  test("a guest that closes mid-ClientHello is refused", async () => {
    const [guestEnd, relayEnd] = duplexPair();
    const done = interceptTls(relayEnd, { ip: UPSTREAM_IP, port: rig.port }, rig.policy);
    guestEnd.write(Buffer.from([22, 3, 1, 0, 200, 1, 0]));
    guestEnd.end();
    expect(await done).toMatchObject({ mode: "refused", error: "guest closed the connection before a complete ClientHello" });
  });
});
