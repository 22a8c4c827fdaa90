// Volumes end to end on the qemu backend (virtio-fs through the supervisor's vhost-user-fs
// backend), plus the host-side parsing and named-volume bookkeeping.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Sandbox } from "./sandbox";
import { e2eBackends, removeHome, useTempHome } from "./testing";
import { createVolume, guestMounts, inspectVolume, listVolumes, parseTmpfsFlag, parseVolumeFlag, removeVolume, volumeUsers } from "./volumes";
import { parseSandboxOptions } from "./config";
import { withVolumeFlags } from "./cli/volume";
import { flagValues } from "./cli/args";
import { stateDb } from "./state";

const home = useTempHome();
const work = mkdtempSync(join(tmpdir(), "msb-volumes-"));
afterAll(() => {
  removeHome(home);
  rmSync(work, { recursive: true, force: true });
});

const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

describe("volume options", () => {
  test("-v and --tmpfs parse; host paths become absolute at parse time", () => {
    expect(parseVolumeFlag("./src:/work:ro")).toEqual({ source: "./src", target: "/work", readonly: true });
    expect(parseVolumeFlag("data:/data")).toEqual({ source: "data", target: "/data", readonly: false });
    expect(() => parseVolumeFlag("/only-one-part")).toThrow("HOST_PATH:GUEST_PATH");
    expect(() => parseVolumeFlag("/a:/b:rx")).toThrow("HOST_PATH:GUEST_PATH");
    expect(parseTmpfsFlag("/scratch:64m")).toEqual({ tmpfs: true, target: "/scratch", sizeMiB: 64 });
    expect(parseTmpfsFlag("/scratch:128")).toEqual({ tmpfs: true, target: "/scratch", sizeMiB: 128 });
    expect(parseTmpfsFlag("/scratch:1g")).toEqual({ tmpfs: true, target: "/scratch", sizeMiB: 1024 });
    expect(parseTmpfsFlag("/t")).toEqual({ tmpfs: true, target: "/t" });
    expect(() => parseTmpfsFlag("/t:lots")).toThrow("not a size");
    const config = parseSandboxOptions({ volumes: [{ source: "rel/dir", target: "/w" }, { source: "named", target: "/n" }] });
    expect(config.volumes[0]).toEqual({ source: join(process.cwd(), "rel/dir"), target: "/w", readonly: false });
    expect(config.volumes[1]).toEqual({ source: "named", target: "/n", readonly: false });
    // Parsing the stored (absolute) form again changes nothing.
    expect(parseSandboxOptions({ volumes: config.volumes }).volumes).toEqual(config.volumes);
    expect(() => parseSandboxOptions({ volumes: [{ source: "/x", target: "relative" }] })).toThrow("absolute path");
    expect(() => parseSandboxOptions({ volumes: [{ source: "/x", target: "/a/../b" }] })).toThrow("..");
    expect(() => parseSandboxOptions({ volumes: [{ source: "/x", target: "/" }] })).toThrow("root");
  });

  test("every -v/--volume/--tmpfs is kept (citty alone keeps only the last)", () => {
    const own = ["-v", "/a:/a", "--volume=/b:/b:ro", "--tmpfs", "/t:4m", "--volume", "c:/c", "-e", "X=1"];
    expect(flagValues(own, ["v", "volume"])).toEqual(["/a:/a", "/b:/b:ro", "c:/c"]);
    expect(withVolumeFlags({ volumes: [{ source: "/f", target: "/f" }] }, own).volumes).toEqual([
      { source: "/f", target: "/f" },
      { source: "/a", target: "/a", readonly: false },
      { source: "/b", target: "/b", readonly: true },
      { source: "c", target: "/c", readonly: false },
      { tmpfs: true, target: "/t", sizeMiB: 4 },
    ]);
  });

  test("shares and INIT mounts: directories, single files, named volumes, tmpfs; missing sources named", () => {
    const opts = mkdtempSync(join(tmpdir(), "msb-volume-opts-"));
    mkdirSync(join(opts, "dir"), { recursive: true });
    writeFileSync(join(opts, "file.conf"), "x");
    const { shares, mounts } = guestMounts(
      parseSandboxOptions({
        volumes: [
          { source: join(opts, "dir"), target: "/d", readonly: true },
          { source: join(opts, "file.conf"), target: "/etc/file.conf" },
          { source: "optsvol", target: "/v" },
          { tmpfs: true, target: "/t", sizeMiB: 8 },
        ],
      }).volumes,
      "sb",
    );
    expect(shares).toEqual([
      { tag: "msbfs0", hostPath: join(opts, "dir"), readOnly: true },
      { tag: "msbfs1", hostPath: join(opts, "file.conf"), readOnly: false },
      { tag: "msbfs2", hostPath: inspectVolume("optsvol").path, readOnly: false },
    ]);
    expect(mounts).toEqual([
      { kind: "virtiofs", tag: "msbfs0", path: "/d", readonly: true },
      { kind: "virtiofs", tag: "msbfs1", path: "/etc/file.conf", readonly: false, file: "file.conf" },
      { kind: "virtiofs", tag: "msbfs2", path: "/v", readonly: false },
      { kind: "tmpfs", path: "/t", sizeMiB: 8 },
    ]);
    expect(() => parseSandboxOptions({ volumes: [{ target: "/x" }] })).toThrow("either source");
    expect(() => parseSandboxOptions({ volumes: [{ source: "/a", tmpfs: true, target: "/x" }] })).toThrow("either source");
    expect(() => guestMounts([{ source: join(work, "nope"), target: "/x", readonly: false }], "sb")).toThrow(`${join(work, "nope")} does not exist`);
    removeVolume("optsvol");
    rmSync(opts, { recursive: true });
  });

  test("named volumes: create, ls, inspect, rm; rm refused while a sandbox uses it unless forced", () => {
    const v = createVolume("bookkeeping");
    expect(existsSync(v.path)).toBe(true);
    expect(() => createVolume("bookkeeping")).toThrow("already exists");
    expect(() => createVolume("../escape")).toThrow("not valid");
    expect(listVolumes().map((x) => x.name)).toContain("bookkeeping");
    // Recorded in the state database's volumes table.
    expect(stateDb().query("SELECT name FROM volumes WHERE name = 'bookkeeping'").get()).toEqual({ name: "bookkeeping" });
    const users = () => [["sb1", [{ source: "bookkeeping", target: "/a", readonly: false }]], ["sb2", []]] as [string, never[]][];
    expect(volumeUsers("bookkeeping", users)).toEqual(["sb1"]);
    removeVolume("bookkeeping");
    expect(() => inspectVolume("bookkeeping")).toThrow("no volume named bookkeeping");
    expect(stateDb().query("SELECT name FROM volumes WHERE name = 'bookkeeping'").get()).toBeNull();
  });
});

for (const { backend, skip } of await e2eBackends()) {
  describe.skipIf(skip !== undefined)(`volumes on ${backend}${skip ? ` (skipped: ${skip})` : ""}`, () => {
    const share = join(work, "share");
    const ro = join(work, "ro");
    const outside = join(work, "secret.txt");
    const single = join(work, "single");
    let sb: Sandbox;

    beforeAll(async () => {
      mkdirSync(share, { recursive: true });
      mkdirSync(ro, { recursive: true });
      mkdirSync(single, { recursive: true });
      writeFileSync(outside, "HOST SECRET\n");
      writeFileSync(join(share, "from-host.txt"), "written on the host\n");
      writeFileSync(join(ro, "keep.txt"), "read only\n");
      writeFileSync(join(single, "app.conf"), "setting=1\n");
      writeFileSync(join(single, "sibling.key"), "PRIVATE SIBLING\n");
      symlinkSync(outside, join(share, "abs-link"));
      symlinkSync("../secret.txt", join(share, "rel-link"));
      symlinkSync("..", join(share, "up-link"));
      writeFileSync(join(share, "suid"), "#!/bin/sh\n");
      chmodSync(join(share, "suid"), 0o4755);
      Bun.spawnSync(["mknod", join(share, "hostnull"), "c", "1", "3"]);
      sb = await Sandbox.create({
        backend,
        volumes: [
          { source: share, target: "/work" },
          { source: ro, target: "/ro", readonly: true },
          { source: join(single, "app.conf"), target: "/etc/app.conf" },
          { tmpfs: true, target: "/scratch", sizeMiB: 32 },
        ],
      });
    }, 120_000);
    afterAll(async () => {
      await sb?.stop();
    });

    test("read and write both ways, contents checked", async () => {
      const r = await sb.shell("cat /work/from-host.txt && printf 'written in the guest\\n' > /work/from-guest.txt && mkdir -p /work/d/e && echo nested > /work/d/e/f");
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe("written on the host\n");
      expect(readFileSync(join(share, "from-guest.txt"), "utf8")).toBe("written in the guest\n");
      expect(readFileSync(join(share, "d/e/f"), "utf8")).toBe("nested\n");
      writeFileSync(join(share, "later.txt"), "changed on the host while running\n");
      const again = await sb.shell("cat /work/later.txt; echo append >> /work/from-guest.txt; mv /work/d/e/f /work/moved; ls /work/d/e | wc -l");
      expect(again.stdout).toBe("changed on the host while running\n0\n");
      expect(readFileSync(join(share, "from-guest.txt"), "utf8")).toBe("written in the guest\nappend\n");
      expect(readFileSync(join(share, "moved"), "utf8")).toBe("nested\n");
    });

    test(":ro rejects writes from the guest even as root, and after a guest remount rw", async () => {
      const r = await sb.shell("id -u; cat /ro/keep.txt; echo x > /ro/new 2>&1; echo x >> /ro/keep.txt; rm /ro/keep.txt; touch /ro/keep.txt; mkdir /ro/d; echo done");
      expect(r.stdout).toStartWith("0\nread only\n");
      expect(r.stdout).toEndWith("done\n");
      expect(r.stderr).toContain("Read-only file system");
      // The guest's root can drop its own ro flag; the host still refuses.
      const remount = await sb.shell("mount -o remount,rw /ro && echo remounted; echo x > /ro/new; echo y >> /ro/keep.txt; rm -f /ro/keep.txt; echo done");
      expect(remount.stdout).toBe("remounted\ndone\n");
      expect(remount.stderr).toContain("Read-only file system");
      expect(readdirSync(ro)).toEqual(["keep.txt"]);
      expect(readFileSync(join(ro, "keep.txt"), "utf8")).toBe("read only\n");
    });

    test("symlinks, .., hardlinks, renames and device files do not reach outside the share", async () => {
      const r = await sb.shell(
        [
          "cat /work/abs-link /work/rel-link /work/up-link/secret.txt /work/../secret.txt 2>/dev/null",
          "ls /work/up-link/ 2>/dev/null",
          "ln /etc/passwd /work/passwd-link 2>/dev/null && echo LINKED",
          "mknod /work/null2 c 1 3 2>/dev/null && echo MKNOD",
          "head -c 10 /work/hostnull 2>/dev/null && echo OPENED-DEV",
          "echo x > /work/hostnull 2>/dev/null && echo WROTE-DEV",
          "echo moving > /work/tomove && mv /work/tomove /tmp/moved && cat /tmp/moved",
          "ls -l /work/suid | cut -c1-10",
          "cp /bin/busybox /work/bb && chmod 4755 /work/bb && ls -l /work/bb | cut -c1-10",
          "echo end",
        ].join("; "),
      );
      expect(r.stdout).not.toContain("HOST SECRET");
      expect(r.stdout).not.toContain("secret.txt");
      expect(r.stdout).not.toContain("LINKED");
      expect(r.stdout).not.toContain("MKNOD");
      expect(r.stdout).not.toContain("OPENED-DEV");
      expect(r.stdout).not.toContain("WROTE-DEV");
      expect(r.stdout).toContain("moving\n");
      // setuid is not honoured from the host, nor given to the host.
      expect(r.stdout).toContain("-rwxr-xr-x\n-rwxr-xr-x\n");
      expect(statSync(join(share, "bb")).mode & 0o7777).toBe(0o755);
      expect(existsSync(join(share, "tomove"))).toBe(false);
      expect(existsSync(join(share, "passwd-link"))).toBe(false);
      expect(existsSync(join(share, "null2"))).toBe(false);
      expect(readdirSync(work).sort()).toEqual(["ro", "secret.txt", "share", "single"].sort());
    });

    test("a directory swapped for a symlink to outside during lookups never leaks the outside", async () => {
      mkdirSync(join(work, "outdir"));
      writeFileSync(join(work, "outdir/f"), "OUTSIDE\n");
      mkdirSync(join(share, "race"));
      writeFileSync(join(share, "race/f"), "inside\n");
      const reader = sb.shell("i=0; while [ $i -lt 300 ]; do cat /work/race/f 2>/dev/null; ls /work/race >/dev/null 2>&1; i=$((i+1)); done; echo finished");
      let swaps = 0;
      const deadline = Date.now() + 60_000;
      let finished = false;
      reader.then(() => (finished = true));
      while (!finished && Date.now() < deadline) {
        renameSync(join(share, "race"), join(share, "race-dir"));
        symlinkSync(join(work, "outdir"), join(share, "race"));
        await Bun.sleep(1);
        rmSync(join(share, "race"));
        renameSync(join(share, "race-dir"), join(share, "race"));
        swaps++;
        await Bun.sleep(1);
      }
      const r = await reader;
      rmSync(join(work, "outdir"), { recursive: true });
      expect(r.stdout).toEndWith("finished\n");
      expect(r.stdout).toContain("inside\n");
      expect(r.stdout).not.toContain("OUTSIDE");
      expect(swaps).toBeGreaterThan(10);
    }, 120_000);

    test("a single host file is shared alone: writable through, siblings invisible", async () => {
      const r = await sb.shell("cat /etc/app.conf; echo setting=2 > /etc/app.conf; ls -a /run/.msb-shares/* 2>/dev/null; cat /run/.msb-shares/*/sibling.key 2>/dev/null; mount | grep -c msbfs2");
      // The staging mount was detached: its directory is empty.
      expect(r.stdout).toBe("setting=1\n.\n..\n1\n");
      expect(r.stdout).not.toContain("PRIVATE SIBLING");
      expect(readFileSync(join(single, "app.conf"), "utf8")).toBe("setting=2\n");
      expect(readFileSync(join(single, "sibling.key"), "utf8")).toBe("PRIVATE SIBLING\n");
    });

    test("permissions as documented: host owner shown, guest mode kept exactly, chown refused", async () => {
      const r = await sb.shell("umask 022; echo a > /work/perm; chmod 640 /work/perm; stat -c '%u %a' /work/perm; chown 1234 /work/perm && echo CHOWNED; mkdir -m 700 /work/pdir; stat -c %a /work/pdir");
      const host = statSync(join(share, "perm"));
      expect(r.stdout).toBe(`${process.getuid!()} 640\n700\n`);
      expect(r.stderr).toContain("Operation not permitted");
      expect(host.mode & 0o777).toBe(0o640);
      expect(host.uid).toBe(process.getuid!());
      expect(statSync(join(share, "pdir")).mode & 0o777).toBe(0o700);
    });

    test("tmpfs mounts with the size asked for", async () => {
      const r = await sb.shell("mount | grep ' /scratch '; dd if=/dev/zero of=/scratch/fill bs=1M count=40 2>&1 | grep -o 'No space left on device'");
      expect(r.stdout).toContain("tmpfs on /scratch type tmpfs (rw,nosuid,nodev,relatime,size=32768k)");
      expect(r.stdout).toContain("No space left on device");
    });

    test("a 1 GiB file both ways, checksummed", async () => {
      const hash = createHash("sha256");
      const path = join(share, "big.bin");
      rmSync(path, { force: true });
      for (let i = 0; i < 16; i++) {
        const chunk = randomBytes(64 << 20);
        hash.update(chunk);
        writeFileSync(path, chunk, { flag: "a" });
      }
      const expected = hash.digest("hex");
      const r = await sb.shell("sha256sum /work/big.bin | cut -d' ' -f1; cp /work/big.bin /work/big-copy.bin && echo copied");
      expect(r.stdout).toBe(`${expected}\ncopied\n`);
      const copy = createHash("sha256");
      for await (const part of Bun.file(join(share, "big-copy.bin")).stream()) copy.update(part);
      expect(copy.digest("hex")).toBe(expected);
      rmSync(path);
      rmSync(join(share, "big-copy.bin"));
    }, 600_000);

    test("10,000 small files both ways, checksummed", async () => {
      mkdirSync(join(share, "many-in"));
      let all = "";
      for (let i = 0; i < 10_000; i++) {
        const body = `host file ${i} ${sha256(String(i)).slice(0, 16)}\n`;
        writeFileSync(join(share, "many-in", String(i)), body);
        all += body;
      }
      const r = await sb.shell(
        "cd /work/many-in && cat $(seq 0 9999) | sha256sum | cut -d' ' -f1; " +
          "mkdir /work/many-out && cd /work/many-out && i=0; while [ $i -lt 10000 ]; do echo \"guest file $i\" > $i; i=$((i+1)); done; ls | wc -l",
      );
      expect(r.stderr).toBe("");
      expect(r.stdout).toBe(`${sha256(all)}\n10000\n`);
      const out = readdirSync(join(share, "many-out"));
      expect(out.length).toBe(10_000);
      let want = "";
      let got = "";
      for (let i = 0; i < 10_000; i++) {
        want += `guest file ${i}\n`;
        got += readFileSync(join(share, "many-out", String(i)), "utf8");
      }
      expect(sha256(got)).toBe(sha256(want));
    }, 600_000);
  });

  describe.skipIf(skip !== undefined)(`named volumes on ${backend}${skip ? ` (skipped: ${skip})` : ""}`, () => {
    test("a volume outlives its sandbox, is seen by the next, and rm is refused while in use", async () => {
      const first = await Sandbox.create({ backend, name: "vol-writer", volumes: [{ source: "keepme", target: "/data" }] });
      const w = await first.shell("echo persisted > /data/note && sync && cat /data/note");
      expect(w.stdout).toBe("persisted\n");
      await first.stop();
      expect(inspectVolume("keepme").usedBy).toEqual(["vol-writer"]);
      expect(() => removeVolume("keepme")).toThrow("used by sandbox vol-writer");
      await Sandbox.remove("vol-writer");
      expect(readFileSync(join(inspectVolume("keepme").path, "note"), "utf8")).toBe("persisted\n");
      const second = await Sandbox.create({ backend, volumes: [{ source: "keepme", target: "/again", readonly: true }] });
      const r = await second.shell("cat /again/note");
      await second.stop();
      expect(r.stdout).toBe("persisted\n");
      expect(inspectVolume("keepme").usedBy).toEqual([]);
      removeVolume("keepme");
      expect(listVolumes().map((v) => v.name)).not.toContain("keepme");
    }, 180_000);

    test("two running sandboxes share a volume; a restarted sandbox gets its volumes back", async () => {
      const a = await Sandbox.create({ backend, name: "vol-a", volumes: [{ source: "shared", target: "/shared" }] });
      const b = await Sandbox.create({ backend, volumes: [{ source: "shared", target: "/shared" }] });
      try {
        expect((await a.shell("echo from-a > /shared/msg && cat /shared/msg")).stdout).toBe("from-a\n");
        expect((await b.shell("cat /shared/msg; echo from-b >> /shared/msg")).stdout).toBe("from-a\n");
        // Attributes are cached for up to 1 s in each guest (documented), then the other's write shows.
        await Bun.sleep(1500);
        expect((await a.shell("cat /shared/msg")).stdout).toBe("from-a\nfrom-b\n");
        expect(inspectVolume("shared").usedBy).toContain("vol-a");
      } finally {
        await b.stop();
        await a.stop();
      }
      const again = await Sandbox.start("vol-a");
      const r = await again.shell("cat /shared/msg");
      await again.stop();
      await Sandbox.remove("vol-a");
      expect(r.stdout).toBe("from-a\nfrom-b\n");
      removeVolume("shared");
    }, 240_000);
  });
}
