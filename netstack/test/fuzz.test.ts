// Runs the fuzz target for a bounded number of frames per seed (longer runs: `bun netstack/test/fuzz.ts <seed> <n>`).
import { expect, test } from "bun:test";
import { checkEmitted, fuzzInterface } from "./fuzz";

test("160k mutated frames never throw and every frame sent back parses", () => {
  let total = 0;
  for (const seed of [1, 2, 3, 4]) {
    const { stats, sent } = fuzzInterface(seed, 40_000);
    expect(stats.rxFrames).toBe(40_000);
    expect(stats.dropped).toBeGreaterThan(8_000); // most mutations are invalid and must be counted as drops
    for (const f of sent) checkEmitted(f);
    total += sent.length;
  }
  expect(total).toBeGreaterThan(0); // some survive and get answers (ARP, echo, RST)
}, 60_000);

test("with the virtio-net header: 80k mutated frames (header included) never throw", () => {
  for (const seed of [11, 12]) {
    const { stats, sent } = fuzzInterface(seed, 40_000, true);
    expect(stats.rxFrames).toBe(40_000);
    expect(stats.dropped).toBeGreaterThan(4_000);
    for (const f of sent) checkEmitted(f);
  }
}, 60_000);
