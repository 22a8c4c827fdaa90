// Framing and message types of the agent protocol (docs/protocol.md), shared by the supervisor
// (talking to the guest agent) and the SDK (talking to the supervisor).

export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 9;
/** Bytes of `length` that are not payload: stream id (4) + type (1). */
const LENGTH_OVERHEAD = 5;
const LENGTH_FIELD = 0;
const STREAM_FIELD = 4;
const TYPE_FIELD = 8;
export const MAX_PAYLOAD = 1024 * 1024;
export const MAX_STREAMS = 1024;
export const INITIAL_WINDOW = 256 * 1024;
export const MAX_CHUNK = 64 * 1024;
/**
 * Credit of FILE read and write streams: each side widens the default window to this with a
 * WINDOW at the start, since a file takes or gives data at once and window / round trip caps a
 * transfer (a round trip through the supervisor into an emulated guest is several ms).
 */
export const TRANSFER_WINDOW = 1024 * 1024;
export const MAX_PING = 64;

export const MessageType = {
  HELLO: 0x01,
  INIT: 0x02,
  READY: 0x03,
  PING: 0x04,
  PONG: 0x05,
  SHUTDOWN: 0x06,
  EXEC: 0x10,
  STDIN: 0x11,
  STDOUT: 0x12,
  STDERR: 0x13,
  EXIT: 0x14,
  SIGNAL: 0x15,
  WINDOW: 0x16,
  RESIZE: 0x17,
  /** Client → supervisor only, never forwarded to the agent: keep the command running without me. */
  DETACH: 0x30,
  FILE: 0x20,
  FILE_RESULT: 0x21,
  DATA: 0x22,
  ERROR: 0x7f,
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

const KNOWN_TYPES = new Set<number>(Object.values(MessageType));

export interface Frame {
  stream: number;
  type: number;
  payload: Uint8Array;
}

export class ProtocolError extends Error {
  readonly code = "protocol";
}

export function encodeFrame(stream: number, type: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  if (payload.length > MAX_PAYLOAD) {
    throw new ProtocolError(`payload of ${payload.length} bytes exceeds MAX_PAYLOAD (${MAX_PAYLOAD})`);
  }
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(LENGTH_FIELD, LENGTH_OVERHEAD + payload.length);
  view.setUint32(STREAM_FIELD, stream >>> 0);
  view.setUint8(TYPE_FIELD, type);
  out.set(payload, HEADER_SIZE);
  return out;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export function encodeJsonFrame(stream: number, type: number, value: unknown): Uint8Array {
  return encodeFrame(stream, type, textEncoder.encode(JSON.stringify(value)));
}

/** Parses a JSON object payload; a payload that is not a JSON object is a protocol error. */
export function decodeJson(payload: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(textDecoder.decode(payload));
  } catch (cause) {
    throw new ProtocolError(`payload is not valid UTF-8 JSON: ${(cause as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError("payload is not a JSON object");
  }
  return value as Record<string, unknown>;
}

export function encodeWindow(stream: number, increment: number): Uint8Array {
  const payload = new Uint8Array(4);
  new DataView(payload.buffer).setUint32(0, increment >>> 0);
  return encodeFrame(stream, MessageType.WINDOW, payload);
}

export function decodeWindow(payload: Uint8Array): number {
  if (payload.length !== 4) throw new ProtocolError(`WINDOW payload must be 4 bytes, got ${payload.length}`);
  return new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
}

/**
 * Splits a byte stream into frames. Bytes arrive in arbitrary pieces; a frame whose length field
 * is out of bounds is rejected before its body is buffered, so a hostile peer cannot make us hold
 * more than one maximal frame.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = [];
  private buffered = 0;

  push(data: Uint8Array): Frame[] {
    if (data.length > 0) {
      this.chunks.push(data);
      this.buffered += data.length;
    }
    const frames: Frame[] = [];
    while (this.buffered >= HEADER_SIZE) {
      const head = this.peek(HEADER_SIZE);
      const view = new DataView(head.buffer, head.byteOffset, HEADER_SIZE);
      const length = view.getUint32(LENGTH_FIELD);
      if (length < LENGTH_OVERHEAD || length > LENGTH_OVERHEAD + MAX_PAYLOAD) {
        throw new ProtocolError(`frame length ${length} outside ${LENGTH_OVERHEAD}..${LENGTH_OVERHEAD + MAX_PAYLOAD}`);
      }
      const total = 4 + length;
      if (this.buffered < total) break;
      const bytes = this.take(total);
      const frameView = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
      frames.push({
        stream: frameView.getUint32(STREAM_FIELD),
        type: frameView.getUint8(TYPE_FIELD),
        payload: bytes.subarray(HEADER_SIZE),
      });
    }
    // A lone 4-byte prefix can already be judged; reject early rather than wait for the rest.
    if (this.buffered >= 4 && this.buffered < HEADER_SIZE) {
      const prefix = this.peek(4);
      const length = new DataView(prefix.buffer, prefix.byteOffset, 4).getUint32(0);
      if (length < LENGTH_OVERHEAD || length > LENGTH_OVERHEAD + MAX_PAYLOAD) {
        throw new ProtocolError(`frame length ${length} outside ${LENGTH_OVERHEAD}..${LENGTH_OVERHEAD + MAX_PAYLOAD}`);
      }
    }
    return frames;
  }

  private peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    return this.concat(n, false);
  }

  private take(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    return this.concat(n, true);
  }

  private concat(n: number, consume: boolean): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    let index = 0;
    while (filled < n) {
      const chunk = this.chunks[index]!;
      const want = Math.min(chunk.length, n - filled);
      out.set(chunk.subarray(0, want), filled);
      filled += want;
      if (consume) {
        if (want === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(want);
      } else {
        index++;
      }
    }
    if (consume) this.buffered -= n;
    return out;
  }
}

export function isKnownType(type: number): boolean {
  return KNOWN_TYPES.has(type);
}
