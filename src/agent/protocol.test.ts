import { describe, expect, test } from "bun:test";
import vectors from "../../docs/protocol-vectors.json";
import { FrameDecoder, MAX_PAYLOAD, MAX_STREAMS, TRANSFER_WINDOW, INITIAL_WINDOW, ProtocolError, decodeJson, encodeFrame, encodeJsonFrame } from "./protocol";

const fromHex = (hex: string) => Uint8Array.from(Buffer.from(hex, "hex"));

describe("agent protocol vectors", () => {
  test("limits match the shared vectors", () => {
    expect(MAX_PAYLOAD).toBe(vectors.maxPayload);
    expect(INITIAL_WINDOW).toBe(vectors.initialWindow);
    expect(MAX_STREAMS).toBe(vectors.maxStreams);
    expect(TRANSFER_WINDOW).toBe(vectors.transferWindow);
  });

  for (const v of vectors.valid) {
    test(`decodes and re-encodes ${v.name}`, () => {
      const frames = new FrameDecoder().push(fromHex(v.hex));
      expect(frames).toHaveLength(1);
      const [frame] = frames;
      expect(frame!.stream).toBe(v.stream);
      expect(frame!.type).toBe(v.type);
      if ("json" in v) {
        expect(decodeJson(frame!.payload)).toEqual(v.json as Record<string, unknown>);
        expect(Buffer.from(encodeJsonFrame(v.stream, v.type, v.json)).toString("hex")).toBe(v.hex);
      } else {
        expect(Buffer.from(frame!.payload).toString("hex")).toBe(v.payloadHex);
        expect(Buffer.from(encodeFrame(v.stream, v.type, frame!.payload)).toString("hex")).toBe(v.hex);
      }
    });
  }

  for (const v of vectors.invalid) {
    test(`rejects ${v.name} (${v.reason})`, () => {
      expect(() => new FrameDecoder().push(fromHex(v.hex))).toThrow(ProtocolError);
    });
  }
});

describe("FrameDecoder", () => {
  test("reassembles frames split at every byte boundary", () => {
    const all = Buffer.concat(vectors.valid.map((v) => fromHex(v.hex)));
    const decoder = new FrameDecoder();
    const frames = [];
    for (const byte of all) frames.push(...decoder.push(Uint8Array.of(byte)));
    expect(frames.map((f) => f.type)).toEqual(vectors.valid.map((v) => v.type));
  });

  test("rejects an oversized length as soon as the prefix arrives", () => {
    const prefix = new Uint8Array(4);
    new DataView(prefix.buffer).setUint32(0, 5 + MAX_PAYLOAD + 1);
    expect(() => new FrameDecoder().push(prefix)).toThrow(ProtocolError);
  });

  test("refuses to encode an oversized payload", () => {
    expect(() => encodeFrame(1, 0x12, new Uint8Array(MAX_PAYLOAD + 1))).toThrow(ProtocolError);
  });

  test("non-object JSON payloads are protocol errors", () => {
    expect(() => decodeJson(new TextEncoder().encode("[1]"))).toThrow(ProtocolError);
    expect(() => decodeJson(Uint8Array.of(0xff))).toThrow(ProtocolError);
  });
});
