//! Round trip: whatever parses as a transmission control message emits, and the emitted bytes
//! parse back to the same message (and emit to the same bytes).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcvideo_relay::wire::tc::{self, EmitOptions, TcMessage};

fuzz_target!(|data: &[u8]| {
    for m in tc::messages(data).take(64) {
        let Ok(m) = m else { break };
        for id in [tc::VIDEO_SSRC_FIELD_ID, tc::VIDEO_SSRC_FIELD_ID_ALT] {
            let opts = EmitOptions {
                video_ssrc_field_id: id,
            };
            let bytes = m.to_vec(&opts).expect("a parsed message always emits");
            let back = TcMessage::parse(&bytes).expect("emitted bytes parse");
            let mut expect = m;
            if expect.kind == tc::MessageKind::TransmissionControlAck {
                expect.ack_required = false; // an Ack never carries the x bit
            }
            assert_eq!(back, expect);
            assert_eq!(back.to_vec(&opts).unwrap(), bytes);
        }
    }
});
