// Imports of OCI layout directories, OCI archives and docker save archives (the archives made by
// skopeo from a layout written here), plus root-filesystem tars for the embedded default image.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImageError } from "./errors.ts";
import { busyboxEntries, have, skopeo, writeOciLayout, type WrittenLayout } from "./harness.ts";
import { importImage, importRootfs } from "./import.ts";
import { tarToErofs } from "./layer.ts";
import { sha256Hex } from "./registry.ts";
import { ImageStore } from "./store.ts";
import { writeTar } from "./tarwriter.ts";

let work: string;
let layout: WrittenLayout;
const hasSkopeo = have("skopeo");

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "msb-import-test-"));
  layout = writeOciLayout(join(work, "app"), [
    { entries: busyboxEntries(), compression: "gzip" },
    { entries: [{ path: "app/run.sh", data: "#!/bin/sh\necho app\n", mode: 0o755 }, { path: "etc/.wh.group", data: "" }], compression: "zstd" },
  ], { Cmd: ["/app/run.sh"], WorkingDir: "/app" }, "v1");
});
afterAll(() => rmSync(work, { recursive: true, force: true }), 60_000);

const home = () => mkdtempSync(join(work, "home-"));

async function expectSameLayers(store: ImageStore, ref: string) {
  const root = store.guestRoot(ref);
  expect(root.layers.length).toBe(2);
  for (let i = 0; i < 2; i++) {
    const direct = join(work, `direct-${i}-${Math.random()}.erofs`);
    await tarToErofs(new Blob([layout.tars[i]!]).stream(), direct);
    expect(sha256Hex(readFileSync(root.layers[i]!))).toBe(sha256Hex(readFileSync(direct)));
  }
  expect(root.config).toEqual({ cmd: ["/app/run.sh"], workingDir: "/app", entrypoint: undefined, env: undefined, user: undefined });
}

describe("import", () => {
  test("an OCI layout directory, named from its ref.name annotation", async () => {
    const store = new ImageStore(home());
    const { record, references } = await importImage(layout.dir, { store });
    expect(record.id).toBe(layout.manifestDigest);
    expect(references).toEqual(["localhost/app:v1"]);
    await expectSameLayers(store, "localhost/app:v1");
  });

  test("--tag names the image; importing again reuses the layers", async () => {
    const store = new ImageStore(home());
    await importImage(layout.dir, { store, tag: "myapp:dev" });
    const events: string[] = [];
    await importImage(layout.dir, { store, tag: "myapp:other", onProgress: (e) => e.kind === "layer" && events.push(e.status) });
    expect(events).toEqual(["cached", "cached"]);
    expect(store.list()[0]!.references).toEqual(["docker.io/library/myapp:dev", "docker.io/library/myapp:other"]);
    await expectSameLayers(store, "myapp:dev");
  });

  test.skipIf(!hasSkopeo)("an OCI archive made by skopeo (oci-archive:)", async () => {
    const tar = join(work, "app-oci.tar");
    await skopeo(["copy", "--quiet", `oci:${layout.dir}:v1`, `oci-archive:${tar}:v1`], work);
    const store = new ImageStore(home());
    await importImage(tar, { store, tag: "fromarchive:1" });
    await expectSameLayers(store, "fromarchive:1");
  });

  test.skipIf(!hasSkopeo)("a docker save archive (skopeo docker-archive:), plain and gzip-compressed, tagged from RepoTags", async () => {
    // Docker archives cannot hold zstd layers: same tars, gzip-compressed.
    const gz = writeOciLayout(join(work, "app-gz"), layout.tars.map((t) => ({ entries: t, compression: "gzip" as const })), { Cmd: ["/app/run.sh"], WorkingDir: "/app" }, "v1");
    const tar = join(work, "app-docker.tar");
    await skopeo(["copy", "--quiet", `oci:${gz.dir}:v1`, `docker-archive:${tar}:example.com/team/app:v1`], work);
    const store = new ImageStore(home());
    const { references } = await importImage(tar, { store });
    expect(references).toEqual(["example.com/team/app:v1"]);
    await expectSameLayers(store, "example.com/team/app:v1");
    writeFileSync(tar + ".gz", Bun.gzipSync(readFileSync(tar)));
    const store2 = new ImageStore(home());
    await importImage(tar + ".gz", { store: store2 });
    await expectSameLayers(store2, "example.com/team/app:v1");
    expect(readdirSync(store2.tmpDir)).toEqual([]);
  });

  test("a corrupted blob is refused naming the layer, and the store is untouched", async () => {
    const bad = join(work, "bad-layout");
    cpSync(layout.dir, bad, { recursive: true });
    const blob = join(bad, "blobs/sha256", layout.layerDigests[1]!.slice(7));
    const bytes = readFileSync(blob);
    bytes[bytes.length - 5]! ^= 0x55;
    writeFileSync(blob, bytes);
    const store = new ImageStore(home());
    let err: unknown;
    try { await importImage(bad, { store, tag: "bad:1" }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(ImageError);
    expect((err as Error).message).toMatch(/importing .*bad-layout: layer 2\/2 \(blobs\/sha256\/[0-9a-f]+\)/);
    expect(store.list()).toEqual([]);
    expect(readdirSync(store.layersDir)).toEqual([]);
    expect(readdirSync(store.tmpDir)).toEqual([]);
  });

  test("something that is not an image is refused clearly", async () => {
    const store = new ImageStore(home());
    const junk = join(work, "junk.tar");
    writeFileSync(junk, writeTar([{ path: "hello.txt", data: "hi" }]));
    await expect(importImage(junk, { store })).rejects.toThrow(/neither an OCI image layout .* nor a docker save archive/);
    await expect(importImage(join(work, "nope"), { store })).rejects.toThrow(/does not exist/);
  });

  test("a root filesystem tar becomes a one-layer image (the embedded default root)", async () => {
    const store = new ImageStore(home());
    const tar = writeTar(busyboxEntries());
    const rec = await importRootfs(new Blob([tar]).stream(), "msb/default:1", { cmd: ["/bin/sh"], env: ["PATH=/bin"] }, { store });
    expect(rec.layers[0]!.diffId).toBe(`sha256:${sha256Hex(tar)}`);
    const root = store.guestRoot("msb/default:1");
    expect(root.config.cmd).toEqual(["/bin/sh"]);
    expect(Bun.spawnSync(["fsck.erofs", root.layers[0]!]).exitCode).toBe(0);
    // Same input, same image id: the default image is reproducible.
    const again = await importRootfs(new Blob([tar]).stream(), "msb/default:1", { cmd: ["/bin/sh"], env: ["PATH=/bin"] }, { store: new ImageStore(home()) });
    expect(again.id).toBe(rec.id);
  });
});
