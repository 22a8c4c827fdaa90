// Frame stream tests: split and coalesced reads, corrupt lengths, and partial writes that must be resent on drain.
import { expect, test } from "bun:test";
import { FrameDecoder, FrameEncoder, FrameStreamError, allocFrame } from "./framing";

const framed = (...frames: number[][]) => {
  const parts = frames.flatMap((f) => [(f.length >>> 24) & 0xff, (f.length >>> 16) & 0xff, (f.length >>> 8) & 0xff, f.length & 0xff, ...f]);
  return new Uint8Array(parts);
};

test("frames split across reads and several frames in one read", () => {
  const got: number[][] = [];
  const all = framed([1, 2, 3], [4], [5, 6]);
  for (const cut of [1, 2, 5, 9, all.length]) {
    got.length = 0;
    const dd = new FrameDecoder();
    dd.push(all.subarray(0, cut), (f) => got.push([...f]));
    dd.push(all.subarray(cut), (f) => got.push([...f]));
    expect(got).toEqual([[1, 2, 3], [4], [5, 6]]);
  }
});

test("a zero or oversized length is a corrupt stream, not an allocation", () => {
  expect(() => new FrameDecoder(100).push(new Uint8Array([0, 0, 0, 0]), () => {})).toThrow(FrameStreamError);
  expect(() => new FrameDecoder(100).push(new Uint8Array([0x7f, 0, 0, 0]), () => {})).toThrow(/outside 1..100/);
});

test("what the sink does not take is kept and resent on drain, in order", async () => {
  const received: number[] = [];
  let budget = 5;
  const enc = new FrameEncoder({ write: (d) => { const n = Math.min(budget, d.length); budget -= n; received.push(...d.subarray(0, n)); return n; }, end() {} }, 10);
  let writable = 0;
  enc.onWritable = () => writable++;
  for (const body of [[1, 2, 3], [4, 5, 6, 7]]) {
    const fr = allocFrame(body.length);
    fr.set(body, 4);
    enc.send(fr);
  }
  await Promise.resolve();
  expect(received.length).toBe(5);
  expect(enc.full).toBe(true);
  budget = 1000;
  enc.drain();
  expect(received).toEqual([...framed([1, 2, 3], [4, 5, 6, 7])]);
  expect(writable).toBe(1);
  expect(enc.bufferedBytes).toBe(0);
});

test("large frames arriving in random chunk sizes come out whole and in order", () => {
  const frames = [70000 - 18, 1, 65535, 1500, 3, 40000].map((n, k) => Array.from({ length: Math.min(n, 65553) }, (_, i) => (i * 7 + k) & 0xff));
  const stream = framed(...frames);
  let x = 99;
  const d = new FrameDecoder();
  const got: number[][] = [];
  for (let o = 0; o < stream.length; ) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const n = 1 + (x % 30000);
    d.push(stream.subarray(o, o + n), (f) => got.push([...f]));
    o += n;
  }
  expect(got.length).toBe(frames.length);
  expect(got).toEqual(frames);
});
