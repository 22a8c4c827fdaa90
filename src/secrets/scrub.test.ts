import { describe, expect, test } from "bun:test";
import { ResponseScrubber, SCRUB_FLUSH_MS } from "./scrub.ts";
import { SecretSet } from "./substitute.ts";

const VALUE = "sk-REAL/val+ue=1";
const set = new SecretSet([{ name: "K", value: VALUE, allow: ["a.test"] }]);

function scrubAll(pieces: string[]): { out: string; masked: number } {
  const got: Buffer[] = [];
  const s = new ResponseScrubber(set, (b) => got.push(Buffer.from(b)));
  for (const p of pieces) s.push(Buffer.from(p));
  s.end();
  return { out: Buffer.concat(got).toString(), masked: s.masked };
}

describe("response scrubber", () => {
  const text = `{"auth":"Bearer ${VALUE}","q":"${encodeURIComponent(VALUE)}","b":"${Buffer.from(VALUE).toString("base64").replace(/=+$/, "")}","s":"sk-"}`;
  const want = text.replace(VALUE, "*".repeat(VALUE.length)).replace(encodeURIComponent(VALUE), "*".repeat(encodeURIComponent(VALUE).length)).replace(Buffer.from(VALUE).toString("base64").replace(/=+$/, ""), (m) => "*".repeat(m.length));

  test("masks raw, percent-encoded and base64 forms at the same length", () => {
    const r = scrubAll([text]);
    expect(r.out).toBe(want);
    expect(r.out.length).toBe(text.length);
    expect(r.masked).toBe(3);
  });

  test("every two-way split gives the same output", () => {
    for (let i = 0; i <= text.length; i++) expect(scrubAll([text.slice(0, i), text.slice(i)]).out).toBe(want);
  });

  test("a held-back tail is flushed after a quiet period", async () => {
    const got: string[] = [];
    const s = new ResponseScrubber(set, (b) => got.push(Buffer.from(b).toString()));
    s.push(Buffer.from("hello sk-RE"));
    expect(got.join("")).toBe("hello ");
    await Bun.sleep(SCRUB_FLUSH_MS * 3);
    expect(got.join("")).toBe("hello sk-RE");
  });
});

describe("base64 at any alignment (an echoed Basic credential is base64 of user:VALUE)", () => {
  const value = "sk-0123456789abcdefXYZ";
  const one = new SecretSet([{ name: "K", value, allow: ["a.test"] }]);
  const scrub = (text: string) => {
    const got: Buffer[] = [];
    const s = new ResponseScrubber(one, (b) => got.push(Buffer.from(b)));
    s.push(Buffer.from(text));
    s.end();
    return Buffer.concat(got).toString();
  };
  for (const alphabet of ["base64", "base64url"] as const) {
    test(`${alphabet}: no prefix or suffix length leaves more than 2 bytes at each end of the value decodable`, () => {
      for (let prefix = 0; prefix < 6; prefix++) {
        for (let suffix = 0; suffix < 4; suffix++) {
          const encoded = Buffer.from(`${"u:".padStart(prefix, "x").slice(0, prefix)}${value}${"!".repeat(suffix)}`).toString(alphabet);
          const out = scrub(`{"authorization":"Basic ${encoded}"}`);
          expect(out.length).toBe(`{"authorization":"Basic ${encoded}"}`.length);
          const decoded = Buffer.from(out.slice(24, 24 + encoded.length).replaceAll("*", "A"), alphabet).toString("latin1");
          expect(decoded).not.toContain(value.slice(2, -2));
          expect(decoded).not.toContain(value.slice(2, 7));
          expect(decoded).not.toContain(value.slice(-7, -2));
        }
      }
    });
  }
});

test("JSON-escaped echoes are masked, with '/' escaped or not", () => {
  const value = 'k/"quoted"\\back/slash';
  const one = new SecretSet([{ name: "K", value, allow: ["a.test"] }]);
  for (const body of [JSON.stringify({ auth: value }), JSON.stringify({ auth: value }).replaceAll("/", "\\/")]) {
    const got: Buffer[] = [];
    const s = new ResponseScrubber(one, (b) => got.push(Buffer.from(b)));
    s.push(Buffer.from(body));
    s.end();
    const out = Buffer.concat(got).toString();
    expect(out.length).toBe(body.length);
    expect(out).toMatch(/^\{"auth":"\*+"\}$/);
  }
});
