// The client against a scripted peer on a unix socket (the edge of the unit: no VM): what it
// sends for exec options and fs calls, and that a peer breaking flow control or sending junk is
// refused with an error instead of growing memory or hanging.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";
import { AgentClient } from "./client";
import { FrameDecoder, INITIAL_WINDOW, MessageType, TRANSFER_WINDOW, decodeJson, encodeFrame, encodeJsonFrame, type Frame } from "./protocol";
import { SandboxFs } from "../fs";
import { MsbError } from "../errors";

const dir = mkdtempSync(join(tmpdir(), "msb-client-test-"));
let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup) f();
  cleanup = [];
});
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

/** A peer that records every frame and lets the test answer. */
async function peer(name: string, onFrame: (frame: Frame, send: (bytes: Uint8Array) => void) => void) {
  const path = join(dir, `${name}.sock`);
  const frames: Frame[] = [];
  const decoder = new FrameDecoder();
  let socket: Socket | undefined;
  // Writes the socket did not take yet, sent on drain, so no frame is lost.
  let pending: Uint8Array[] = [];
  const flush = (s: Socket) => {
    while (pending.length > 0) {
      const head = pending[0]!;
      const n = s.write(head);
      if (n < head.length) {
        pending[0] = head.subarray(Math.max(n, 0));
        return;
      }
      pending.shift();
    }
  };
  const server = Bun.listen({
    unix: path,
    socket: {
      open(s) {
        socket = s;
      },
      drain(s) {
        flush(s);
      },
      data(s, data) {
        for (const frame of decoder.push(new Uint8Array(data))) {
          frames.push(frame);
          onFrame(frame, (bytes) => {
            pending.push(bytes);
            if (pending.length === 1) flush(s);
          });
        }
      },
    },
  });
  const client = await AgentClient.connect(path, `sandbox ${name}`);
  cleanup.push(() => {
    client.close();
    server.stop(true);
  });
  return { client, frames, close: () => socket?.end() };
}

describe("exec requests", () => {
  test("user, timeoutMs and tty go out as documented; resize sends RESIZE", async () => {
    const { client, frames } = await peer("opts", () => {});
    const proc = client.spawn({ argv: ["sh"], user: "alice:staff", timeoutMs: 1500, tty: { rows: 30, cols: 100 }, stdin: true });
    proc.resize(132, 50);
    await Bun.sleep(50);
    expect(decodeJson(frames[0]!.payload)).toEqual({ argv: ["sh"], stdin: true, user: "alice:staff", timeoutMs: 1500, tty: { rows: 30, cols: 100 } });
    expect(frames[1]!.type).toBe(MessageType.RESIZE);
    expect(decodeJson(frames[1]!.payload)).toEqual({ rows: 50, cols: 132 });
    expect(() => client.spawn({ argv: ["x"], timeoutMs: 0 })).toThrow("timeoutMs");
    expect(() => client.spawn({ argv: ["x"], tty: { rows: 0, cols: 80 } })).toThrow("terminal size");
    expect(() => client.spawn({ argv: ["x"] }).resize(80, 24)).toThrow("tty");
  });

  test("EXIT with timedOut reaches the status", async () => {
    const { client } = await peer("timeout", (f, send) => {
      if (f.type === MessageType.EXEC) send(encodeJsonFrame(f.stream, MessageType.EXIT, { code: null, signal: 9, timedOut: true }));
    });
    expect(await client.spawn({ argv: ["sleep", "9"], timeoutMs: 10 }).wait()).toEqual({ code: null, signal: 9, timedOut: true });
  });

  test("output beyond the granted credit kills the command and fails it", async () => {
    const { client, frames } = await peer("flood", (f, send) => {
      if (f.type !== MessageType.EXEC) return;
      // A hostile agent ignores flow control: 5 chunks of 64 KiB against a 256 KiB window.
      for (let i = 0; i < 5; i++) send(encodeFrame(f.stream, MessageType.STDOUT, new Uint8Array(64 * 1024)));
    });
    const proc = client.spawn({ argv: ["yes"] });
    const error = await proc.wait().then(() => undefined, (e) => e as MsbError);
    expect(error?.code).toBe("protocol");
    expect(error?.message).toContain("sandbox flood");
    await Bun.sleep(50);
    expect(frames.some((f) => f.type === MessageType.SIGNAL)).toBe(true);
  });

  test("a dropped connection rejects waiting calls at once, naming the sandbox", async () => {
    const { client, close } = await peer("drop", () => {});
    const proc = client.spawn({ argv: ["sleep", "100"] });
    const fs = new SandboxFs(client);
    const stat = fs.stat("/tmp");
    close();
    for (const p of [proc.wait(), stat]) {
      const error = await p.then(() => undefined, (e) => e as MsbError);
      expect(error?.code).toBe("disconnected");
      expect(error?.message).toContain("sandbox drop");
    }
  });
});

describe("fs requests", () => {
  test("a read widens its window to TRANSFER_WINDOW and refuses data beyond it", async () => {
    const { client, frames } = await peer("read", (f, send) => {
      if (f.type !== MessageType.FILE) return;
      // The stream pulls one chunk ahead (returning its credit), so two chunks over the window.
      const chunks = TRANSFER_WINDOW / (64 * 1024) + 2;
      for (let i = 0; i < chunks; i++) send(encodeFrame(f.stream, MessageType.DATA, new Uint8Array(64 * 1024)));
    });
    const fs = new SandboxFs(client);
    const reader = fs.read("/big").getReader();
    // Do not consume: everything beyond the widened window is over the limit.
    await Bun.sleep(200);
    expect(frames[1]!.type).toBe(MessageType.WINDOW);
    expect(new DataView(frames[1]!.payload.buffer, frames[1]!.payload.byteOffset).getUint32(0)).toBe(TRANSFER_WINDOW - INITIAL_WINDOW);
    const error = await (async () => {
      for (;;) if ((await reader.read()).done) return undefined;
    })().catch((e) => e as MsbError);
    expect(error?.code).toBe("protocol");
  });

  test("errors from the agent become MsbErrors with its code; list parses lines and bounds them", async () => {
    const { client } = await peer("errors", (f, send) => {
      if (f.type !== MessageType.FILE) return;
      const req = decodeJson(f.payload);
      if (req.op === "stat") send(encodeJsonFrame(f.stream, MessageType.ERROR, { code: "not_found", message: "stat /x: No such file or directory (os error 2)" }));
      if (req.op === "list" && req.path === "/ok") {
        send(encodeFrame(f.stream, MessageType.DATA, new TextEncoder().encode('{"name":"a","type":"file","size":1,"mode":420,"mtimeMs":5,"uid":0,"gid":0}\n{"name":"b",')));
        send(encodeFrame(f.stream, MessageType.DATA, new TextEncoder().encode('"type":"directory","size":0,"mode":493,"mtimeMs":6,"uid":0,"gid":0}\n')));
        send(encodeJsonFrame(f.stream, MessageType.FILE_RESULT, { count: 2 }));
      }
      if (req.op === "list" && req.path === "/endless") {
        for (let i = 0; i < 3; i++) send(encodeFrame(f.stream, MessageType.DATA, new Uint8Array(60 * 1024).fill(0x41)));
      }
    });
    const fs = new SandboxFs(client);
    const error = await fs.stat("/x").then(() => undefined, (e) => e as MsbError);
    expect(error?.code).toBe("not_found");
    expect(error?.message).toBe("sandbox errors: stat /x: No such file or directory (os error 2)");
    expect((await fs.list("/ok")).map((e) => [e.name, e.type, e.mode])).toEqual([["a", "file", 0o644], ["b", "directory", 0o755]]);
    const endless = await fs.list("/endless").then(() => undefined, (e) => e as MsbError);
    expect(endless?.code).toBe("protocol");
    await expect(fs.write("relative", "x")).rejects.toThrow("absolute");
    await expect(fs.write("/x", "x", { mode: 0o10000 })).rejects.toThrow("mode");
  });

  test("copyOut refuses entry names that would escape the destination", async () => {
    const { client } = await peer("escape", (f, send) => {
      if (f.type !== MessageType.FILE) return;
      const req = decodeJson(f.payload);
      if (req.op === "stat") send(encodeJsonFrame(f.stream, MessageType.FILE_RESULT, { type: "directory", size: 0, mode: 0o755, mtimeMs: 0, uid: 0, gid: 0 }));
      if (req.op === "list") {
        send(encodeFrame(f.stream, MessageType.DATA, new TextEncoder().encode('{"name":"../../escaped","type":"file","size":1,"mode":420,"mtimeMs":0,"uid":0,"gid":0}\n')));
        send(encodeJsonFrame(f.stream, MessageType.FILE_RESULT, { count: 1 }));
      }
    });
    const out = join(dir, "out");
    const error = await new SandboxFs(client).copyOut("/d", out).then(() => undefined, (e) => e as MsbError);
    expect(error?.code).toBe("invalid_entry");
    expect(error?.message).toContain("../../escaped");
  });
});
