//! JSON values and string literals, written into a `String` without serde: a log line is
//! built in place, and almost nothing logged needs escaping (checked eight bytes at a time).

use std::fmt::Write as _;

/// A field value borrowed for writing.
#[derive(Clone, Copy)]
pub(super) enum Val<'a> {
    Str(&'a str),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

/// A JSON value.
pub(super) fn push_value(buf: &mut String, value: Val<'_>) {
    match value {
        Val::Str(s) => push_json_str(buf, s),
        Val::I64(n) => buf.push_str(itoa::Buffer::new().format(n)),
        Val::U64(n) => buf.push_str(itoa::Buffer::new().format(n)),
        // JSON has no NaN or infinity.
        Val::F64(x) if x.is_finite() => buf.push_str(ryu::Buffer::new().format_finite(x)),
        Val::F64(_) => buf.push_str("null"),
        Val::Bool(b) => buf.push_str(if b { "true" } else { "false" }),
    }
}

/// A JSON string literal, escaped as RFC 8259 requires.
pub(super) fn push_json_str(buf: &mut String, s: &str) {
    buf.push('"');
    push_json_chars(buf, s);
    buf.push('"');
}

/// The inside of a JSON string literal.
pub(super) fn push_json_chars(buf: &mut String, s: &str) {
    // Almost nothing logged needs escaping: one pass to find out, then a copy.
    if !needs_escape(s.as_bytes()) {
        buf.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if !escaped(b) {
            continue;
        }
        buf.push_str(&s[start..i]);
        match b {
            b'"' => buf.push_str("\\\""),
            b'\\' => buf.push_str("\\\\"),
            b'\n' => buf.push_str("\\n"),
            b'\r' => buf.push_str("\\r"),
            b'\t' => buf.push_str("\\t"),
            _ => {
                let _ = write!(buf, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    buf.push_str(&s[start..]);
}

/// The bytes a JSON string must escape: control characters, `"` and `\`.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any byte of `s` is [`escaped`], eight bytes per step (SWAR): a word has a byte
/// below `n` when `(x - n*0x01..) & !x & 0x80..` is non-zero (exact as a yes/no answer for
/// `n <= 0x80`), and a byte equal to `c` when `x ^ c*0x01..` has a zero byte. About a dozen
/// instructions per eight bytes, where the byte loop, which the compiler did not vectorize,
/// cost about four per byte: a thousand a log line (callgrind, docs/benchmarks.md).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let has = |x: u64, c: u8| below(x ^ (ONES * u64::from(c)), 1);
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_ne_bytes(word.try_into().expect("chunks of eight"));
        if below(x, 0x20) | has(x, b'"') | has(x, b'\\') != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| escaped(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time check agrees with the byte predicate for every byte value at every
    /// position of a word and of the tail, next to ordinary and multi-byte UTF-8 bytes.
    #[test]
    fn needs_escape_agrees_with_the_byte_predicate() {
        for fill in [b'a', b'~', 0x7f, 0xc3, 0xff, b' '] {
            for len in 0..=19 {
                for pos in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![fill; len];
                        bytes[pos] = b;
                        let want = bytes.iter().any(|&b| escaped(b));
                        assert_eq!(
                            needs_escape(&bytes),
                            want,
                            "byte {b:#04x} at {pos} of {len}"
                        );
                    }
                }
                assert!(!needs_escape(&vec![fill; len]) || escaped(fill));
            }
        }
    }

    #[test]
    fn escapes_what_json_requires() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }
}
