//! A small bencode codec for rtpengine's ng control protocol.
//!
//! Decoding never panics and is bounded: nesting at most [`MAX_DEPTH`] levels, at most
//! [`MAX_ITEMS`] values in all, string lengths checked against what is left of the input before
//! anything is allocated, integers checked for overflow. Dictionary keys may arrive in any
//! order (rtpengine and Kamailio do not always sort them); a key given twice is an error.
//! Encoding writes dictionaries with sorted keys, as bencode asks.

use std::collections::BTreeMap;
use std::fmt;

/// Deepest nesting of lists and dictionaries accepted.
pub(crate) const MAX_DEPTH: usize = 16;
/// Most values (strings, integers, lists, dictionaries) one message may hold.
pub(crate) const MAX_ITEMS: usize = 4096;

/// A bencode value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// `i42e`
    Int(i64),
    /// `4:spam` (bytes, not necessarily UTF-8)
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e`
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Why a message did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The input ended inside a value.
    Truncated,
    /// A byte that starts no value, or a malformed integer or length.
    Syntax,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More than [`MAX_ITEMS`] values.
    TooManyItems,
    /// A dictionary key that is not a string, or given twice.
    BadKey,
    /// Bytes after the top-level value.
    Trailing,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "truncated",
            DecodeError::Syntax => "syntax error",
            DecodeError::TooDeep => "nested too deep",
            DecodeError::TooManyItems => "too many items",
            DecodeError::BadKey => "bad dictionary key",
            DecodeError::Trailing => "trailing bytes",
        })
    }
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    items: usize,
}

impl Decoder<'_> {
    fn peek(&self) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    /// Digits up to `end`, as a non-negative number (no sign, no leading zero but "0").
    fn number(&mut self, end: u8) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut n: u64 = 0;
        loop {
            let b = self.peek()?;
            if b == end {
                break;
            }
            if !b.is_ascii_digit() {
                return Err(DecodeError::Syntax);
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or(DecodeError::Syntax)?;
            self.pos += 1;
        }
        let digits = self.pos - start;
        if digits == 0 || (digits > 1 && self.input.get(start) == Some(&b'0')) {
            return Err(DecodeError::Syntax);
        }
        self.pos += 1; // the end byte
        Ok(n)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.number(b':')?;
        let left = self.input.len() - self.pos;
        if len > left as u64 {
            return Err(DecodeError::Truncated);
        }
        let len = len as usize;
        let s = self
            .input
            .get(self.pos..self.pos + len)
            .ok_or(DecodeError::Truncated)?;
        self.pos += len;
        Ok(s.to_vec())
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(DecodeError::TooManyItems);
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let neg = self.peek()? == b'-';
                if neg {
                    self.pos += 1;
                }
                let n = self.number(b'e')?;
                if neg {
                    if n == 0 {
                        return Err(DecodeError::Syntax); // "-0"
                    }
                    0i64.checked_sub_unsigned(n)
                        .map(Value::Int)
                        .ok_or(DecodeError::Syntax)
                } else {
                    i64::try_from(n)
                        .map(Value::Int)
                        .map_err(|_| DecodeError::Syntax)
                }
            }
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' | b'd' if depth >= MAX_DEPTH => Err(DecodeError::TooDeep),
            b'l' => {
                self.pos += 1;
                let mut list = Vec::new();
                while self.peek()? != b'e' {
                    list.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(list))
            }
            b'd' => {
                self.pos += 1;
                let mut dict = BTreeMap::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(DecodeError::BadKey);
                    }
                    let k = self.bytes()?;
                    let v = self.value(depth + 1)?;
                    if dict.insert(k, v).is_some() {
                        return Err(DecodeError::BadKey);
                    }
                }
                self.pos += 1;
                Ok(Value::Dict(dict))
            }
            _ => Err(DecodeError::Syntax),
        }
    }
}

/// Decodes exactly one value filling the whole input.
pub(crate) fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    let mut d = Decoder {
        input,
        pos: 0,
        items: 0,
    };
    let v = d.value(0)?;
    if d.pos != input.len() {
        return Err(DecodeError::Trailing);
    }
    Ok(v)
}

impl Value {
    /// A byte string from text.
    pub(crate) fn str(s: impl AsRef<[u8]>) -> Value {
        Value::Bytes(s.as_ref().to_vec())
    }

    /// Appends the encoding to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    out.extend_from_slice(k.len().to_string().as_bytes());
                    out.push(b':');
                    out.extend_from_slice(k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The encoding.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// The dictionary's value under `key`, if this is a dictionary.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The bytes of a string value.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A string value as UTF-8 text.
    pub(crate) fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// Builds a dictionary from `(key, value)` pairs.
pub(crate) fn dict<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_ng_ping() {
        let v = decode(b"d7:command4:pinge").unwrap();
        assert_eq!(v.get("command").and_then(Value::as_str), Some("ping"));
        assert_eq!(v.encode(), b"d7:command4:pinge");
    }

    #[test]
    fn round_trips_nested_values() {
        let raw: &[u8] = b"d4:callli-3ei0e3:abce5:flagsl10:trust-addre3:sdp0:e";
        let v = decode(raw).unwrap();
        assert_eq!(
            v.get("call"),
            Some(&Value::List(vec![
                Value::Int(-3),
                Value::Int(0),
                Value::str("abc")
            ]))
        );
        assert_eq!(v.get("sdp"), Some(&Value::str("")));
        assert_eq!(v.encode(), raw);
    }

    #[test]
    fn sorts_unsorted_keys_on_encode() {
        let v = decode(b"d1:bi1e1:ai2ee").unwrap();
        assert_eq!(v.encode(), b"d1:ai2e1:bi1ee");
    }

    #[test]
    fn refuses_malformed_input() {
        let cases: [(&[u8], DecodeError); 16] = [
            (b"", DecodeError::Truncated),
            (b"d", DecodeError::Truncated),
            (b"5:abc", DecodeError::Truncated),
            (b"99999999999999999999999:a", DecodeError::Syntax),
            (b"18446744073709551615:a", DecodeError::Truncated),
            (b"i-0e", DecodeError::Syntax),
            (b"i03e", DecodeError::Syntax),
            (b"ie", DecodeError::Syntax),
            (b"i9223372036854775808e", DecodeError::Syntax),
            (b"x", DecodeError::Syntax),
            (b"di1ei2ee", DecodeError::BadKey),
            (b"d1:ai1e1:ai2ee", DecodeError::BadKey),
            (b"le5", DecodeError::Trailing),
            (b"-1:", DecodeError::Syntax),
            (b"d1:a", DecodeError::Truncated),
            (b"i1", DecodeError::Truncated),
        ];
        for (raw, want) in cases {
            assert_eq!(decode(raw), Err(want), "{:?}", String::from_utf8_lossy(raw));
        }
        assert_eq!(decode(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
    }

    #[test]
    fn depth_and_item_count_are_bounded() {
        let deep = [vec![b'l'; 10_000], vec![b'e'; 10_000]].concat();
        assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(decode(&ok).is_ok());
        let many = [b"l".to_vec(), b"i1e".repeat(MAX_ITEMS), b"e".to_vec()].concat();
        assert_eq!(decode(&many), Err(DecodeError::TooManyItems));
    }
}
