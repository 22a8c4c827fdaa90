// A small, strict JSON parser and serializer for the protocol's payloads (RFC 8259), written
// for hostile input: UTF-8 checked, nesting bounded, no recursion without a depth limit.

use std::fmt;

/// Nesting deeper than this is rejected: protocol payloads need three levels at most.
pub const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    /// Members in document order. A repeated key is kept; lookups take the last, as
    /// JavaScript's JSON.parse does, so the host and the agent never disagree on a value.
    Object(Vec<(String, Value)>),
}

/// Largest integer a double holds exactly (2^53): integers beyond it lose precision.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

impl Value {
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number as an exact integer, if it is one within ±2^53.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER => Some(*n as i64),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(members) => Some(members),
            _ => None,
        }
    }

    /// A short name of the value's kind for error messages ("a string", "an array").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_value(&mut out, self);
        out
    }
}

/// Why a document was rejected, with the byte offset where parsing stopped.
#[derive(Debug, PartialEq)]
pub struct ParseError {
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

pub fn parse(bytes: &[u8]) -> Result<Value, ParseError> {
    // Checking UTF-8 once up front lets the string scanner copy runs of bytes verbatim.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ParseError { offset: e.valid_up_to(), reason: "not valid UTF-8" })?;
    let mut p = Parser { s: text.as_bytes(), text, pos: 0 };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected data after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &'static str) -> ParseError {
        ParseError { offset: self.pos, reason }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_word(&mut self, word: &'static [u8], value: Value) -> Result<Value, ParseError> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.expect_word(b"true", Value::Bool(true)),
            Some(b'f') => self.expect_word(b"false", Value::Bool(false)),
            Some(b'n') => self.expect_word(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a key"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self.s.get(self.pos..self.pos + 4).ok_or_else(|| self.err("truncated \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            let n = (d as char).to_digit(16).ok_or_else(|| self.err("bad hex digit in \\u escape"))?;
            v = v * 16 + n;
        }
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The input is valid UTF-8 and we stop only at ASCII bytes, so this is a char boundary.
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("unterminated escape"))?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = match first {
                                0xD800..=0xDBFF => {
                                    if !self.s[self.pos..].starts_with(b"\\u") {
                                        return Err(self.err("high surrogate without a low surrogate"));
                                    }
                                    self.pos += 2;
                                    let second = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&second) {
                                        return Err(self.err("high surrogate without a low surrogate"));
                                    }
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                }
                                0xDC00..=0xDFFF => return Err(self.err("lone low surrogate")),
                                c => c,
                            };
                            // Cannot fail: surrogates are excluded and the range is <= 0x10FFFF.
                            out.push(char::from_u32(code).ok_or_else(|| self.err("bad code point"))?);
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.err("unknown escape"));
                        }
                    }
                }
                Some(_) => return Err(self.err("control character in a string")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return Err(self.err("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("expected a digit after '.'"));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("expected a digit in the exponent"));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
        }
        let n: f64 = self.text[start..self.pos].parse().map_err(|_| self.err("bad number"))?;
        if !n.is_finite() {
            return Err(ParseError { offset: start, reason: "number out of range" });
        }
        Ok(Value::Number(n))
    }
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, *n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: f64) {
    use fmt::Write;
    if !n.is_finite() {
        // JSON has no NaN or infinity; JavaScript's JSON.stringify writes null as well.
        out.push_str("null");
    } else if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        let _ = write!(out, "{}", n as i64);
    } else {
        // Rust prints the shortest text that reads back as the same double, never in a form
        // JSON rejects (no "inf", no leading '.').
        let _ = write!(out, "{}", n);
    }
}

pub fn write_string(out: &mut String, s: &str) {
    use fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            // U+2028/2029 are valid JSON but break JavaScript source embedding; escaping is free.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Builds a JSON object in a fixed key order (the vectors are compared byte for byte).
pub fn object(members: Vec<(&str, Value)>) -> Value {
    Value::Object(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Value {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn bad(s: &[u8]) -> ParseError {
        match parse(s) {
            Ok(v) => panic!("{:?} should be rejected, got {v:?}", String::from_utf8_lossy(s)),
            Err(e) => e,
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(ok("null"), Value::Null);
        assert_eq!(ok(" true "), Value::Bool(true));
        assert_eq!(ok("false"), Value::Bool(false));
        assert_eq!(ok("0"), Value::Number(0.0));
        assert_eq!(ok("-0"), Value::Number(-0.0));
        assert_eq!(ok("1764460800000").as_i64(), Some(1_764_460_800_000));
        assert_eq!(ok("-12.5e2"), Value::Number(-1250.0));
        assert_eq!(ok("1E+2"), Value::Number(100.0));
        assert_eq!(ok("2.5").as_i64(), None);
        assert_eq!(ok("1e300").as_i64(), None, "beyond 2^53 is not an exact integer");
    }

    #[test]
    fn bad_numbers() {
        for s in ["01", "-", "1.", ".5", "1e", "+1", "0x10", "1e400", "-01", "NaN", "Infinity", "1.e5"] {
            bad(s.as_bytes());
        }
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(ok(r#""a\"b\\c\/d""#), Value::String("a\"b\\c/d".into()));
        assert_eq!(ok(r#""\b\f\n\r\t""#), Value::String("\u{8}\u{c}\n\r\t".into()));
        assert_eq!(ok(r#""\u00e9\u0000""#), Value::String("é\0".into()));
        assert_eq!(ok(r#""\uD83D\uDE00""#), Value::String("😀".into()));
        assert_eq!(ok(r#""\ud83d\ude00""#), Value::String("😀".into()), "hex is case-insensitive");
        assert_eq!(ok("\"héllo 😀\""), Value::String("héllo 😀".into()), "raw UTF-8 passes");
    }

    #[test]
    fn bad_strings() {
        let cases: &[&[u8]] = &[
            b"\"abc",                   // unterminated
            b"\"a\nb\"",                // raw control character
            b"\"\\x\"",                 // unknown escape
            b"\"\\u12\"",               // short escape
            b"\"\\u12G4\"",             // bad hex digit
            b"\"\\uD83D\"",             // lone high surrogate
            b"\"\\uD83Dx\"",            // high surrogate followed by text
            b"\"\\uD83D\\u0041\"",      // high surrogate followed by a non-surrogate
            b"\"\\uDE00\"",             // lone low surrogate
            b"\"\xff\"",                // invalid UTF-8
            b"\"\xc3\"",                // truncated UTF-8 sequence
            b"\"\xed\xa0\x80\"",        // UTF-8-encoded surrogate
        ];
        for case in cases {
            bad(case);
        }
    }

    #[test]
    fn containers() {
        let v = ok(r#" { "a" : [1, {"b": null}, []], "c": {} } "#);
        assert_eq!(v.get("a").unwrap().as_array().unwrap().len(), 3);
        assert_eq!(v.get("c"), Some(&Value::Object(vec![])));
        assert_eq!(v.get("missing"), None);
        assert_eq!(ok("[]"), Value::Array(vec![]));
    }

    #[test]
    fn duplicate_keys_take_the_last_like_javascript() {
        let v = ok(r#"{"k":1,"k":2}"#);
        assert_eq!(v.get("k").unwrap().as_i64(), Some(2));
    }

    #[test]
    fn bad_containers() {
        for s in [
            "{", "[", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "[1 2]", "{\"a\":1 \"b\":2}", "{} x", "", "  ",
            "tru", "nul", "[1]]",
        ] {
            bad(s.as_bytes());
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep_ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        ok(&deep_ok);
        let too_deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(bad(too_deep.as_bytes()).reason, "nested too deeply");
        // A hostile megabyte of brackets fails fast instead of overflowing the stack.
        let hostile = "[".repeat(1 << 20);
        assert_eq!(bad(hostile.as_bytes()).reason, "nested too deeply");
        let objects = "{\"a\":".repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        assert_eq!(bad(objects.as_bytes()).reason, "nested too deeply");
    }

    #[test]
    fn serializer_escapes_and_round_trips() {
        let s = "q\"b\\n\nt\tc\u{1}\u{7f}é😀\u{2028}";
        let json = Value::String(s.into()).to_json();
        assert_eq!(json, r#""q\"b\\n\nt\tc\u0001\u007fé😀\u2028""#);
        assert_eq!(ok(&json), Value::String(s.into()));
    }

    #[test]
    fn serializer_numbers() {
        assert_eq!(Value::Number(412.0).to_json(), "412");
        assert_eq!(Value::Number(-7.0).to_json(), "-7");
        assert_eq!(Value::Number(1_764_460_800_000.0).to_json(), "1764460800000");
        assert_eq!(Value::Number(0.5).to_json(), "0.5");
        assert_eq!(Value::Number(f64::NAN).to_json(), "null");
        let big = Value::Number(1e300).to_json();
        assert_eq!(ok(&big), Value::Number(1e300));
    }

    #[test]
    fn serializer_keeps_member_order() {
        let v = object(vec![("code", Value::Number(7.0)), ("signal", Value::Null)]);
        assert_eq!(v.to_json(), r#"{"code":7,"signal":null}"#);
        let nested = object(vec![("a", Value::Array(vec![Value::Bool(true), object(vec![])]))]);
        assert_eq!(nested.to_json(), r#"{"a":[true,{}]}"#);
        assert_eq!(ok(&nested.to_json()), nested);
    }
}
