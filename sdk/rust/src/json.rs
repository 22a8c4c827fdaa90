// A small JSON value, parser and encoder: enough for the API's lines, with no dependency (crates.io
// is out of reach). The parser reads what `msb api` sends, so it is strict and bounded: nesting
// depth is capped, and every malformed input is an error, never a panic.

use std::fmt;

/// Deepest nesting accepted; the API's messages are a few levels deep.
pub const MAX_DEPTH: usize = 128;

/// A JSON value. Objects keep their keys in order; numbers are `f64` (exact for integers up to 2^53,
/// which covers every id, size and time the API sends).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

/// Why a text is not JSON, with the byte offset where that became clear.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub offset: usize,
    pub message: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for ParseError {}

impl Value {
    /// An object from key/value pairs (keys in the order given).
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The member `key` of an object (the last one if repeated, as JavaScript does).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(pairs) => pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Moves the member `key` out of an object (the last one if repeated), leaving the rest.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        match self {
            Value::Object(pairs) => {
                let at = pairs.iter().rposition(|(k, _)| k == key)?;
                Some(pairs.swap_remove(at).1)
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The number as an integer, if it is one exactly (and within 2^53).
    pub fn as_i64(&self) -> Option<i64> {
        let n = self.as_f64()?;
        if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 {
            Some(n as i64)
        } else {
            None
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.as_i64().and_then(|n| u64::try_from(n).ok())
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Compact JSON text (no newlines, so it fits one API line).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => encode_number(*n, out),
            Value::String(s) => encode_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.encode_into(out);
                }
                out.push(']');
            }
            Value::Object(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    encode_string(k, out);
                    out.push(':');
                    v.encode_into(out);
                }
                out.push('}');
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(n: f64) -> Value {
        Value::Number(n)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Number(n.into())
    }
}
impl From<i32> for Value {
    fn from(n: i32) -> Value {
        Value::Number(n.into())
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Number(n as f64)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Value {
        Value::Array(items.into_iter().map(Into::into).collect())
    }
}

fn encode_number(n: f64, out: &mut String) {
    use std::fmt::Write;
    if !n.is_finite() {
        // JSON has no NaN or infinity; JavaScript's JSON.stringify writes null too.
        out.push_str("null");
    } else if n.fract() == 0.0 && n.abs() < 1e15 {
        let _ = write!(out, "{}", n as i64);
    } else {
        let _ = write!(out, "{n:?}");
    }
}

fn encode_string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    // Most strings (base64 data, names) need no escape at all: copy them whole.
    if !s.chars().any(|c| matches!(c, '"' | '\\' | '\u{0}'..='\u{1f}' | '\u{2028}' | '\u{2029}')) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // U+2028/2029 are legal in JSON but escaping them keeps a line a line everywhere.
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses one JSON text (surrounding whitespace allowed, nothing else after it).
pub fn parse(text: &[u8]) -> Result<Value, ParseError> {
    let mut parser = Parser { bytes: text, pos: 0 };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(parser.error("unexpected text after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &'static str) -> ParseError {
        ParseError { offset: self.pos, message }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_word(&mut self, word: &[u8], value: Value) -> Result<Value, ParseError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'n') => self.expect_word(b"null", Value::Null),
            Some(b't') => self.expect_word(b"true", Value::Bool(true)),
            Some(b'f') => self.expect_word(b"false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    self.skip_ws();
                    items.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => return Err(self.error("expected ',' or ']' in an array")),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut pairs = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Value::Object(pairs));
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.error("expected a string key in an object"));
                    }
                    let key = self.string()?;
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return Err(self.error("expected ':' after an object key"));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    pairs.push((key, self.value(depth + 1)?));
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Value::Object(pairs));
                        }
                        _ => return Err(self.error("expected ',' or '}' in an object")),
                    }
                }
            }
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("expected a digit in the exponent"));
            }
            self.digits();
        }
        // Only ASCII digits, signs, '.', 'e' were consumed, so this is valid UTF-8.
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).map_err(|_| self.error("bad number"))?;
        let n: f64 = text.parse().map_err(|_| self.error("bad number"))?;
        if !n.is_finite() {
            return Err(self.error("number out of range"));
        }
        Ok(Value::Number(n))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let end = self.pos + 4;
        if end > self.bytes.len() {
            return Err(self.error("truncated \\u escape"));
        }
        let mut n = 0u32;
        for &b in &self.bytes[self.pos..end] {
            let d = (b as char).to_digit(16).ok_or_else(|| self.error("bad hex digit in \\u escape"))?;
            n = n * 16 + d;
        }
        self.pos = end;
        Ok(n)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    return String::from_utf8(out).map_err(|_| self.error("string is not valid UTF-8"));
                }
                b'\\' => {
                    self.pos += 1;
                    let escape = self.peek().ok_or_else(|| self.error("unterminated escape"))?;
                    self.pos += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(self.error("unknown escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return Err(self.error("control character in a string")),
                _ => {
                    // Copy the run of plain bytes up to the next quote, escape or control byte.
                    let run = self.bytes[self.pos..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(self.bytes.len() - self.pos);
                    out.extend_from_slice(&self.bytes[self.pos..self.pos + run]);
                    self.pos += run;
                }
            }
        }
    }

    /// A `\uXXXX` escape (after the `u`), joining surrogate pairs. A lone surrogate (JavaScript
    /// strings may hold one, e.g. from a file name) becomes U+FFFD rather than failing the message.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) && self.bytes[self.pos..].starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            let second = self.hex4()?;
            if (0xDC00..0xE000).contains(&second) {
                let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
            }
            self.pos = save;
        }
        Ok(char::from_u32(first).unwrap_or('\u{FFFD}'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Value, ParseError> {
        parse(text.as_bytes())
    }

    #[test]
    fn parses_api_messages() {
        let v = p(r#"{"id":7,"result":{"exitCode":3,"stdout":"aGkK","signal":null,"timedOut":false,"list":[1,-2.5e3,"x"]}}"#).unwrap();
        assert_eq!(v.get("id").and_then(Value::as_u64), Some(7));
        let r = v.get("result").unwrap();
        assert_eq!(r.get("exitCode").and_then(Value::as_i64), Some(3));
        assert_eq!(r.get("stdout").and_then(Value::as_str), Some("aGkK"));
        assert!(r.get("signal").unwrap().is_null());
        assert_eq!(r.get("timedOut").and_then(Value::as_bool), Some(false));
        assert_eq!(r.get("list").and_then(Value::as_array).unwrap()[1], Value::Number(-2500.0));
    }

    #[test]
    fn round_trips_strings_with_escapes() {
        let s = "quote\" back\\ nl\n tab\t nul\0 bell\u{7} é 漢 😀 \u{2028}";
        let encoded = Value::from(s).encode();
        assert!(!encoded.contains('\n'), "an encoded value must stay on one line: {encoded}");
        assert_eq!(p(&encoded).unwrap(), Value::from(s));
    }

    #[test]
    fn decodes_surrogates() {
        assert_eq!(p(r#""\ud83d\ude00""#).unwrap(), Value::from("😀"));
        assert_eq!(p(r#""\ud83dx""#).unwrap(), Value::from("\u{FFFD}x"));
        assert_eq!(p(r#""\ude00""#).unwrap(), Value::from("\u{FFFD}"));
        assert_eq!(p(r#""\ud83d\u0041""#).unwrap(), Value::from("\u{FFFD}A"));
    }

    #[test]
    fn encodes_numbers_like_javascript() {
        assert_eq!(Value::from(3u32).encode(), "3");
        assert_eq!(Value::from(-1i32).encode(), "-1");
        assert_eq!(Value::from(0.5).encode(), "0.5");
        assert_eq!(Value::from(f64::NAN).encode(), "null");
        assert_eq!(Value::object([("a", Value::from(vec!["x", "y"]))]).encode(), r#"{"a":["x","y"]}"#);
    }

    #[test]
    fn rejects_hostile_input() {
        let bad: &[&[u8]] = &[
            b"",
            b"   ",
            b"{",
            b"[1,",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"\"unterminated",
            b"\"bad \\q escape\"",
            b"\"\\u12\"",
            b"\"\\u12G4\"",
            b"\"ctrl \x01 char\"",
            b"\"\xff\xfe\"",
            b"\"\xc3\"",
            b"01",
            b"-",
            b"1.",
            b"1e",
            b"1e999",
            b"+1",
            b"NaN",
            b"nul",
            b"truex",
            b"{} {}",
            b"\x00",
        ];
        for text in bad {
            assert!(parse(text).is_err(), "accepted {:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn bounds_nesting_depth() {
        let deep = "[".repeat(100_000);
        let err = parse(deep.as_bytes()).unwrap_err();
        assert_eq!(err.message, "nested too deeply");
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(parse(ok.as_bytes()).is_ok());
        let objects = "{\"a\":".repeat(MAX_DEPTH + 1);
        assert!(parse(objects.as_bytes()).is_err());
    }

    #[test]
    fn survives_arbitrary_bytes() {
        // A cheap deterministic fuzz: mutate a real message; the parser must never panic.
        let base = br#"{"event":"output","process":1,"fd":"stdout","data":"aGkK","x":[true,null,-1.5e2,"\u00e9"]}"#;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut text = base.to_vec();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % text.len() as u64) as usize;
                text[at] = (seed >> 32) as u8;
            }
            let _ = parse(&text);
        }
    }

    #[test]
    fn repeated_keys_take_the_last() {
        assert_eq!(p(r#"{"a":1,"a":2}"#).unwrap().get("a"), Some(&Value::Number(2.0)));
        let mut v = p(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(v.take("a"), Some(Value::Number(3.0)));
        assert_eq!(v.take("b"), Some(Value::Number(2.0)));
        assert_eq!(v.take("b"), None);
        assert_eq!(Value::Null.take("a"), None);
    }
}
