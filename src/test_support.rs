//! What the crate's tests share: a seeded generator, the one-to-one call they set up, the
//! runtimes the API tests drive the router on.

/// A video push from `sip:a@x` (offering `caller_sdp`) to `sip:b@x`, end to end, with the
/// defaults everywhere else.
#[cfg(feature = "sidecar")]
pub(crate) fn push_call(id: &str, caller_sdp: String) -> crate::control::call::CreateCall {
    crate::control::call::CreateCall {
        call_id: Some(id.into()),
        caller_id: "sip:a@x".into(),
        caller_sdp,
        callee_id: "sip:b@x".into(),
        video_push: true,
        video_pull: false,
        commencement_mode: None,
        media_security: crate::control::MediaSecurity::EndToEnd,
        caller_tc_key: None,
        caller_interface: None,
        callee_interface: None,
    }
}

/// A runtime whose clock jumps to the next timer whenever its tasks all wait: a reply timeout
/// fires at once. Only for waits on a held worker (a reply from a running worker could come
/// after the jump).
#[cfg(feature = "sidecar")]
pub(crate) fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// A runtime on the real clock.
#[cfg(feature = "sidecar")]
pub(crate) fn live() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

/// Decodes hex, ignoring whitespace.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// xorshift64*: the seeded generator the property and garbage tests share (no new dependency).
/// A deterministic generator: the same seed gives the same sequence.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 pseudo-random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index below `len` (`len` > 0).
    pub(crate) fn index(&mut self, len: usize) -> usize {
        (self.next() % len as u64) as usize
    }
}
