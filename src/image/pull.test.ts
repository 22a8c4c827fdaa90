// Pulls from a real docker-registry on loopback (images built here, pushed with skopeo): auth
// flows, media types, compressions, platform selection, and every failure leaving the cache as
// it was. Needs docker-registry, skopeo and fsck.erofs (Debian packages).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { saveCredentials } from "./auth.ts";
import { ImageError } from "./errors.ts";
import { busyboxEntries, have, skopeo, skopeoPush, startRegistry, writeOciLayout, type TestRegistry, type WrittenLayout } from "./harness.ts";
import { tarToErofs } from "./layer.ts";
import { pullImage, ensureImage, type PullEvent, type PullOptions } from "./pull.ts";
import { sha256Hex } from "./registry.ts";
import { ImageStore } from "./store.ts";
import type { TarWriteEntry } from "./tarwriter.ts";

const missing = ["docker-registry", "skopeo", "fsck.erofs"].filter((c) => !have(c));
const d = describe.skipIf(missing.length > 0);
if (missing.length) test.skip(`registry tests need ${missing.join(", ")} (apt install docker-registry skopeo erofs-utils)`, () => {});

let work: string;
let basicReg: TestRegistry;
let tokenReg: TestRegistry;
let layout: WrittenLayout;
let dockerLayout: WrittenLayout;
/** Manifest digest of test/busybox:v1 as the registries hold it. */
let pushed: string;

const featureLayer: TarWriteEntry[] = [
  { path: "data/", type: "dir" },
  { path: "data/big.bin", data: new Uint8Array(3 << 20).map((_, i) => (i * 31) & 0xff) },
  { path: "data/hard", type: "hardlink", linkname: "data/big.bin" },
  { path: "data/" + "long-".repeat(50) + "name", data: "pax" },
  { path: "data/cap", data: "x", xattrs: { "security.capability": new Uint8Array(20).fill(1) } },
  { path: "dev/", type: "dir" },
  { path: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
  { path: "dev/fifo", type: "fifo" },
];
const whiteoutLayer: TarWriteEntry[] = [
  { path: "etc/.wh.group", data: "" },
  { path: "data/.wh..wh..opq", data: "" },
  { path: "data/fresh", data: "fresh" },
];

function home(): string {
  return mkdtempSync(join(work, "home-"));
}

/** Everything in the published cache (not tmp/), with hashes, to prove nothing changed. */
function snapshot(store: ImageStore): string {
  const out: string[] = [];
  const dir = join(store.root, "layers");
  for (const f of readdirSync(dir).sort()) out.push(`layers/${f}:${sha256Hex(readFileSync(join(dir, f)))}`);
  // The index (image records and references) lives in the state database.
  for (const image of store.list()) out.push(`image ${image.id} ${image.references.join(",")} ${sha256Hex(new TextEncoder().encode(JSON.stringify(store.record(image.id))))}`);
  return out.join("\n");
}

async function expectError(p: Promise<unknown>, code: string, msg: RegExp): Promise<ImageError> {
  let err: unknown;
  try { await p; } catch (e) { err = e; }
  expect(err).toBeInstanceOf(ImageError);
  expect((err as Error).message).toMatch(msg);
  expect((err as ImageError).code).toBe(code as ImageError["code"]);
  return err as ImageError;
}

function fsckOk(path: string) {
  const p = Bun.spawnSync(["fsck.erofs", path], { stdout: "pipe", stderr: "pipe" });
  expect(p.exitCode).toBe(0);
}

/** A proxy in front of the registry that can inject faults per request. */
function faultProxy(reg: TestRegistry, fault: (path: string, n: number, req: Request) => "500" | "429" | "truncate" | "hang" | "corrupt" | Response | Promise<Response | undefined> | undefined) {
  let n = 0;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(req) {
      const url = new URL(req.url);
      const f = await fault(url.pathname, n++, req);
      if (f instanceof Response) return f;
      if (f === "500") return new Response("boom", { status: 500 });
      if (f === "429") return new Response("slow down", { status: 429, headers: { "retry-after": "0" } });
      if (f === "hang") return new Promise<Response>(() => {});
      const headers = new Headers(req.headers);
      headers.delete("host");
      const up = await fetch(`http://${reg.host}${url.pathname}${url.search}`, { headers, redirect: "manual" });
      const h = new Headers(up.headers);
      h.delete("content-length");
      h.delete("content-encoding");
      if (f === "truncate" || f === "corrupt") {
        const body = new Uint8Array(await up.arrayBuffer());
        if (f === "corrupt") body[body.length >> 1]! ^= 0xff;
        return new Response(f === "truncate" ? body.slice(0, body.length >> 1) : body, { status: up.status, headers: h });
      }
      return new Response(up.body, { status: up.status, headers: h });
    },
  });
  return { host: `127.0.0.1:${server.port}`, stop: () => server.stop(true) };
}

const fast: PullOptions["registry"] = { attempts: 3, backoffMs: 10, timeoutMs: 3000 };

d("pull from a real registry", () => {
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "msb-pull-test-"));
    process.env.DOCKER_CONFIG = join(work, "docker-config");
    [basicReg, tokenReg] = await Promise.all([startRegistry("htpasswd"), startRegistry("token")]);
    layout = writeOciLayout(join(work, "oci"), [
      { entries: busyboxEntries(), compression: "gzip" },
      { entries: featureLayer, compression: "zstd" },
      { entries: whiteoutLayer, compression: "none" },
    ], { Entrypoint: ["/bin/sh", "-c"], Cmd: ["echo hi"], Env: ["PATH=/bin", "A=1"], WorkingDir: "/data", User: "65534" }, "v1");
    dockerLayout = writeOciLayout(join(work, "oci-docker"), [
      { entries: busyboxEntries(), compression: "gzip" },
      { entries: whiteoutLayer, compression: "gzip" },
    ], { Cmd: ["sh"] }, "v1");
    for (const reg of [basicReg, tokenReg]) {
      pushed = await skopeoPush(layout.dir, "v1", reg, "test/busybox");
      await skopeoPush(layout.dir, "v1", reg, "private/busybox");
      await skopeoPush(dockerLayout.dir, "v1", reg, "test/docker", { format: "v2s2" });
    }
  }, 120_000);
  afterAll(async () => {
    await Promise.all([basicReg?.stop(), tokenReg?.stop()]);
    delete process.env.DOCKER_CONFIG;
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  test("basic auth with credentials from ~/.docker/config.json; layers are byte-identical to a direct conversion; config honoured", async () => {
    mkdirSync(process.env.DOCKER_CONFIG!, { recursive: true });
    writeFileSync(join(process.env.DOCKER_CONFIG!, "config.json"), JSON.stringify({
      auths: { [basicReg.host]: { auth: Buffer.from(`${basicReg.user}:${basicReg.password}`).toString("base64") } },
    }));
    const store = new ImageStore(home());
    const events: PullEvent[] = [];
    const rec = await pullImage(`${basicReg.host}/test/busybox:v1`, { store, onProgress: (e) => events.push(e), registry: fast });
    rmSync(join(process.env.DOCKER_CONFIG!, "config.json"));
    expect(rec.id).toBe(pushed);
    expect(rec.layers.map((l) => l.diffId)).toEqual(layout.diffIds);
    expect(events.filter((e) => e.kind === "layer" && e.status === "done").length).toBe(3);
    expect(events.at(-1)).toMatchObject({ kind: "done", reused: false });
    const root = store.guestRoot(`${basicReg.host}/test/busybox:v1`);
    expect(root.config).toEqual({ entrypoint: ["/bin/sh", "-c"], cmd: ["echo hi"], env: ["PATH=/bin", "A=1"], workingDir: "/data", user: "65534" });
    expect(root.layers.length).toBe(3);
    // ensureImage also resolves User against the image's /etc/passwd (busybox layer: nobody).
    expect((await ensureImage(`${basicReg.host}/test/busybox:v1`, { store, policy: "never" })).config.userIds).toEqual({ uid: 65534, gid: 65534, home: "/" });
    for (let i = 0; i < 3; i++) {
      fsckOk(root.layers[i]!);
      expect(statSync(root.layers[i]!).mode & 0o777).toBe(0o444);
      const direct = join(work, `direct-${i}.erofs`);
      await tarToErofs(new Blob([layout.tars[i]!]).stream(), direct);
      expect(sha256Hex(readFileSync(root.layers[i]!))).toBe(sha256Hex(readFileSync(direct)));
    }
    const x = join(work, "bb-extract");
    expect(Bun.spawnSync(["fsck.erofs", `--extract=${x}`, root.layers[0]!]).exitCode).toBe(0);
    expect(sha256Hex(readFileSync(join(x, "bin/busybox")))).toBe(sha256Hex(readFileSync(Bun.which("busybox")!)));
    await store.verify(rec.id);
    expect(store.list().map((s) => s.references)).toEqual([[`${basicReg.host}/test/busybox:v1`]]);
  }, 60_000);

  test("basic auth without credentials is a clear 401 error and leaves the cache empty", async () => {
    const store = new ImageStore(home());
    const before = snapshot(store);
    await expectError(pullImage(`${basicReg.host}/test/busybox:v1`, { store, registry: fast }), "UNAUTHORIZED", /test\/busybox.*requires a login; run msb login/);
    expect(snapshot(store)).toBe(before);
  });

  test("bearer flow: anonymous pull gets a token from the token service", async () => {
    const store = new ImageStore(home());
    const seen = tokenReg.tokenRequests.length;
    const rec = await pullImage(`${tokenReg.host}/test/busybox:v1`, { store, registry: fast });
    expect(rec.id).toBe(pushed);
    const reqs = tokenReg.tokenRequests.slice(seen);
    expect(reqs.length).toBeGreaterThan(0);
    expect(reqs[0]).toEqual({ scope: ["repository:test/busybox:pull"], account: undefined });
  });

  test("bearer flow: a private repository needs msb login; with it the pull works", async () => {
    const h = home();
    const store = new ImageStore(h);
    await expectError(pullImage(`${tokenReg.host}/private/busybox:v1`, { store, registry: fast }), "UNAUTHORIZED", /private\/busybox.*access denied/);
    saveCredentials(tokenReg.host, { username: tokenReg.user, password: tokenReg.password }, h);
    expect(statSync(join(h, "auth.json")).mode & 0o777).toBe(0o600);
    const { findCredentials } = await import("./auth.ts");
    const rec = await pullImage(`${tokenReg.host}/private/busybox:v1`, { store, registry: fast, credentials: findCredentials(tokenReg.host, h) });
    expect(rec.id).toBe(pushed);
    expect(tokenReg.tokenRequests.at(-1)!.account).toBe(tokenReg.user);
  });

  test("msb login checks credentials against the registry (basic and token) before saving them", async () => {
    const { login, logout } = await import("./index.ts");
    for (const reg of [basicReg, tokenReg]) {
      const h = home();
      await expectError(login(reg.host, { username: reg.user, password: "wrong" }, { home: h }), "UNAUTHORIZED", /login to 127\.0\.0\.1:\d+ failed/);
      expect(existsSync(join(h, "auth.json"))).toBe(false);
      await login(reg.host, { username: reg.user, password: reg.password }, { home: h });
      const { findCredentials } = await import("./auth.ts");
      expect(findCredentials(reg.host, h)).toEqual({ username: reg.user, password: reg.password });
      expect(logout(reg.host, { home: h })).toBe(true);
      expect(findCredentials(reg.host, h)).toBeUndefined();
    }
  });

  test("Docker v2 schema 2 media types (skopeo --format v2s2), by digest as well as by tag", async () => {
    const store = new ImageStore(home());
    const creds = { username: tokenReg.user, password: tokenReg.password };
    const rec = await pullImage(`${tokenReg.host}/test/docker:v1`, { store, registry: fast, credentials: creds });
    expect(rec.layers[0]!.mediaType).toBe("application/vnd.docker.image.rootfs.diff.tar.gzip");
    const again = await pullImage(`${tokenReg.host}/test/docker@${rec.id}`, { store, registry: fast, credentials: creds });
    expect(again.id).toBe(rec.id);
    expect(store.list().length).toBe(1);
  });

  test("an index resolves to linux/amd64; an index without it is refused, naming what it has", async () => {
    // A two-platform index pushed with skopeo --all: arm64 first, then amd64.
    const dir = join(work, "multi");
    const arm = writeOciLayout(join(work, "multi-arm"), [{ entries: [{ path: "arch", data: "arm64" }], compression: "gzip" }]);
    const amd = writeOciLayout(join(work, "multi-amd"), [{ entries: [{ path: "arch", data: "amd64" }], compression: "gzip" }]);
    mkdirSync(join(dir, "blobs/sha256"), { recursive: true });
    for (const src of [arm.dir, amd.dir]) for (const f of readdirSync(join(src, "blobs/sha256"))) writeFileSync(join(dir, "blobs/sha256", f), readFileSync(join(src, "blobs/sha256", f)));
    const armCfg = JSON.parse(readFileSync(join(arm.dir, "blobs/sha256", arm.configDigest.slice(7)), "utf8"));
    armCfg.architecture = "arm64";
    const armCfgBytes = new TextEncoder().encode(JSON.stringify(armCfg));
    writeFileSync(join(dir, "blobs/sha256", sha256Hex(armCfgBytes)), armCfgBytes);
    const armManifest = JSON.parse(readFileSync(join(arm.dir, "blobs/sha256", arm.manifestDigest.slice(7)), "utf8"));
    armManifest.config = { ...armManifest.config, digest: `sha256:${sha256Hex(armCfgBytes)}`, size: armCfgBytes.byteLength };
    const armMBytes = new TextEncoder().encode(JSON.stringify(armManifest));
    writeFileSync(join(dir, "blobs/sha256", sha256Hex(armMBytes)), armMBytes);
    const amdMBytes = readFileSync(join(amd.dir, "blobs/sha256", amd.manifestDigest.slice(7)));
    const mt = "application/vnd.oci.image.manifest.v1+json";
    const index = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        { mediaType: mt, digest: `sha256:${sha256Hex(armMBytes)}`, size: armMBytes.byteLength, platform: { os: "linux", architecture: "arm64" } },
        { mediaType: mt, digest: amd.manifestDigest, size: amdMBytes.byteLength, platform: { os: "linux", architecture: "amd64" } },
      ],
    }));
    writeFileSync(join(dir, "blobs/sha256", sha256Hex(index)), index);
    writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.index.v1+json", digest: `sha256:${sha256Hex(index)}`, size: index.byteLength, annotations: { "org.opencontainers.image.ref.name": "multi" } }] }));
    await skopeo(["copy", "--quiet", "--all", "--dest-tls-verify=false", "--dest-creds", `${tokenReg.user}:${tokenReg.password}`, `oci:${dir}:multi`, `docker://${tokenReg.host}/test/multi:multi`], tokenReg.dir);
    const store = new ImageStore(home());
    const rec = await pullImage(`${tokenReg.host}/test/multi:multi`, { store, registry: fast });
    expect(rec.id).toBe(amd.manifestDigest);
    expect(rec.config.architecture).toBe("amd64");
  }, 60_000);

  test("the same layer twice in one image is converted once and listed twice", async () => {
    const dup = writeOciLayout(join(work, "dup"), [
      { entries: [{ path: "a", data: "same" }], compression: "gzip" },
      { entries: [{ path: "b", data: "other" }], compression: "none" },
      { entries: [{ path: "a", data: "same" }], compression: "gzip" },
    ]);
    expect(dup.diffIds[0]).toBe(dup.diffIds[2]!);
    await skopeoPush(dup.dir, "latest", tokenReg, "test/dup");
    const store = new ImageStore(home());
    const rec = await pullImage(`${tokenReg.host}/test/dup`, { store, registry: fast, concurrency: 3 });
    expect(rec.layers.map((l) => l.diffId)).toEqual(dup.diffIds);
    const root = store.guestRoot(rec.id);
    expect(root.layers[0]).toBe(root.layers[2]!);
    expect(readdirSync(store.layersDir).length).toBe(2);
    await store.verify(rec.id);
  });

  test("a missing tag is a clear 404 naming the image", async () => {
    const store = new ImageStore(home());
    await expectError(pullImage(`${tokenReg.host}/test/busybox:nope`, { store, registry: fast }), "NOT_FOUND", /test\/busybox manifest nope: not found/);
  });

  test("HTTPS to a plain-HTTP registry fails clearly (insecure must be asked for off loopback)", async () => {
    const store = new ImageStore(home());
    await expectError(pullImage(`${tokenReg.host}/test/busybox:v1`, { store, registry: { ...fast, attempts: 1 }, insecure: false }), "NETWORK", /cannot reach https:\/\/127\.0\.0\.1/);
  });

  test("pull policies: never without the image fails; if-missing and never use the cache without the network", async () => {
    const store = new ImageStore(home());
    await expectError(pullImage(`${tokenReg.host}/test/busybox:v1`, { store, policy: "never" }), "NOT_IN_STORE", /pull policy is never/);
    let requests = 0;
    const proxy = faultProxy(tokenReg, () => { requests++; return undefined; });
    try {
      await pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast });
      const afterPull = requests;
      expect(afterPull).toBeGreaterThan(0);
      const a = await pullImage(`${proxy.host}/test/busybox:v1`, { store, policy: "if-missing" });
      const b = await ensureImage(`${proxy.host}/test/busybox:v1`, { store, policy: "never" });
      expect(requests).toBe(afterPull);
      expect(b.id).toBe(a.id);
      // always: asks the registry for the manifest, downloads nothing new.
      const events: PullEvent[] = [];
      await pullImage(`${proxy.host}/test/busybox:v1`, { store, policy: "always", onProgress: (e) => events.push(e) });
      expect(requests).toBeGreaterThan(afterPull);
      expect(events).toEqual([{ kind: "done", image: `${proxy.host}/test/busybox:v1`, id: a.id, reused: true }]);
    } finally {
      proxy.stop();
    }
  });

  test("blob redirects (CDN / presigned URLs) are followed without sending our credentials along", async () => {
    const seenAuth: (string | null)[] = [];
    const parked = new Map<string, Uint8Array<ArrayBuffer>>();
    const cdn = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        seenAuth.push(req.headers.get("authorization"));
        if (req.headers.get("authorization")) return new Response("Only one auth mechanism allowed", { status: 400 });
        const hex = new URL(req.url).pathname.split("/").pop()!;
        return new Response(parked.get(hex));
      },
    });
    const proxy = faultProxy(tokenReg, (path, _n, req) => {
      const m = /\/blobs\/sha256:([0-9a-f]{64})$/.exec(path);
      if (!m || !req.headers.get("authorization")) return undefined;
      // Like a registry backed by object storage: authorised here, served from elsewhere.
      return fetch(`http://${tokenReg.host}${path}`, { headers: { authorization: req.headers.get("authorization")! } })
        .then((r) => r.arrayBuffer())
        .then((b) => {
          parked.set(m[1]!, new Uint8Array(b));
          return new Response(null, { status: 307, headers: { location: `http://127.0.0.1:${cdn.port}/signed/${m[1]}?X-Amz-Signature=abc` } });
        });
    });
    try {
      const store = new ImageStore(home());
      const rec = await pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast });
      expect(rec.id).toBe(pushed);
      expect(seenAuth.length).toBe(4); // config + 3 layers
      expect(seenAuth.every((a) => a === null)).toBe(true);
    } finally {
      proxy.stop();
      cdn.stop(true);
    }
  });

  test("concurrent pulls of one image: in one process they share one download; across processes the second waits", async () => {
    let blobs = 0;
    const proxy = faultProxy(tokenReg, (path) => { if (path.includes("/blobs/")) blobs++; return undefined; });
    try {
      const store = new ImageStore(home());
      const [a, b] = await Promise.all([
        pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast }),
        pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast }),
      ]);
      expect(a.id).toBe(b.id);
      expect(blobs).toBe(4);
      // Another (live) process owns the staging directory: we wait for it, then do the work.
      const store2 = new ImageStore(home());
      const holder = Bun.spawn(["sleep", "1.5"]);
      const staging = join(store2.tmpDir, `staging-${pushed.slice(7)}`);
      mkdirSync(staging, { recursive: true });
      writeFileSync(join(staging, "pid"), String(holder.pid));
      const t0 = Date.now();
      const c = await pullImage(`${proxy.host}/test/busybox:v1`, { store: store2, registry: fast });
      expect(Date.now() - t0).toBeGreaterThan(1000);
      expect(c.id).toBe(a.id);
      expect(readdirSync(store2.tmpDir)).toEqual([]);
    } finally {
      proxy.stop();
    }
  });

  test("transient 500s and 429s on blobs are retried with backoff and the pull succeeds", async () => {
    const store = new ImageStore(home());
    const failures = new Map<string, number>();
    const proxy = faultProxy(tokenReg, (path) => {
      if (!path.includes("/blobs/")) return undefined;
      const k = failures.get(path) ?? 0;
      failures.set(path, k + 1);
      return k === 0 ? "500" : k === 1 ? "429" : undefined;
    });
    try {
      const rec = await pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast });
      expect(rec.id).toBe(pushed);
      expect([...failures.values()].every((v) => v >= 3)).toBe(true);
    } finally {
      proxy.stop();
    }
  });

  /** A proxy that cuts the first download of `digest` after `cutAt` bytes (connection dropped). */
  function cuttingProxy(reg: TestRegistry, digest: string, cutAt: number, opts: { ignoreRange?: boolean; refuseRange?: boolean } = {}) {
    const seen: { range: string | null; status: number; bytes: number }[] = [];
    const proxy = faultProxy(reg, async (path, _n, req) => {
      if (!path.endsWith(digest.slice(7))) return undefined;
      const headers = new Headers(req.headers);
      headers.delete("host");
      const range = headers.get("range");
      if (range && opts.refuseRange) {
        seen.push({ range, status: 416, bytes: 0 });
        return new Response("range not satisfiable", { status: 416 });
      }
      if (opts.ignoreRange) headers.delete("range");
      const up = await fetch(`http://${reg.host}${path}`, { headers });
      const body = new Uint8Array(await up.arrayBuffer());
      const h = new Headers(up.headers);
      h.delete("content-encoding");
      const first = seen.length === 0;
      seen.push({ range, status: up.status, bytes: first ? cutAt : body.length });
      if (!first) return new Response(body, { status: up.status, headers: h });
      // Announce the whole length, send part of it, then drop the connection.
      let sent = false;
      return new Response(new ReadableStream({
        async pull(ctl) {
          if (!sent) { sent = true; ctl.enqueue(body.slice(0, cutAt)); return; }
          await Bun.sleep(300); // let those bytes reach the client, as on a real connection
          ctl.error(new Error("connection cut by the test"));
        },
      }), { status: up.status, headers: h });
    });
    return { ...proxy, seen };
  }

  test("a download cut midway resumes from the partial file with HTTP Range, in the next pull; digests still verified", async () => {
    const store = new ImageStore(home());
    const digest = layout.layerDigests[0]!;
    const size = statSync(join(layout.dir, "blobs/sha256", digest.slice(7))).size;
    const cutAt = Math.floor(size * 0.6);
    const proxy = cuttingProxy(tokenReg, digest, cutAt);
    try {
      const before = snapshot(store);
      const err = await pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: { ...fast, attempts: 1 }, concurrency: 1 }).catch((e) => e);
      expect(err).toBeInstanceOf(ImageError);
      expect(["NETWORK", "TRUNCATED"]).toContain((err as ImageError).code);
      expect((err as Error).message).toMatch(/layer 1\/3 \(sha256:[0-9a-f]{64}\)/);
      expect(snapshot(store)).toBe(before);
      const events: PullEvent[] = [];
      const rec = await pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast, concurrency: 1, onProgress: (e) => events.push(e) });
      expect(rec.id).toBe(pushed);
      expect(proxy.seen).toHaveLength(2);
      const resumedAt = Number(/^bytes=(\d+)-$/.exec(proxy.seen[1]!.range ?? "")?.[1]);
      expect(resumedAt).toBeGreaterThan(0);
      expect(resumedAt).toBeLessThanOrEqual(cutAt);
      expect(proxy.seen[1]!.status).toBe(206);
      expect(proxy.seen[1]!.bytes).toBe(size - resumedAt);
      expect(events).toContainEqual(expect.objectContaining({ kind: "resume", index: 0, from: resumedAt, total: size }));
      await store.verify(pushed);
      expect(readdirSync(store.tmpDir)).toEqual([]);
    } finally {
      proxy.stop();
    }
  });

  test("a registry that ignores Range gets a full download after a cut, within one pull", async () => {
    const store = new ImageStore(home());
    const digest = layout.layerDigests[0]!;
    const size = statSync(join(layout.dir, "blobs/sha256", digest.slice(7))).size;
    const proxy = cuttingProxy(tokenReg, digest, Math.floor(size / 2), { ignoreRange: true });
    try {
      const rec = await pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast, concurrency: 1 });
      expect(rec.id).toBe(pushed);
      expect(proxy.seen).toHaveLength(2);
      expect(proxy.seen[1]!.range).toMatch(/^bytes=\d+-$/);
      expect(proxy.seen[1]!.status).toBe(200);
      expect(proxy.seen[1]!.bytes).toBe(size);
      await store.verify(pushed);
    } finally {
      proxy.stop();
    }
  });

  const faults: [string, "500" | "429" | "truncate" | "hang" | "corrupt", string, RegExp][] = [
    ["persistent 500", "500", "REGISTRY_ERROR", /layer 2\/3 \(sha256:[0-9a-f]{64}\).*HTTP 500 3 times/],
    ["persistent 429", "429", "RATE_LIMITED", /layer 2\/3 \(sha256:[0-9a-f]{64}\).*HTTP 429 \(rate limited\) 3 times/],
    ["truncated blob", "truncate", "TRUNCATED", /layer 2\/3 \(sha256:[0-9a-f]{64}\).*(ended after|ends in the middle)/],
    ["corrupted blob (digest mismatch)", "corrupt", "DIGEST_MISMATCH|TAR_INVALID", /layer 2\/3 \(sha256:[0-9a-f]{64}\).*(digest is sha256|cannot unpack)/],
    ["registry stops answering (timeout)", "hang", "TIMEOUT", /layer 2\/3 \(sha256:[0-9a-f]{64}\).*no response from the registry within 300 ms/],
  ];
  for (const [name, fault, code, msg] of faults) {
    test(`${name}: clear error naming image and layer; cache exactly as before; the next pull resumes`, async () => {
      const store = new ImageStore(home());
      // Pre-existing content must survive untouched.
      await pullImage(`${tokenReg.host}/test/docker:v1`, { store, registry: fast, credentials: { username: tokenReg.user, password: tokenReg.password } });
      const before = snapshot(store);
      const bad = layout.layerDigests[1]!.slice(7);
      const proxy = faultProxy(tokenReg, (path) => (path.endsWith(bad) ? fault : undefined));
      try {
        let err: unknown;
        try {
          await pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: { attempts: 3, backoffMs: 5, timeoutMs: 300 }, concurrency: 1 });
        } catch (e) { err = e; }
        expect(err).toBeInstanceOf(ImageError);
        expect(code.split("|")).toContain((err as ImageError).code);
        expect((err as Error).message).toContain(`pulling ${proxy.host}/test/busybox:v1`);
        expect((err as Error).message).toMatch(msg);
        expect(snapshot(store)).toBe(before);
        // A cut transfer leaves its partial blob for resuming; a complete but bad one does not.
        const partials = readdirSync(store.tmpDir).flatMap((d) => readdirSync(join(store.tmpDir, d))).filter((f) => f.endsWith(".blob.partial"));
        expect(partials).toEqual(fault === "truncate" ? [`${bad}.blob.partial`] : []);
      } finally {
        proxy.stop();
      }
      // Redo through a healthy path: layer 1 comes from the staging left behind.
      const events: PullEvent[] = [];
      const proxy2 = faultProxy(tokenReg, () => undefined);
      try {
        await pullImage(`${proxy2.host}/test/busybox:v1`, { store, registry: fast, concurrency: 1, onProgress: (e) => events.push(e) });
      } finally {
        proxy2.stop();
      }
      expect(events.some((e) => e.kind === "layer" && e.index === 0 && e.status === "cached")).toBe(true);
      expect(readdirSync(store.tmpDir)).toEqual([]);
      await store.verify(pushed);
    }, 30_000);
  }

  const upstream = async (reg: TestRegistry, path: string, req: Request) => {
    const headers = new Headers(req.headers);
    headers.delete("host");
    const up = await fetch(`http://${reg.host}${path}`, { headers });
    const h = new Headers(up.headers);
    h.delete("content-length");
    h.delete("content-encoding");
    return { body: new Uint8Array(await up.arrayBuffer()), headers: h, status: up.status };
  };
  test("a registry that refuses the range (416) gets a fresh full download", async () => {
    const store = new ImageStore(home());
    const digest = layout.layerDigests[0]!;
    const size = statSync(join(layout.dir, "blobs/sha256", digest.slice(7))).size;
    const proxy = cuttingProxy(tokenReg, digest, Math.floor(size / 3), { refuseRange: true });
    try {
      const rec = await pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast, concurrency: 1 });
      expect(rec.id).toBe(pushed);
      expect(proxy.seen.map((s) => [s.range === null ? "full" : "ranged", s.status])).toEqual([["full", 200], ["ranged", 416], ["full", 200]]);
      expect(proxy.seen[2]!.bytes).toBe(size);
      await store.verify(pushed);
    } finally {
      proxy.stop();
    }
  });

  const more: [string, (reg: TestRegistry, bad: string) => Parameters<typeof faultProxy>[1], string, RegExp][] = [
    ["a layer blob missing from the registry (404)", (_reg, bad) => (path) => (path.endsWith(bad) ? new Response("gone", { status: 404 }) : undefined),
      "NOT_FOUND", /layer 2\/3 \(sha256:[0-9a-f]{64}\).*not found in the registry \(HTTP 404\)/],
    ["a layer blob the registry refuses (401 even after a fresh token)", (reg, bad) => async (path, _n, req) => {
      if (!path.endsWith(bad)) return undefined;
      // Send the client back to the token service with the registry's own challenge.
      const probe = await fetch(`http://${reg.host}${path}`);
      await probe.body?.cancel();
      return new Response("denied", { status: 401, headers: { "www-authenticate": probe.headers.get("www-authenticate") ?? "" } });
    }, "UNAUTHORIZED", /layer 2\/3 \(sha256:[0-9a-f]{64}\).*access denied by the registry \(HTTP 401\)/],
    ["a blob longer than its descriptor says", (reg, bad) => async (path, _n, req) => {
      if (!path.endsWith(bad)) return undefined;
      const up = await upstream(reg, path, req);
      return new Response(new Uint8Array([...up.body, ...new Uint8Array(4096)]), { status: up.status, headers: up.headers });
    }, "SIZE_MISMATCH", /layer 2\/3 \(sha256:[0-9a-f]{64}\).*larger than the \d+ bytes its descriptor declares/],
    ["a manifest claiming an absurd layer size", (reg) => async (path, _n, req) => {
      if (!path.includes("/manifests/")) return undefined;
      const up = await upstream(reg, path, req);
      if (up.status !== 200) return new Response(up.body, { status: up.status, headers: up.headers });
      const m = JSON.parse(new TextDecoder().decode(up.body));
      m.layers[1].size = 2 ** 50;
      up.headers.delete("docker-content-digest");
      return new Response(JSON.stringify(m), { status: 200, headers: up.headers });
    }, "TAR_LIMIT", /layer 2 \(sha256:[0-9a-f]{64}\) claims 1125899906842624 bytes, over the \d+-byte limit/],
  ];
  for (const [name, fault, code, msg] of more) {
    test(`${name}: clear error naming image and layer; cache exactly as before`, async () => {
      const store = new ImageStore(home());
      await pullImage(`${tokenReg.host}/test/docker:v1`, { store, registry: fast, credentials: { username: tokenReg.user, password: tokenReg.password } });
      const before = snapshot(store);
      const proxy = faultProxy(tokenReg, fault(tokenReg, layout.layerDigests[1]!.slice(7)));
      try {
        const err = await expectError(pullImage(`${proxy.host}/test/busybox:v1`, { store, registry: fast, concurrency: 1 }), code, msg);
        expect(err.message).toContain(`${proxy.host}/test/busybox:v1`);
        expect(snapshot(store)).toBe(before);
      } finally {
        proxy.stop();
      }
    });
  }

  test("a layer with an entry escaping the root: clear error naming image and layer; cache exactly as before", async () => {
    const evil = writeOciLayout(join(work, "evil"), [
      { entries: [{ path: "ok", data: "fine" }], compression: "gzip" },
      { entries: [{ path: "lnk", type: "symlink", linkname: "/etc" }, { path: "lnk/passwd", data: "pwned" }], compression: "gzip" },
    ]);
    await skopeoPush(evil.dir, "latest", tokenReg, "test/evil");
    const store = new ImageStore(home());
    await pullImage(`${tokenReg.host}/test/docker:v1`, { store, registry: fast, credentials: { username: tokenReg.user, password: tokenReg.password } });
    const before = snapshot(store);
    await expectError(pullImage(`${tokenReg.host}/test/evil:latest`, { store, registry: fast }), "TAR_UNSAFE_PATH",
      /^pulling 127\.0\.0\.1:\d+\/test\/evil:latest: layer 2\/2 \(sha256:[0-9a-f]{64}\): tar entry "lnk\/passwd" goes through "lnk", which is a symlink/);
    expect(snapshot(store)).toBe(before);
  });

  test("a blob whose digest matches but whose tar does not hash to the config's diff_id is refused", async () => {
    // Build an image whose config lies about diff_ids; push it; the pull must fail on layer 1.
    const lying = writeOciLayout(join(work, "lying"), [{ entries: [{ path: "a", data: "a" }], compression: "gzip" }]);
    const cfgPath = join(lying.dir, "blobs/sha256", lying.configDigest.slice(7));
    const cfg = JSON.parse(readFileSync(cfgPath, "utf8"));
    cfg.rootfs.diff_ids = ["sha256:" + "0".repeat(64)];
    const cfgBytes = new TextEncoder().encode(JSON.stringify(cfg));
    writeFileSync(join(lying.dir, "blobs/sha256", sha256Hex(cfgBytes)), cfgBytes);
    const mPath = join(lying.dir, "blobs/sha256", lying.manifestDigest.slice(7));
    const m = JSON.parse(readFileSync(mPath, "utf8"));
    m.config = { ...m.config, digest: `sha256:${sha256Hex(cfgBytes)}`, size: cfgBytes.byteLength };
    const mBytes = new TextEncoder().encode(JSON.stringify(m));
    writeFileSync(join(lying.dir, "blobs/sha256", sha256Hex(mBytes)), mBytes);
    const idx = JSON.parse(readFileSync(join(lying.dir, "index.json"), "utf8"));
    idx.manifests[0] = { ...idx.manifests[0], digest: `sha256:${sha256Hex(mBytes)}`, size: mBytes.byteLength };
    writeFileSync(join(lying.dir, "index.json"), JSON.stringify(idx));
    await skopeoPush(lying.dir, "latest", tokenReg, "test/lying");
    const store = new ImageStore(home());
    await expectError(pullImage(`${tokenReg.host}/test/lying`, { store, registry: fast }), "DIGEST_MISMATCH", /layer 1\/1 .*uncompressed layer digest is sha256:[0-9a-f]+, the image config says sha256:0000/);
    expect(store.list()).toEqual([]);
  });

  test("rmi and prune: layers shared by two images stay until the last user goes", async () => {
    const store = new ImageStore(home());
    const creds = { username: tokenReg.user, password: tokenReg.password };
    const a = await pullImage(`${tokenReg.host}/test/busybox:v1`, { store, registry: fast });
    const b = await pullImage(`${tokenReg.host}/test/docker:v1`, { store, registry: fast, credentials: creds });
    expect(a.layers[0]!.diffId).toBe(b.layers[0]!.diffId); // same busybox layer
    expect(a.layers[2]!.diffId).toBe(b.layers[1]!.diffId); // same whiteout layer
    expect(readdirSync(store.layersDir).length).toBe(3);
    const r1 = store.remove(`${tokenReg.host}/test/busybox:v1`);
    expect(r1.untagged).toEqual([`${tokenReg.host}/test/busybox:v1`]);
    expect(r1.deleted).toContain(a.id);
    expect(readdirSync(store.layersDir).length).toBe(2);
    expect(store.hasLayer(b.layers[0]!.diffId)).toBe(true);
    expect(store.hasLayer(a.layers[1]!.diffId)).toBe(false);
    await store.verify(b.id);
    expect(() => store.remove("nothing:here")).toThrow(/not in the local store/);
    // An image a sandbox uses is not deleted: rmi refuses, force only untags, prune keeps it.
    const inUse = (id: string) => id === b.id;
    expect(() => store.remove(b.id, { inUse })).toThrow(/is used by a sandbox/);
    expect(store.remove(b.id, { inUse, force: true })).toEqual({ untagged: [`${tokenReg.host}/test/docker:v1`], deleted: [] });
    expect(store.prune({ inUse }).images).toEqual([]);
    await store.verify(b.id);
    expect(store.prune().images).toEqual([b.id]);
    expect(store.list()).toEqual([]);
    expect(readdirSync(store.layersDir)).toEqual([]);
    expect(store.prune()).toEqual({ images: [], layers: [], tmp: [] });
  });

});
