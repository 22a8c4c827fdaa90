// Line-delimited JSON on stdin, as `msb api` and `msb mcp` read it: lines are handed out as they
// complete, each handled concurrently; a line over the size limit is dropped whole (reported once)
// rather than buffered without end; resolves when stdin has ended and every handler has finished.

export interface JsonLinesHandlers {
  maxLineBytes: number;
  /** Handles one complete, non-blank line. Must not throw (report errors on the protocol). */
  onLine(line: string): Promise<void>;
  /** Called once for each line dropped for being longer than maxLineBytes. */
  onTooLong(): Promise<void> | void;
}

export async function serveJsonLines(input: ReadableStream<Uint8Array>, handlers: JsonLinesHandlers): Promise<void> {
  const decoder = new TextDecoder();
  const pending = new Set<Promise<void>>();
  let buffer = "";
  // True while dropping the rest of an over-long line, up to its newline.
  let discarding = false;
  const take = (line: string) => {
    const trimmed = line.trim();
    if (!trimmed) return;
    const work = handlers.onLine(trimmed);
    pending.add(work);
    void work.finally(() => pending.delete(work));
  };
  for await (const chunk of input) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      if (discarding) discarding = false;
      else take(line);
    }
    if (buffer.length > handlers.maxLineBytes) {
      if (!discarding) await handlers.onTooLong();
      discarding = true;
      buffer = "";
    }
  }
  if (!discarding) take(buffer);
  await Promise.all(pending);
}
