import { describe, expect, test } from "bun:test";
import { serveJsonLines } from "./jsonlines";

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
      controller.close();
    },
  });
}

describe("serveJsonLines", () => {
  test("lines split across chunks arrive whole; blank lines are skipped; a last line without newline counts", async () => {
    const lines: string[] = [];
    await serveJsonLines(streamOf(['{"a":', '1}\n\n  \n{"b":2}\n{"c"', ":3}"]), {
      maxLineBytes: 1000,
      onLine: async (line) => void lines.push(line),
      onTooLong: () => {},
    });
    expect(lines).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
  });

  test("an over-long line is dropped whole and reported once; the next line is handled", async () => {
    const lines: string[] = [];
    let tooLong = 0;
    await serveJsonLines(streamOf(["x".repeat(60), "y".repeat(60), "z".repeat(60), "tail\n", '{"ok":1}\n']), {
      maxLineBytes: 100,
      onLine: async (line) => void lines.push(line),
      onTooLong: () => void tooLong++,
    });
    expect(tooLong).toBe(1);
    expect(lines).toEqual(['{"ok":1}']);
  });

  test("resolves only when every handler has finished", async () => {
    let finished = false;
    await serveJsonLines(streamOf(["1\n"]), {
      maxLineBytes: 100,
      onLine: async () => {
        await Bun.sleep(50);
        finished = true;
      },
      onTooLong: () => {},
    });
    expect(finished).toBe(true);
  });
});
