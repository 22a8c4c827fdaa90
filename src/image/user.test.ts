// The config's User: malformed values are refused naming the image; names and groups resolve
// against the image's own /etc/passwd and /etc/group as overlayfs would show them (top layer
// first, whiteouts and opaque directories honoured).

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImageError } from "./errors.ts";
import { tarToErofs } from "./layer.ts";
import { writeTar, type TarWriteEntry } from "./tarwriter.ts";
import { parseImageUser, readFromLayers, resolveImageUser } from "./user.ts";

let dir: string;
let n = 0;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), "msb-user-test-")); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function layer(entries: TarWriteEntry[]): Promise<string> {
  const out = join(dir, `l${n++}.erofs`);
  await tarToErofs(new Blob([writeTar(entries)]).stream(), out);
  return out;
}

test("User values: accepted forms and clear refusals naming the image", () => {
  expect(parseImageUser("app")).toEqual({ user: "app" });
  expect(parseImageUser("1000:50")).toEqual({ user: "1000", group: "50" });
  expect(parseImageUser("www-data:staff")).toEqual({ user: "www-data", group: "staff" });
  for (const [bad, why] of [
    ["a:b:c", /more than one ':'/],
    ["", /not a valid user name/],
    ["ro ot", /not a valid user name/],
    ["../etc", /not a valid user name/],
    ["4294967295", /uid beyond/],
    ["app:99999999999", /gid beyond/],
    ["x".repeat(100), /too long/],
  ] as const) {
    let err: unknown;
    try { parseImageUser(bad, "image foo:1"); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(ImageError);
    expect((err as Error).message).toMatch(/^image foo:1: its config's User /);
    expect((err as Error).message).toMatch(why);
  }
});

test("names resolve against the image's passwd/group across layers; missing names are errors", async () => {
  const base = await layer([
    { path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\nold:x:7:7::/:/bin/false\n" },
    { path: "etc/group", data: "root:x:0:\napp:x:1000:\nstaff:x:50:app\n" },
    { path: "opt/conf/passwd", data: "hidden:x:1:1::/:/bin/sh\n" },
  ]);
  const top = await layer([
    // Layer 2 rewrites passwd (adds svc, drops old) and deletes group's "staff" by replacing the file.
    { path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\nsvc:x:901:902::/srv:/bin/false\n" },
    { path: "opt/conf/", type: "dir" },
    { path: "opt/conf/.wh..wh..opq", data: "" },
  ]);
  const layers = [base, top];
  expect(resolveImageUser(layers, "app")).toEqual({ uid: 1000, gid: 1000, home: "/home/app" });
  expect(resolveImageUser(layers, "svc:staff")).toEqual({ uid: 901, gid: 50, home: "/srv" });
  expect(resolveImageUser(layers, "1000")).toEqual({ uid: 1000, gid: 1000, home: "/home/app" });
  expect(resolveImageUser(layers, "4242")).toEqual({ uid: 4242, gid: 0 });
  expect(resolveImageUser(layers, "4242:7")).toEqual({ uid: 4242, gid: 7 });
  expect(() => resolveImageUser(layers, "old", "image x:1")).toThrow(/image x:1: .*names user "old", who is not in the image's \/etc\/passwd/);
  expect(() => resolveImageUser(layers, "app:nogroup", "image x:1")).toThrow(/names group "nogroup", which is not in the image's \/etc\/group/);
  // The opaque directory hides the lower layer's file; a whiteout hides it too.
  expect(readFromLayers(layers, "opt/conf/passwd")).toBeUndefined();
  expect(readFromLayers([base], "opt/conf/passwd")).toBeDefined();
  const gone = await layer([{ path: "etc/.wh.group", data: "" }]);
  expect(readFromLayers([base, gone], "etc/group")).toBeUndefined();
  expect(() => resolveImageUser([base, gone], "app:staff")).toThrow(/not in the image's \/etc\/group/);
  // No passwd at all: numeric ids still work, names cannot.
  const bare = await layer([{ path: "bin/true", data: "" }]);
  expect(resolveImageUser([bare], "65534:65534")).toEqual({ uid: 65534, gid: 65534 });
  expect(() => resolveImageUser([bare], "nobody")).toThrow(/not in the image's \/etc\/passwd/);
});
