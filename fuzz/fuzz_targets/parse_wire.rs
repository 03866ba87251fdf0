//! Parse must not panic: every reader of bytes from the network, on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::wire::{demux, rtcp, rtp, tc};

fuzz_target!(|data: &[u8]| {
    let _ = demux::classify(data);
    if let Ok(p) = rtp::RtpPacket::new_checked(data) {
        let _ = (
            p.ssrc(),
            p.sequence_number(),
            p.payload().len(),
            p.extension(),
        );
        let _ = p.csrcs().count();
        assert!(p.header_len() + p.payload().len() + p.padding_len() <= data.len());
    }
    for p in rtcp::compound(data).take(1024) {
        let Ok(p) = p else { break };
        let _ = (p.kind(), p.media_ssrc(), p.app_name(), p.body().len());
        let _ = p.bye_ssrcs().count() + p.fir_entries().count() + p.nack_entries().count();
    }
    let _ = rtcp::validate_compound(data);
    for m in tc::messages(data).take(1024) {
        let Ok(m) = m else { break };
        let _ = m.buffer_len();
    }
});
