//! A call's transmission log on its worker: each transmission control event of the call's
//! server becomes one JSON line for the recorder's writer thread, and the media booked per
//! batch keeps the first and last RTP packet of each running transmission (per stream), so
//! the line that ends a transmission says which packets it was. Nothing here runs per packet:
//! the rules note the batch's first and last forwarded packet in its [`Tally`], and
//! [`TxLog::media`] runs once per batch, only for a call that keeps a log.

use super::super::recording::{json_str, rfc3339, RecHandle};
use super::super::rules::{RtpMark, Tally};
use crate::control::arbiter::Slot;
use crate::control::server::{EndReason, TcEvent};
use crate::wire::tc::RevokeCause;
use std::fmt::Write as _;
use std::time::SystemTime;

/// The packets one member's transmission has sent on one stream so far.
#[derive(Debug, Clone, Copy)]
struct Run {
    member: Slot,
    stream: usize,
    first: RtpMark,
    last: RtpMark,
    packets: u64,
}

/// One call's transmission log.
#[derive(Debug)]
pub(crate) struct TxLog {
    rec: std::sync::Arc<RecHandle>,
    runs: Vec<Run>,
}

/// The Transmission Revoked (or End Request) cause a server-ended transmission carried.
fn end_cause(r: EndReason) -> Option<u16> {
    let c = match r {
        EndReason::MaxDuration => RevokeCause::MediaBurstTooLong,
        EndReason::Preempted => RevokeCause::PreEmpted,
        EndReason::NoReceivers => RevokeCause::NoReceivingParticipant,
        _ => return None,
    };
    Some(u16::from(c))
}

impl TxLog {
    pub(crate) fn new(rec: std::sync::Arc<RecHandle>) -> TxLog {
        TxLog {
            rec,
            runs: Vec::new(),
        }
    }

    /// Books a batch from `member` on `stream`: its forwarded packets extend the member's run.
    pub(crate) fn media(&mut self, member: Slot, stream: usize, t: &Tally) {
        let (Some(first), Some(last)) = (t.first_rtp, t.last_rtp) else {
            return;
        };
        let run = self
            .runs
            .iter_mut()
            .find(|r| r.member == member && r.stream == stream);
        match run {
            Some(r) => {
                r.last = last;
                r.packets += t.rtp_forwarded;
            }
            None => self.runs.push(Run {
                member,
                stream,
                first,
                last,
                packets: t.rtp_forwarded,
            }),
        }
    }

    /// Writes `runs` as a `"media"` array (the first packets only when `open`).
    fn write_runs(line: &mut String, runs: &[Run], open: bool) {
        line.push_str(",\"media\":[");
        for (i, r) in runs.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(
                line,
                "{{\"stream\":{},\"ssrc\":{},\"first_seq\":{},\"first_ts\":{}",
                r.stream, r.first.ssrc, r.first.seq, r.first.ts
            );
            if !open {
                if r.last.ssrc != r.first.ssrc {
                    // The sender changed its SSRC during the transmission.
                    let _ = write!(line, ",\"last_ssrc\":{}", r.last.ssrc);
                }
                let _ = write!(
                    line,
                    ",\"last_seq\":{},\"last_ts\":{},\"packets\":{}",
                    r.last.seq, r.last.ts, r.packets
                );
            }
            line.push('}');
        }
        line.push(']');
    }

    /// `member`'s runs, taken out of the log (its transmission is over).
    fn take_runs(&mut self, member: Option<Slot>) -> Vec<Run> {
        let (ended, running) = self
            .runs
            .iter()
            .partition(|r| member.is_none_or(|m| r.member == m));
        self.runs = running;
        ended
    }

    /// Writes event `ev` of call `call` at `wall`; `a` is the name of the member it is
    /// about, `b` of the other one it names (the pre-empting requester, the transmitter a
    /// receiver takes).
    pub(crate) fn event(&mut self, wall: SystemTime, call: &str, ev: &TcEvent, a: &str, b: &str) {
        let mut line = String::with_capacity(160);
        line.push_str("{\"time\":\"");
        line.push_str(&rfc3339(wall));
        line.push_str("\",\"call\":");
        json_str(&mut line, call);
        let _ = write!(line, ",\"event\":\"{}\"", event_name(ev));
        if !matches!(ev, TcEvent::Idle | TcEvent::Released { .. }) {
            line.push_str(",\"member\":");
            json_str(&mut line, a);
        }
        self.event_fields(&mut line, ev, b);
        line.push('}');
        self.rec.line(line);
    }

    /// The fields of `ev` after its member.
    fn event_fields(&mut self, line: &mut String, ev: &TcEvent, b: &str) {
        match *ev {
            TcEvent::Granted {
                audio_ssrc,
                video_ssrc,
                ..
            } => {
                let _ = write!(
                    line,
                    ",\"audio_ssrc\":{audio_ssrc},\"video_ssrc\":{video_ssrc}"
                );
            }
            TcEvent::Queued { position, .. } => {
                let _ = write!(line, ",\"position\":{position}");
            }
            TcEvent::Rejected { cause, .. } => {
                let _ = write!(line, ",\"cause\":{}", u16::from(cause));
            }
            TcEvent::Preempted { .. } => {
                line.push_str(",\"by\":");
                json_str(line, b);
                let _ = write!(line, ",\"cause\":{}", u16::from(RevokeCause::PreEmpted));
            }
            TcEvent::MediaStarted { member } => {
                let runs: Vec<Run> = self
                    .runs
                    .iter()
                    .filter(|r| r.member == member)
                    .copied()
                    .collect();
                Self::write_runs(line, &runs, true);
            }
            TcEvent::TransmissionEnded { member, reason } => {
                let _ = write!(line, ",\"reason\":\"{}\"", reason.as_str());
                if let Some(c) = end_cause(reason) {
                    let _ = write!(line, ",\"cause\":{c}");
                }
                let runs = self.take_runs(Some(member));
                Self::write_runs(line, &runs, false);
            }
            TcEvent::ReceptionStarted { .. } | TcEvent::ReceptionEnded { .. } => {
                line.push_str(",\"transmitter\":");
                json_str(line, b);
            }
            TcEvent::Released { reason } => {
                let _ = write!(line, ",\"reason\":\"{}\"", reason.as_str());
                let runs = self.take_runs(None);
                if !runs.is_empty() {
                    Self::write_runs(line, &runs, false);
                }
            }
            TcEvent::Joined { .. } | TcEvent::Left { .. } | TcEvent::Idle => {}
        }
    }
}

/// The slots event `ev` names: the member it is about, and the other one.
pub(crate) fn event_slots(ev: &TcEvent) -> (Option<Slot>, Option<Slot>) {
    match *ev {
        TcEvent::Joined { member }
        | TcEvent::Left { member }
        | TcEvent::Granted { member, .. }
        | TcEvent::Queued { member, .. }
        | TcEvent::Rejected { member, .. }
        | TcEvent::MediaStarted { member }
        | TcEvent::TransmissionEnded { member, .. } => (Some(member), None),
        TcEvent::Preempted { member, by } => (Some(member), Some(by)),
        TcEvent::ReceptionStarted {
            receiver,
            transmitter,
        }
        | TcEvent::ReceptionEnded {
            receiver,
            transmitter,
        } => (Some(receiver), Some(transmitter)),
        TcEvent::Idle | TcEvent::Released { .. } => (None, None),
    }
}

/// The log's name of event `ev`.
fn event_name(ev: &TcEvent) -> &'static str {
    match ev {
        TcEvent::Joined { .. } => "joined",
        TcEvent::Left { .. } => "left",
        TcEvent::Granted { .. } => "granted",
        TcEvent::Queued { .. } => "queued",
        TcEvent::Rejected { .. } => "rejected",
        TcEvent::Preempted { .. } => "preempted",
        TcEvent::MediaStarted { .. } => "media_started",
        TcEvent::TransmissionEnded { .. } => "transmission_ended",
        TcEvent::Idle => "idle",
        TcEvent::ReceptionStarted { .. } => "reception_started",
        TcEvent::ReceptionEnded { .. } => "reception_ended",
        TcEvent::Released { .. } => "released",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ReleaseReason;
    use crate::wire::tc::RejectCause;
    use std::time::UNIX_EPOCH;

    fn slot(i: usize) -> Slot {
        Slot::new(i).unwrap()
    }

    /// A batch of `member`'s forwarded packets `seqs` on SSRC `ssrc` (timestamps 10 × seq).
    fn batch(log: &mut TxLog, member: usize, stream: usize, ssrc: u32, seqs: &[u16]) {
        let mut t = Tally::default();
        for &seq in seqs {
            t.forwarded(RtpMark {
                ssrc,
                seq,
                ts: u32::from(seq) * 10,
            });
        }
        log.media(slot(member), stream, &t);
    }

    fn ev(log: &mut TxLog, e: TcEvent, a: &str, b: &str) {
        log.event(UNIX_EPOCH, "c", &e, a, b);
    }

    #[test]
    fn runs_per_member_and_stream_end_with_their_transmission_or_the_call() {
        let (h, lines) = RecHandle::for_test();
        let mut log = TxLog::new(std::sync::Arc::new(h));
        // Two transmitters at once; B on two streams, changing SSRC on one; A wraps its
        // sequence number.
        batch(&mut log, 0, 0, 7, &[65_534, 65_535]);
        batch(&mut log, 1, 0, 8, &[10, 11]);
        batch(&mut log, 1, 1, 9, &[500]);
        batch(&mut log, 0, 0, 7, &[0, 1]);
        batch(&mut log, 0, 0, 7, &[]);
        batch(&mut log, 1, 1, 10, &[501]);
        let a = slot(0);
        ev(&mut log, TcEvent::MediaStarted { member: a }, "A", "");
        let reason = EndReason::MaxDuration;
        ev(
            &mut log,
            TcEvent::TransmissionEnded { member: a, reason },
            "A",
            "",
        );
        let cause = RejectCause::ReceiveOnly;
        ev(
            &mut log,
            TcEvent::Rejected { member: a, cause },
            "A\"\n",
            "",
        );
        let reason = ReleaseReason::Released;
        ev(&mut log, TcEvent::Released { reason }, "", "");
        let got: Vec<String> = lines();
        let pre = r#"{"time":"1970-01-01T00:00:00.000Z","call":"c","event":"#;
        let want = [
            r#""media_started","member":"A","media":[{"stream":0,"ssrc":7,"first_seq":65534,"first_ts":655340}]}"#,
            r#""transmission_ended","member":"A","reason":"max_duration","cause":2,"media":[{"stream":0,"ssrc":7,"first_seq":65534,"first_ts":655340,"last_seq":1,"last_ts":10,"packets":4}]}"#,
            r#""rejected","member":"A\"\u000a","cause":5}"#,
            r#""released","reason":"released","media":[{"stream":0,"ssrc":8,"first_seq":10,"first_ts":100,"last_seq":11,"last_ts":110,"packets":2},{"stream":1,"ssrc":9,"first_seq":500,"first_ts":5000,"last_ssrc":10,"last_seq":501,"last_ts":5010,"packets":2}]}"#,
        ];
        let want: Vec<String> = want.iter().map(|w| format!("{pre}{w}")).collect();
        assert_eq!(got, want);
        assert!(log.runs.is_empty(), "every run was ended");
    }
}
