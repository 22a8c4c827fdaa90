// Test harness with real parts: Debian's docker-registry (distribution) on a loopback port, a
// token service for its `auth: token` mode (ES256 JWTs, x5c chain, as distribution verifies
// them), OCI layout directories written here, and skopeo to push them. Never reaches past
// loopback.

import "./reflect-shim.ts";
import { mkdirSync, readFileSync, rmSync, writeFileSync, mkdtempSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { sha256Hex } from "./registry.ts";
import { writeTar, type TarWriteEntry } from "./tarwriter.ts";

export type RegistryAuth = "none" | "htpasswd" | "token";

export interface TestRegistry {
  /** host:port to use in references. */
  host: string;
  dir: string;
  user: string;
  password: string;
  /** Requests the token service has seen (for asserting the bearer flow ran). */
  tokenRequests: { scope: string[]; account?: string }[];
  stop(): Promise<void>;
}

export function have(cmd: string): boolean {
  return Bun.which(cmd) !== null;
}

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

function b64url(data: Uint8Array | string): string {
  return Buffer.from(typeof data === "string" ? new TextEncoder().encode(data) : data).toString("base64url");
}

/** A token service issuing registry JWTs: anyone may pull, only the test user may push. */
async function startTokenService(dir: string, service: string, issuer: string, user: string, password: string, seen: TestRegistry["tokenRequests"]) {
  // Loaded lazily so the Reflect shim is in place first (CJS modules evaluate before ESM ones).
  const x509 = await import("@peculiar/x509");
  x509.cryptoProvider.set(crypto);
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
  const keys = (await crypto.subtle.generateKey(alg, true, ["sign", "verify"])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=msb test token issuer",
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    signingAlgorithm: alg,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  const bundle = join(dir, "token-root.pem");
  writeFileSync(bundle, cert.toString("pem") + "\n");
  const der = Buffer.from(cert.rawData).toString("base64");
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const url = new URL(req.url);
      if (url.pathname !== "/token") return new Response("not found", { status: 404 });
      let account: string | undefined;
      const auth = req.headers.get("authorization");
      if (auth) {
        const [u, p] = Buffer.from(auth.replace(/^Basic /, ""), "base64").toString().split(":");
        if (u !== user || p !== password) return new Response("bad credentials", { status: 401 });
        account = u;
      }
      const scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(" ")).filter(Boolean);
      seen.push({ scope: scopes, account });
      const access = scopes.map((s) => {
        const [type, name, actions] = s.split(":");
        const wanted = (actions ?? "").split(",");
        const granted = wanted.filter((a) => a === "pull" ? !name!.startsWith("private/") || !!account : !!account);
        return { type, name, actions: granted };
      });
      const now = Math.floor(Date.now() / 1000);
      const header = { typ: "JWT", alg: "ES256", x5c: [der] };
      const claims = { iss: issuer, sub: account ?? "", aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: crypto.randomUUID(), access };
      const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
      const sig = new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, keys.privateKey, new TextEncoder().encode(input)));
      const token = `${input}.${b64url(sig)}`;
      return Response.json({ token, access_token: token, expires_in: 300 });
    },
  });
  return { server, bundle, realm: `http://127.0.0.1:${server.port}/token` };
}

/** Starts docker-registry on 127.0.0.1 with the given auth; stop() kills it and removes its data. */
export async function startRegistry(auth: RegistryAuth = "none"): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), "msb-registry-"));
  const port = await freePort();
  const user = "msbtest";
  const password = "s3cret-" + Math.random().toString(36).slice(2);
  const tokenRequests: TestRegistry["tokenRequests"] = [];
  let authYaml = "";
  let tokenServer: { stop(force?: boolean): void } | undefined;
  if (auth === "htpasswd") {
    writeFileSync(join(dir, "htpasswd"), `${user}:${Bun.password.hashSync(password, { algorithm: "bcrypt", cost: 4 })}\n`);
    authYaml = `auth:\n  htpasswd:\n    realm: msb-test\n    path: ${join(dir, "htpasswd")}\n`;
  } else if (auth === "token") {
    const t = await startTokenService(dir, "msb-test-registry", "msb-test-issuer", user, password, tokenRequests);
    tokenServer = t.server;
    authYaml = `auth:\n  token:\n    realm: ${t.realm}\n    service: msb-test-registry\n    issuer: msb-test-issuer\n    rootcertbundle: ${t.bundle}\n`;
  }
  const config = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, "data")}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${authYaml}`;
  writeFileSync(join(dir, "config.yml"), config);
  const proc: Subprocess = Bun.spawn(["docker-registry", "serve", join(dir, "config.yml")], {
    stdout: Bun.file(join(dir, "registry.log")),
    stderr: Bun.file(join(dir, "registry.err")),
  });
  const host = `127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const r = await fetch(`http://${host}/v2/`);
      await r.body?.cancel();
      if (r.status === 200 || r.status === 401) break;
    } catch {}
    if (proc.exitCode !== null || Date.now() > deadline) {
      const err = existsSync(join(dir, "registry.err")) ? readFileSync(join(dir, "registry.err"), "utf8") : "";
      proc.kill();
      throw new Error(`docker-registry did not start: ${err.slice(-2000)}`);
    }
    await Bun.sleep(50);
  }
  return {
    host, dir, user, password, tokenRequests,
    async stop() {
      proc.kill();
      await proc.exited;
      tokenServer?.stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export type Compression = "gzip" | "zstd" | "none";

export interface LayoutLayer {
  entries: TarWriteEntry[] | Uint8Array<ArrayBuffer>;
  compression: Compression;
}

export interface WrittenLayout {
  dir: string;
  manifestDigest: string;
  configDigest: string;
  diffIds: string[];
  layerDigests: string[];
  tars: Uint8Array<ArrayBuffer>[];
}

const LAYER_TYPES: Record<Compression, string> = {
  gzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  zstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  none: "application/vnd.oci.image.layer.v1.tar",
};

function putBlob(dir: string, data: Uint8Array): string {
  const hex = sha256Hex(data);
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  writeFileSync(join(dir, "blobs", "sha256", hex), data);
  return `sha256:${hex}`;
}

/** Writes an OCI image layout directory holding one linux/amd64 image tagged `tag`. */
export function writeOciLayout(dir: string, layers: LayoutLayer[], runtime: Record<string, unknown> = {}, tag = "latest"): WrittenLayout {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const diffIds: string[] = [];
  const layerDescs: any[] = [];
  const tars: Uint8Array<ArrayBuffer>[] = [];
  for (const l of layers) {
    const tar = l.entries instanceof Uint8Array ? l.entries : writeTar(l.entries);
    tars.push(tar);
    diffIds.push(`sha256:${sha256Hex(tar)}`);
    const blob = l.compression === "gzip" ? Bun.gzipSync(tar) : l.compression === "zstd" ? Bun.zstdCompressSync(tar) : tar;
    layerDescs.push({ mediaType: LAYER_TYPES[l.compression], digest: putBlob(dir, blob), size: blob.byteLength });
  }
  const config = new TextEncoder().encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    config: runtime,
    rootfs: { type: "layers", diff_ids: diffIds },
  }));
  const configDigest = putBlob(dir, config);
  const manifest = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.byteLength },
    layers: layerDescs,
  }));
  const manifestDigest = putBlob(dir, manifest);
  writeFileSync(join(dir, "index.json"), JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      mediaType: "application/vnd.oci.image.manifest.v1+json", digest: manifestDigest, size: manifest.byteLength,
      platform: { architecture: "amd64", os: "linux" },
      annotations: { "org.opencontainers.image.ref.name": tag },
    }],
  }));
  return { dir, manifestDigest, configDigest, diffIds, layerDigests: layerDescs.map((d) => d.digest), tars };
}

/**
 * Writes an OCI layout whose image is `base`'s image (another layout directory, its first
 * manifest) with `layers` added on top: base blobs are copied, the config's diff_ids extended.
 */
export function writeLayoutOver(dir: string, base: string, layers: LayoutLayer[], tag = "latest"): WrittenLayout {
  const blob = (d: string, digest: string) => join(d, "blobs", "sha256", digest.slice(7));
  const idx = JSON.parse(readFileSync(join(base, "index.json"), "utf8"));
  const baseManifest = JSON.parse(readFileSync(blob(base, idx.manifests[0].digest), "utf8"));
  const baseConfig = JSON.parse(readFileSync(blob(base, baseManifest.config.digest), "utf8"));
  const top = writeOciLayout(dir, layers, baseConfig.config ?? {}, tag);
  const topIndex = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
  const manifest = JSON.parse(readFileSync(blob(dir, topIndex.manifests[0].digest), "utf8"));
  const config = JSON.parse(readFileSync(blob(dir, manifest.config.digest), "utf8"));
  for (const l of baseManifest.layers) writeFileSync(blob(dir, l.digest), readFileSync(blob(base, l.digest)));
  config.rootfs.diff_ids = [...baseConfig.rootfs.diff_ids, ...config.rootfs.diff_ids];
  const cBytes = new TextEncoder().encode(JSON.stringify(config));
  const configDigest = putBlob(dir, cBytes);
  manifest.layers = [...baseManifest.layers, ...manifest.layers];
  manifest.config = { ...manifest.config, digest: configDigest, size: cBytes.byteLength };
  const mBytes = new TextEncoder().encode(JSON.stringify(manifest));
  const manifestDigest = putBlob(dir, mBytes);
  topIndex.manifests[0] = { ...topIndex.manifests[0], digest: manifestDigest, size: mBytes.byteLength };
  writeFileSync(join(dir, "index.json"), JSON.stringify(topIndex));
  return {
    dir, manifestDigest, configDigest, diffIds: config.rootfs.diff_ids,
    layerDigests: manifest.layers.map((l: { digest: string }) => l.digest), tars: top.tars,
  };
}

/**
 * skopeo copy of an OCI layout into the registry (plain HTTP, loopback); returns the manifest
 * digest as pushed (skopeo may re-serialise the manifest). Async: the token
 * service runs on this process's event loop, so a blocking spawn would deadlock.
 */
export async function skopeoPush(layoutDir: string, tag: string, reg: TestRegistry, repo: string, { creds = true, format }: { creds?: boolean; format?: "oci" | "v2s2" } = {}): Promise<string> {
  const digestFile = join(reg.dir, `digest-${Math.random().toString(36).slice(2)}`);
  const args = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", digestFile];
  if (creds) args.push("--dest-creds", `${reg.user}:${reg.password}`);
  if (format) args.push("--format", format);
  args.push(`oci:${layoutDir}:${tag}`, `docker://${reg.host}/${repo}:${tag}`);
  await skopeo(args.slice(1), reg.dir);
  return readFileSync(digestFile, "utf8").trim();
}

/** Runs skopeo with HOME pointed away from the user's own auth files. */
export async function skopeo(args: string[], home: string): Promise<void> {
  const p = Bun.spawn(["skopeo", ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, HOME: home } });
  const [code, err] = await Promise.all([p.exited, new Response(p.stderr).text()]);
  if (code !== 0) throw new Error(`skopeo ${args.join(" ")} failed: ${err}`);
}

/** A layer with the host's busybox-static and the usual applet links. */
export function busyboxEntries(): TarWriteEntry[] {
  const bin = readFileSync(Bun.which("busybox") ?? "/bin/busybox");
  const entries: TarWriteEntry[] = [
    { path: "bin/", type: "dir" },
    { path: "bin/busybox", data: new Uint8Array(bin), mode: 0o755 },
    { path: "etc/", type: "dir" },
    { path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n" },
    { path: "etc/group", data: "root:x:0:\nnogroup:x:65534:\n" },
    { path: "tmp/", type: "dir", mode: 0o1777 },
    { path: "root/", type: "dir", mode: 0o700 },
  ];
  for (const app of ["sh", "ls", "cat", "echo", "mkdir", "rm", "mount", "uname", "sleep", "env", "id", "true", "false"])
    entries.push({ path: `bin/${app}`, type: "symlink", linkname: "busybox" });
  return entries;
}

function rand(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; b[i] = x & 0xff; }
  return b;
}

const capability = new Uint8Array([0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const big = rand(5 * 1024 * 1024 + 123, 7);
const many = Array.from({ length: 300 }, (_, i) => ({ path: `d/f${i}-${"n".repeat(20)}`, data: `file ${i}` }));

/**
 * Six layers exercising every merge rule across layers (whiteouts, opaque dirs, a deleted dir
 * that comes back as a file, hardlinks, a large file), lowest first. For flattening tests.
 */
export const SIX_LAYERS: TarWriteEntry[][] = [
  [
    { path: "a/", type: "dir" },
    { path: "a/keep", data: "kept from layer 1" },
    { path: "a/gone", data: "deleted by layer 2" },
    { path: "b/", type: "dir" },
    { path: "b/old1", data: "hidden by the opaque b/ of layer 2" },
    { path: "b/sub/old2", data: "also hidden" },
    { path: "c/x", data: "c/ is deleted in layer 3" },
    { path: "hard1", data: "linked", mode: 0o640, uid: 7, gid: 8 },
    { path: "hard2", type: "hardlink", linkname: "hard1" },
    { path: "big.bin", data: big },
    { path: "link", type: "symlink", linkname: "a/keep" },
    { path: "dev/null", type: "char", devmajor: 1, devminor: 3, mode: 0o666 },
    { path: "dev/fifo", type: "fifo", mode: 0o600 },
    { path: "cap", data: "capable", mode: 0o755, xattrs: { "security.capability": capability } },
    { path: "private/", type: "dir", mode: 0o700, uid: 12, gid: 34 },
    { path: "private/secret", data: "s" },
  ],
  [
    { path: "a/.wh.gone", data: "" },
    { path: "b/", type: "dir" },
    { path: "b/.wh..wh..opq", data: "" },
    { path: "b/new", data: "b/new from layer 2" },
    { path: "c/y", data: "also deleted in layer 3" },
    ...many,
  ],
  [
    { path: "a/gone", data: "reborn in layer 3" },
    { path: ".wh.c", data: "" },
    { path: "big.bin", data: big.subarray(0, 4096 * 3 + 5) },
  ],
  [
    { path: "c", data: "c is a file now" },
    { path: "e/", type: "dir" },
    { path: "e/.wh..wh..opq", data: "" },
    { path: "e/inner", data: "opaque over nothing" },
  ],
  [
    { path: "d/.wh.f7-" + "n".repeat(20), data: "" },
    { path: "d/added", data: "added in layer 5" },
    { path: "link", type: "symlink", linkname: "b/new" },
  ],
  [
    { path: ".wh.hard1", data: "" },
    { path: "a/", type: "dir", mode: 0o750 },
    { path: "dev/.wh.fifo", data: "" },
    { path: "top", data: "top layer" },
  ],
];

