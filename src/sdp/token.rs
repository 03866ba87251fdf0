//! The two lexers every SDP line reader uses: whitespace-separated tokens with their offsets,
//! and bounded decimal numbers.

/// Whitespace-separated tokens with their byte offsets.
pub(super) fn tokens(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        if c == ' ' || c == '\t' {
            if let Some(st) = start.take() {
                if let Some(t) = s.get(st..i) {
                    out.push((st, t));
                }
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        if let Some(t) = s.get(st..) {
            out.push((st, t));
        }
    }
    out
}

/// A decimal number made of ASCII digits only (no sign, no spaces), that fits `T`.
pub(super) fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
