//! What several targets share: the SDP a caller offers and a callee answers, and the check
//! that a running engine gives every port back once its calls are released.
#![allow(dead_code)] // each target uses some of it

use mcvideo_relay::relay::Engine;
use std::time::Duration;

/// The caller's SDES key in the offers below.
pub const CALLER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
/// The callee's SDES key in the answers below.
pub const CALLEE_KEY: &str = "GxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAA==";

/// A caller's offer: audio (or port 0), video, transmission control (or port 0).
pub fn offer(audio: bool, control: bool, per_leg: bool, ssrc: bool) -> String {
    let crypto = if per_leg {
        format!("a=crypto:1 AEAD_AES_128_GCM inline:{CALLER_KEY}\r\n")
    } else {
        String::new()
    };
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
         m=audio {} RTP/SAVP 96\r\n{crypto}\
         m=video 5002 RTP/SAVP 97\r\n{crypto}{}\
         m=application {} udp MCVideo\r\na=fmtp:MCVideo mc_implicit_request\r\n",
        if audio { 5000 } else { 0 },
        if ssrc { "a=ssrc:42 cname:x\r\n" } else { "" },
        if control { 5004 } else { 0 },
    )
}

/// A callee's answer to the relay's offer of [`offer`].
pub fn answer(control: bool, reject_audio: bool, per_leg: bool) -> String {
    let crypto = if per_leg {
        format!("a=crypto:1 AEAD_AES_128_GCM inline:{CALLEE_KEY}\r\n")
    } else {
        String::new()
    };
    format!(
        "v=0\r\no=- 2 2 IN IP4 127.0.0.3\r\ns=-\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\n\
         m=audio {} RTP/SAVP 96\r\n{crypto}m=video 6002 RTP/SAVP 97\r\n{crypto}\
         m=application {} udp MCVideo\r\n",
        if reject_audio { 0 } else { 6000 },
        if control { 6004 } else { 0 },
    )
}

/// Releases every call (group calls too), then asserts that none is left and that every port came back (the
/// workers give ports back when a call's tasks have stopped: waits up to 2 s).
pub fn release_all_and_check(engine: &Engine) {
    for c in engine.calls() {
        let _ = engine.release_call(&c.call_id);
    }
    for g in engine.group_calls() {
        let _ = engine.release_group_call(&g.call_id);
    }
    for _ in 0..2000 {
        if engine.stats().ports_in_use == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = engine.stats();
    assert_eq!(stats.active_calls, 0);
    assert_eq!(stats.ports_in_use, 0, "ports leaked");
}
