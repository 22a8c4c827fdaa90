import { expect, test } from "bun:test";
import { commandFor, progressBars } from "./index.ts";

test("commandFor follows Docker: args replace Cmd and keep Entrypoint", () => {
  expect(commandFor({ entrypoint: ["/init"], cmd: ["serve"] })).toEqual(["/init", "serve"]);
  expect(commandFor({ entrypoint: ["/init"], cmd: ["serve"] }, ["debug"])).toEqual(["/init", "debug"]);
  expect(commandFor({ cmd: ["python3"] }, ["python3", "-c", "print(1)"])).toEqual(["python3", "-c", "print(1)"]);
  expect(() => commandFor({}, [], "img:1")).toThrow(/img:1 has no Entrypoint or Cmd/);
});

test("progress without a TTY prints one line per layer state change", () => {
  let text = "";
  const p = progressBars({ write: (s: string) => (text += s), isTTY: false });
  const digest = "sha256:" + "ab".repeat(32);
  p({ kind: "resolved", image: "x:1", id: "sha256:1", layers: 1, totalBytes: 2 << 20 });
  p({ kind: "layer", image: "x:1", index: 0, digest, status: "downloading", downloaded: 1, total: 2 });
  p({ kind: "layer", image: "x:1", index: 0, digest, status: "downloading", downloaded: 2, total: 2 });
  p({ kind: "layer", image: "x:1", index: 0, digest, status: "done", downloaded: 2, total: 2 });
  p({ kind: "done", image: "x:1", id: "sha256:1", reused: false });
  expect(text).toBe("x:1: 1 layer(s), 2.0 MiB\nx:1: layer 1 abababababab downloading\nx:1: layer 1 abababababab done\nx:1: pulled (sha256:1)\n");
});

test("progress on a TTY redraws bars in place", () => {
  let text = "";
  const p = progressBars({ write: (s: string) => (text += s), isTTY: true });
  const digest = "sha256:" + "cd".repeat(32);
  p({ kind: "layer", image: "x:1", index: 0, digest, status: "downloading", downloaded: 1 << 20, total: 2 << 20 });
  p({ kind: "layer", image: "x:1", index: 0, digest, status: "done", downloaded: 2 << 20, total: 2 << 20 });
  expect(text).toContain("[###############...............] downloading 1.0 MiB / 2.0 MiB");
  expect(text).toContain("\x1b[1A");
  expect(text).toContain("[##############################] done");
});
