import { describe, expect, test } from "bun:test";
import * as net from "node:net";
import * as tls from "node:tls";
import { MAX_CLIENT_HELLO_LEN, parseClientHello } from "./clienthello.ts";

/** The first bytes a real TLS client (node:tls in Bun) sends for `servername`. */
async function captureHello(servername?: string, alpn?: string[]): Promise<Uint8Array> {
  let resolve!: (b: Uint8Array) => void;
  const got = new Promise<Uint8Array>((r) => (resolve = r));
  const srv = net.createServer((s) => {
    let buf: Buffer = Buffer.alloc(0);
    s.on("data", (d) => {
      buf = Buffer.concat([buf, d as Buffer]);
      const r = parseClientHello(buf);
      if (r.status !== "need-more") {
        resolve(new Uint8Array(buf));
        s.destroy();
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const c = tls.connect({ host: "127.0.0.1", port: (srv.address() as net.AddressInfo).port, servername, ALPNProtocols: alpn, rejectUnauthorized: false });
  c.on("error", () => {});
  const hello = await got;
  c.destroy();
  srv.close();
  return hello;
}

/** Re-cuts one handshake record into several records of at most `size` bytes of payload. */
function refragment(hello: Uint8Array, size: number): Uint8Array {
  const payload = hello.subarray(5, 5 + ((hello[3]! << 8) | hello[4]!));
  const out: number[] = [];
  for (let i = 0; i < payload.length; i += size) {
    const part = payload.subarray(i, i + size);
    out.push(22, 3, 1, part.length >> 8, part.length & 0xff, ...part);
  }
  return new Uint8Array(out);
}

describe("ClientHello parser", () => {
  test("reads SNI and ALPN from a real client's hello", async () => {
    const hello = await captureHello("API.example.com", ["h2", "http/1.1"]);
    const r = parseClientHello(hello);
    expect(r).toEqual({ status: "ok", hello: { serverName: "api.example.com", alpn: ["h2", "http/1.1"], consumed: hello.length } });
  });

  test("a hello without SNI parses with no server name", async () => {
    const hello = await captureHello(undefined);
    const r = parseClientHello(hello);
    expect(r.status).toBe("ok");
    if (r.status === "ok") expect(r.hello.serverName).toBeUndefined();
  });

  test("every truncation asks for more, never errors or throws", async () => {
    const hello = await captureHello("a.test");
    for (let n = 0; n < hello.length; n++) expect(parseClientHello(hello.subarray(0, n)).status).toBe("need-more");
  });

  test("a hello split over many small records is reassembled, and every prefix of it asks for more", async () => {
    const hello = await captureHello("split.example.org");
    const frag = refragment(hello, 37);
    const r = parseClientHello(frag);
    expect(r.status).toBe("ok");
    if (r.status === "ok") {
      expect(r.hello.serverName).toBe("split.example.org");
      expect(r.hello.consumed).toBe(frag.length);
    }
    for (let n = 0; n < frag.length; n++) expect(parseClientHello(frag.subarray(0, n)).status).toBe("need-more");
  });

  test("hostile headers are refused with a reason", () => {
    expect(parseClientHello(Buffer.from("GET / HTTP/1.1\r\n\r\n"))).toMatchObject({ status: "invalid", reason: expect.stringContaining("not handshake") });
    expect(parseClientHello(new Uint8Array([22, 3, 1, 0x40, 0x01]))).toMatchObject({ status: "invalid", reason: expect.stringContaining("record length") });
    expect(parseClientHello(new Uint8Array([22, 3, 1, 0, 0]))).toMatchObject({ status: "invalid" });
    expect(parseClientHello(new Uint8Array([22, 9, 1, 0, 4, 1, 0, 0, 0]))).toMatchObject({ status: "invalid", reason: expect.stringContaining("version") });
    // A ServerHello (type 2) where a ClientHello belongs.
    expect(parseClientHello(new Uint8Array([22, 3, 1, 0, 4, 2, 0, 0, 0]))).toMatchObject({ status: "invalid", reason: expect.stringContaining("not ClientHello") });
    // A handshake length beyond the cap is refused before any of it is buffered.
    const big = MAX_CLIENT_HELLO_LEN + 1;
    expect(parseClientHello(new Uint8Array([22, 3, 1, 0, 4, 1, big >> 16, (big >> 8) & 0xff, big & 0xff]))).toMatchObject({ status: "invalid", reason: expect.stringContaining("exceeds") });
  });

  test("lengths that overrun their container are refused, not read past", async () => {
    const hello = await captureHello("overrun.test");
    // Session id length byte: after record(5) + handshake header(4) + version(2) + random(32).
    const sidAt = 5 + 4 + 2 + 32;
    const bad = hello.slice();
    bad[sidAt] = 200;
    expect(parseClientHello(bad)).toMatchObject({ status: "invalid", reason: expect.stringContaining("session id") });
    // Handshake length smaller than the body: the parser sees a truncated hello.
    const short = hello.slice();
    short[5 + 3] = 10;
    short[5 + 2] = 0;
    short[5 + 1] = 0;
    expect(parseClientHello(short)).toMatchObject({ status: "invalid", reason: expect.stringContaining("only 10 left") });
  });

  test("SNI that is not a DNS name, or repeated, is refused", () => {
    const mk = (names: Uint8Array[], dupExt = false) => {
      const list = names.flatMap((n) => [0, n.length >> 8, n.length & 0xff, ...n]);
      const ext = [0, 0, (list.length + 2) >> 8, (list.length + 2) & 0xff, list.length >> 8, list.length & 0xff, ...list];
      const exts = dupExt ? [...ext, ...ext] : ext;
      const body = [3, 3, ...new Array(32).fill(7), 0, 0, 2, 0x13, 0x01, 1, 0, exts.length >> 8, exts.length & 0xff, ...exts];
      const hs = [1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff, ...body];
      return new Uint8Array([22, 3, 1, hs.length >> 8, hs.length & 0xff, ...hs]);
    };
    const enc = (s: string) => new TextEncoder().encode(s);
    expect(parseClientHello(mk([enc("ok.test")]))).toMatchObject({ status: "ok", hello: { serverName: "ok.test" } });
    expect(parseClientHello(mk([enc("evil\r\nhost")]))).toMatchObject({ status: "invalid", reason: expect.stringContaining("not a valid DNS") });
    expect(parseClientHello(mk([enc("a/b")]))).toMatchObject({ status: "invalid" });
    expect(parseClientHello(mk([enc("a".repeat(254))]))).toMatchObject({ status: "invalid", reason: expect.stringContaining("outside") });
    expect(parseClientHello(mk([enc("a.test"), enc("b.test")]))).toMatchObject({ status: "invalid", reason: expect.stringContaining("two") });
    expect(parseClientHello(mk([enc("a.test")], true))).toMatchObject({ status: "invalid", reason: expect.stringContaining("repeats") });
  });

  test("random corruption of a real hello never throws", async () => {
    const hello = await captureHello("fuzz.example.com", ["http/1.1"]);
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const outcomes = new Set<string>();
    for (let i = 0; i < 5000; i++) {
      const b = hello.slice();
      const flips = 1 + Math.floor(rnd() * 4);
      for (let f = 0; f < flips; f++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      const r = parseClientHello(b.subarray(0, Math.floor(rnd() * (b.length + 1))));
      outcomes.add(r.status);
    }
    expect(outcomes).toEqual(new Set(["ok", "invalid", "need-more"]));
  });
});
