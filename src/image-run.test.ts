// End-to-end: sandboxes started from OCI images pulled from a real registry on loopback, their
// layers mounted in the guest as EROFS under a private overlay (qemu backend, real kernel and agent).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Sandbox } from "./sandbox";
import { ImageStore } from "./image/store";
import { DEFAULT_IMAGE, ensureDefaultImage } from "./image/default";
import { busyboxEntries, have, SIX_LAYERS, skopeoPush, startRegistry, writeOciLayout, type TestRegistry } from "./image/harness";
import { MAX_IMAGE_LAYERS } from "./supervisor";
import { fixtureDir } from "../bench/image-fixture-debian";
import { eventually, leftoverSandboxes, processesOf, removeHome, repoRoot, useTempHome } from "./testing";

const home = useTempHome();
let registry: TestRegistry;
let layout: string;
let image: string;
let manyLayers: string;

const missingTools = ["docker-registry", "skopeo"].filter((tool) => !have(tool));

function hashTree(paths: string[]): string[] {
  return paths.map((path) => new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex"));
}

beforeAll(async () => {
  if (missingTools.length) throw new Error(`install ${missingTools.join(", ")} (scripts/setup.sh --test does)`);
  registry = await startRegistry("none");
  layout = mkdtempSync(join(tmpdir(), "msb-layout-"));
  // Two layers: the second deletes a file of the first (whiteout) and replaces a directory's
  // contents (opaque), so overlayfs in the guest must honour both.
  writeOciLayout(
    layout,
    [
      {
        compression: "gzip",
        entries: [
          ...busyboxEntries(),
          { path: "data/", type: "dir" },
          { path: "data/keep.txt", data: "kept\n" },
          { path: "data/gone.txt", data: "should be whited out\n" },
          { path: "opaque/", type: "dir" },
          { path: "opaque/old.txt", data: "hidden by the opaque dir\n" },
        ],
      },
      {
        compression: "zstd",
        entries: [
          { path: "data/.wh.gone.txt", data: "" },
          { path: "opaque/", type: "dir" },
          { path: "opaque/.wh..wh..opq", data: "" },
          { path: "opaque/new.txt", data: "from the upper layer\n" },
          { path: "app/", type: "dir" },
          { path: "app/hello.sh", data: '#!/bin/sh\necho "hello from $GREETING in $(pwd) as $0 $*"\n', mode: 0o755 },
        ],
      },
    ],
    { Env: ["PATH=/bin", "GREETING=the image"], WorkingDir: "/app", Entrypoint: ["/app/hello.sh"], Cmd: ["default-arg"] },
  );
  await skopeoPush(layout, "latest", registry, "test/busybox", { creds: false });
  image = `${registry.host}/test/busybox:latest`;
  // Seven layers: more than a VM has disk slots, so the image runs flattened into one.
  const many = writeOciLayout(
    join(layout, "many"),
    [{ compression: "gzip", entries: busyboxEntries() }, ...SIX_LAYERS.map((entries) => ({ compression: "zstd" as const, entries }))],
    { Env: ["PATH=/bin"] },
  );
  await skopeoPush(many.dir, "latest", registry, "test/many", { creds: false });
  manyLayers = `${registry.host}/test/many:latest`;
});

afterAll(async () => {
  await registry?.stop();
  rmSync(layout, { recursive: true, force: true });
  removeHome(home);
});

describe("a sandbox from an image", () => {
  test("the layers merge with whiteouts and opaque directories honoured", async () => {
    await using sandbox = await Sandbox.create({ image, backend: "qemu" });
    expect(sandbox.image?.layers).toHaveLength(2);
    const result = await sandbox.shell("cat /data/keep.txt; ls /data; ls /opaque");
    expect(result.stderr).toBe("");
    expect(result.stdout).toBe("kept\nkeep.txt\nnew.txt\n");
  });

  test(`an image with more than ${MAX_IMAGE_LAYERS} layers runs flattened, whiteouts and opaque dirs across layers honoured`, async () => {
    await using sandbox = await Sandbox.create({ image: manyLayers, backend: "qemu" });
    expect(sandbox.image?.layers).toHaveLength(1);
    const result = await sandbox.shell(
      "cat /a/gone; echo; ls /b; cat /c; echo; ls /d | wc -l; ls /d/f7-nnnnnnnnnnnnnnnnnnnn; ls /hard1; cat /hard2; echo; cat /top; echo; readlink /link; ls /e",
    );
    expect(result.stdout).toBe("reborn in layer 3\nnew\nc is a file now\n300\nlinked\ntop layer\nb/new\ninner\n");
    expect(result.stderr).toContain("/d/f7-");
    expect(result.stderr).toContain("/hard1");
    // Writes go to the private upper layer, never into the cached flat image.
    const before = hashTree(sandbox.image!.layers);
    expect((await sandbox.shell("echo changed > /top; rm /a/keep; cat /top")).stdout).toBe("changed\n");
    expect(hashTree(sandbox.image!.layers)).toEqual(before);
  });

  test("Entrypoint, Cmd, Env and WorkingDir are honoured", async () => {
    await using sandbox = await Sandbox.create({ image, backend: "qemu" });
    const result = await sandbox.exec("/app/hello.sh", ["x"]);
    expect(result.stdout).toBe("hello from the image in /app as /app/hello.sh x\n");
    const msb = join(repoRoot, "dist", "msb");
    const run = Bun.spawnSync([msb, "run", "-q", image], { env: { ...process.env, MSB_HOME: home } });
    expect(run.stdout.toString()).toBe("hello from the image in /app as /app/hello.sh default-arg\n");
    expect(run.exitCode).toBe(0);
  });

  test("writes stay private to each sandbox and the cached image does not change", async () => {
    const layers = new ImageStore().guestRoot(image).layers;
    const before = hashTree(layers);
    await using first = await Sandbox.create({ image, backend: "qemu" });
    await using second = await Sandbox.create({ image, backend: "qemu" });
    expect((await first.shell("echo mine > /data/keep.txt; rm /bin/ls; echo new > /made-here")).exitCode).toBe(0);
    expect((await first.shell("cat /data/keep.txt /made-here")).stdout).toBe("mine\nnew\n");
    const other = await second.shell("cat /data/keep.txt; ls /bin/ls; ls /made-here");
    expect(other.stdout).toBe("kept\n/bin/ls\n");
    expect(other.stderr).toContain("/made-here");
    expect(hashTree(layers)).toEqual(before);
  });

  test("a missing image is a clear error and leaves no sandbox behind", async () => {
    const error = await Sandbox.create({ image: `${registry.host}/test/nope:latest`, backend: "qemu" }).catch((e) => e);
    expect(error.message).toContain("test/nope");
    expect(leftoverSandboxes(home)).toEqual([]);
  });
});

describe("the default root as an image", () => {
  test(`${DEFAULT_IMAGE} runs as an overlay root: busybox there, writes private, its layer unchanged`, async () => {
    const root = await ensureDefaultImage();
    expect(root.layers).toHaveLength(1);
    const before = hashTree(root.layers);
    await using first = await Sandbox.create({ image: DEFAULT_IMAGE, pull: "never", backend: "qemu" });
    await using second = await Sandbox.create({ image: DEFAULT_IMAGE, pull: "never", backend: "qemu" });
    expect(first.image?.id).toBe(root.id);
    const mine = await first.shell("grep -c '^overlay / overlay' /proc/mounts; echo mine > /etc/motd; rm /bin/ls; cat /etc/motd; head -1 /etc/os-release");
    expect(mine.stdout).toBe('1\nmine\nNAME="msb default root"\n');
    const other = await second.shell("ls /etc/motd; ls /bin/ls");
    expect(other.stdout).toBe("/bin/ls\n");
    expect(other.stderr).toContain("/etc/motd");
    expect(hashTree(root.layers)).toEqual(before);
  });
});

describe("image commands", () => {
  const msb = (args: string[]) => {
    const result = Bun.spawnSync([join(repoRoot, "dist", "msb"), ...args], { env: { ...process.env, MSB_HOME: home }, stdin: "ignore" });
    return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
  };
  const listed = () => JSON.parse(msb(["images", "--json"]).stdout) as { id: string; references: string[] }[];

  test("pull, images --json, rmi", () => {
    const pulled = msb(["pull", "-q", image]);
    expect(pulled.code).toBe(0);
    const id = pulled.stdout.trim();
    expect(id).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(listed().find((i) => i.id === id)?.references).toContain(image);
    const removed = msb(["rmi", image]);
    expect(removed.code).toBe(0);
    expect(removed.stdout).toContain(`untagged ${image}`);
    expect(listed().some((i) => i.id === id)).toBe(false);
  });

  test("image import of an OCI layout, then run it by its new tag", () => {
    const imported = msb(["image", "import", layout, "--tag", "local/imported:1"]);
    expect(imported.stderr).toBe("");
    expect(imported.code).toBe(0);
    const run = msb(["run", "-q", "local/imported:1", "--pull", "never", "--", "cat", "/data/keep.txt"]);
    // The imported config's Entrypoint takes the arguments, as Docker does.
    expect(run.stdout).toBe("hello from the image in /app as /app/hello.sh cat /data/keep.txt\n");
    expect(run.code).toBe(0);
  });

  test("bad input is a clear usage error", () => {
    const result = msb(["pull"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/REFERENCE|msb pull needs an image reference/);
    const never = msb(["run", "-q", "--pull", "never", `${registry.host}/test/never-pulled:1`, "--", "true"]);
    expect(never.code).toBe(125);
    expect(never.stderr).toContain("never-pulled");
  });
});

const debian = join(fixtureDir(), "oci");
describe.skipIf(!existsSync(join(debian, "index.json")))(
  `a Debian image with python3 (runs when ${debian} is built, as scripts/setup.sh --test does)`,
  () => {
    test("msb run <debian image> -- python3 -c 'print(2**100)'", async () => {
      await skopeoPush(debian, "bookworm-python3", registry, "test/debian", { creds: false });
      const run = Bun.spawnSync(
        [join(repoRoot, "dist", "msb"), "run", "-q", `${registry.host}/test/debian:bookworm-python3`, "--", "python3", "-c", "print(2**100)"],
        { env: { ...process.env, MSB_HOME: home } },
      );
      expect(run.stderr.toString()).toBe("");
      expect(run.stdout.toString()).toBe(`${2n ** 100n}\n`);
      expect(run.exitCode).toBe(0);
    }, 300_000);
  },
);

test("nothing is left running after the image sandboxes", async () => {
  expect(await eventually(() => processesOf(home).length === 0)).toBe(true);
});
