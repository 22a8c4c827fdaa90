// The image store's index in the state database: publish/resolve/remove through SQLite, and the
// one-time move of an index kept in files by earlier versions.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImageStore, type ImageRecord } from "./store";
import { stateDb } from "../state";

const work = mkdtempSync(join(tmpdir(), "msb-store-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const record = (hex: string): ImageRecord => ({
  id: `sha256:${hex}`,
  configDigest: `sha256:${"c".repeat(64)}`,
  config: { config: { Cmd: ["/bin/sh"] } },
  layers: [],
  source: "example.com/app:1",
  createdAt: "2026-11-30T00:00:00.000Z",
});

describe("the image index", () => {
  test("records and references live in the state database, tagged, resolved and removed there", () => {
    const home = mkdtempSync(join(work, "home-"));
    const store = new ImageStore(home);
    const rec = record("a".repeat(64));
    store.publish(rec, new Map(), [{ registry: "example.com", repository: "app", tag: "1" }]);
    expect(store.resolve("example.com/app:1")).toBe(rec.id);
    expect(store.resolve("aaaaaaaaaaaa")).toBe(rec.id);
    const rows = stateDb(home).query("SELECT id FROM images").all();
    expect(rows).toEqual([{ id: rec.id }]);
    expect(existsSync(join(home, "images", "records"))).toBe(false);
    expect(store.remove("example.com/app:1")).toEqual({ untagged: ["example.com/app:1"], deleted: [rec.id] });
    expect(store.resolve("example.com/app:1")).toBeUndefined();
    expect(stateDb(home).query("SELECT COUNT(*) AS n FROM image_refs").get()).toEqual({ n: 0 });
  });

  test("an index kept in files by an earlier version is moved into the database once", () => {
    const home = mkdtempSync(join(work, "home-"));
    const rec = record("b".repeat(64));
    mkdirSync(join(home, "images", "records"), { recursive: true });
    mkdirSync(join(home, "images", "refs"), { recursive: true });
    writeFileSync(join(home, "images", "records", `${"b".repeat(64)}.json`), JSON.stringify(rec));
    writeFileSync(join(home, "images", "refs", encodeURIComponent("example.com/app:2")), `${rec.id}\n`);
    const store = new ImageStore(home);
    expect(store.resolve("example.com/app:2")).toBe(rec.id);
    expect(store.record(rec.id).source).toBe("example.com/app:1");
    expect(existsSync(join(home, "images", "records"))).toBe(false);
    expect(existsSync(join(home, "images", "refs"))).toBe(false);
    expect(new ImageStore(home).list().map((i) => i.references)).toEqual([["example.com/app:2"]]);
  });
});
