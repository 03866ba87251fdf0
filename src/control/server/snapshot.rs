//! The server's state as plain data, for a relay that takes the call over (high availability):
//! every member with its role, the transmissions with their SSRCs, the queue with its order,
//! reception state (Active SSRC Lists, pending reception grants), the arbiter's bits, the
//! counters, and every running timer as the time **left** at the snapshot (an `Instant` means
//! nothing in another process). Take it after draining `poll_transmit` and `poll_event`: queued
//! transmits and events are not part of it; reply budgets start full on restore.

use super::*;
use crate::control::arbiter::ArbiterSnapshot;
use crate::control::timer::ms_left;
use std::time::Duration;

/// The procedure, as a snapshot holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "ha",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum ProcedureSnapshot {
    /// [`Procedure::Private`].
    Private {
        /// The transmitter's slot.
        transmitter: u8,
        /// Its Audio SSRC.
        audio_ssrc: u32,
        /// Its Video SSRC.
        video_ssrc: u32,
    },
    /// [`Procedure::Group`].
    Group,
}

/// One running transmission.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct TransmissionSnapshot {
    /// Audio SSRC.
    pub audio_ssrc: u32,
    /// Video SSRC.
    pub video_ssrc: u32,
    /// Indicator class and priority.
    pub rank: (u8, u8),
    /// Transmission Indicator as requested.
    pub indicator: u16,
    /// Granted this many ms before the snapshot.
    pub granted_ms_ago: u64,
    /// Its first media arrived.
    pub first_media: bool,
    /// Granted messages sent.
    pub granted_sent: u32,
    /// T4, ms left.
    pub t4_ms: Option<u64>,
    /// Maximum duration, ms left.
    pub max_duration_ms: Option<u64>,
    /// Media inactivity, ms left.
    pub inactivity_ms: Option<u64>,
    /// T11, ms left.
    pub t11_ms: Option<u64>,
}

/// A Transmission Revoked being repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct RevokeSnapshot {
    /// Its cause code.
    pub cause: u16,
    /// Times sent.
    pub sent: u32,
    /// T3, ms left.
    pub due_ms: u64,
    /// Media arrived since the last one.
    pub media_since: bool,
    /// Acknowledged.
    pub acked: bool,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct MemberSnapshot {
    /// Its slot.
    pub slot: u8,
    /// As the controlling server set it up.
    pub setup: MemberSetup,
    /// Its transmission.
    pub transmission: Option<TransmissionSnapshot>,
    /// Its last transmission's SSRCs (audio, video).
    pub last_ssrcs: Option<(u32, u32)>,
    /// Its transmission ended last.
    pub recently_ended: bool,
    /// A transmission of its had media.
    pub media_seen: bool,
    /// Media packets it sent.
    #[cfg_attr(feature = "ha", serde(default))]
    pub media_packets: u64,
    /// Packets without permission in the current run.
    pub unpermitted_run: u32,
    /// A Revoked being repeated.
    pub revoke: Option<RevokeSnapshot>,
    /// Transmitters it receives (its Active SSRC List), as a slot bit set.
    pub receiving: u64,
    /// Reception grants awaiting an ack: (transmitter slot, times sent, T6 ms left).
    pub reception_grants: Vec<(u8, u32, u64)>,
    /// It acked the last Transmission Idle.
    pub idle_acked: bool,
}

/// One queued request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct QueuedSnapshot {
    /// The requester's slot.
    pub member: u8,
    /// Indicator class and priority.
    pub rank: (u8, u8),
    /// Transmission Indicator.
    pub indicator: u16,
    /// Arrival order.
    pub seq: u64,
}

/// The whole server: what [`TransmissionControlServer::snapshot`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct TcSnapshot {
    /// Timers, counters and attributes.
    pub config: TcConfig,
    /// Private or group.
    pub procedure: ProcedureSnapshot,
    /// The call's ID.
    pub call_id: String,
    /// The server's SSRC.
    pub server_ssrc: u32,
    /// Where the transmission stands (for readers of the record, e.g. the API).
    pub transmission: TransmissionState,
    /// The members.
    pub members: Vec<MemberSnapshot>,
    /// Queued requests, strongest first.
    pub queue: Vec<QueuedSnapshot>,
    /// The next queue arrival number.
    pub queue_seq: u64,
    /// Started ([`TransmissionControlServer::start`]).
    pub started: bool,
    /// Why it finished, if it did.
    pub finished: Option<ReleaseReason>,
    /// T1, ms left.
    pub t1_ms: Option<u64>,
    /// T2, ms left.
    pub t2_ms: Option<u64>,
    /// Transmission Idle sends in the current idle period.
    pub idle_sent: u32,
    /// Transmission Idle sequence number.
    pub idle_seq: u16,
    /// The arbiter's grant bits, epoch and release.
    pub arbiter: ArbiterSnapshot,
    /// The arbiter's routes: (transmitter slot, receivers bit set).
    pub routes: Vec<(u8, u64)>,
    /// Room in the arbiter.
    pub arbiter_members: usize,
    /// Counters.
    pub stats: TcStats,
}

fn left(now: Instant, at: Option<Instant>) -> Option<u64> {
    at.map(|at| ms_left(now, at))
}

fn later(now: Instant, ms: Option<u64>) -> Option<Instant> {
    ms.map(|ms| now + Duration::from_millis(ms))
}

fn slot(i: u8) -> Option<Slot> {
    Slot::new(usize::from(i))
}

impl Revoke {
    /// The repetition at `now`, its T3 as the time left.
    fn snapshot(&self, now: Instant) -> RevokeSnapshot {
        RevokeSnapshot {
            cause: self.cause.into(),
            sent: self.sent,
            due_ms: ms_left(now, self.due),
            media_since: self.media_since,
            acked: self.acked,
        }
    }

    /// The repetition of snapshot `s`, its T3 due as much later than `now` as it was left.
    fn restored(s: &RevokeSnapshot, now: Instant) -> Revoke {
        Revoke {
            cause: RevokeCause::from(s.cause),
            sent: s.sent,
            due: now + Duration::from_millis(s.due_ms),
            media_since: s.media_since,
            acked: s.acked,
        }
    }
}

impl TransmissionControlServer {
    /// The server's state at `now`, for a relay that takes the call over. Take it after draining
    /// `poll_transmit` and `poll_event` (queued transmits and events are not part of it).
    pub fn snapshot(&self, now: Instant) -> TcSnapshot {
        let members = self
            .present()
            .map(|(s, m)| MemberSnapshot {
                slot: s.index() as u8,
                setup: m.setup.clone(),
                transmission: m.tx.as_ref().map(|t| TransmissionSnapshot {
                    audio_ssrc: t.audio.get(),
                    video_ssrc: t.video.get(),
                    rank: (t.rank.class, t.rank.priority),
                    indicator: t.indicator,
                    granted_ms_ago: now.saturating_duration_since(t.granted_at).as_millis() as u64,
                    first_media: t.first_media,
                    granted_sent: t.granted_sent,
                    t4_ms: left(now, t.t4),
                    max_duration_ms: left(now, t.max_duration),
                    inactivity_ms: left(now, t.inactivity),
                    t11_ms: left(now, t.t11),
                }),
                last_ssrcs: m.last_ssrcs.map(|(a, v)| (a.get(), v.get())),
                recently_ended: m.recently_ended,
                media_seen: m.media_seen,
                media_packets: m.media_packets,
                unpermitted_run: m.unpermitted_run,
                revoke: m.revoke.map(|r| r.snapshot(now)),
                receiving: m.receiving,
                reception_grants: m
                    .reception_grants
                    .iter()
                    .map(|g| (g.transmitter.index() as u8, g.sent, ms_left(now, g.due)))
                    .collect(),
                idle_acked: m.idle_acked,
            })
            .collect();
        TcSnapshot {
            config: self.cfg.clone(),
            procedure: match self.procedure {
                Procedure::Private {
                    transmitter,
                    audio_ssrc,
                    video_ssrc,
                } => ProcedureSnapshot::Private {
                    transmitter: transmitter.index() as u8,
                    audio_ssrc: audio_ssrc.get(),
                    video_ssrc: video_ssrc.get(),
                },
                Procedure::Group => ProcedureSnapshot::Group,
            },
            call_id: self.ids.call_id.clone(),
            server_ssrc: self.ids.server_ssrc.get(),
            transmission: self.transmission_state(),
            members,
            queue: self
                .queue
                .iter()
                .map(|q| QueuedSnapshot {
                    member: q.member.index() as u8,
                    rank: (q.rank.class, q.rank.priority),
                    indicator: q.indicator,
                    seq: q.seq,
                })
                .collect(),
            queue_seq: self.queue_seq,
            started: self.started,
            finished: self.finished,
            t1_ms: left(now, self.t1),
            t2_ms: left(now, self.t2),
            idle_sent: self.idle_sent,
            idle_seq: self.idle_seq,
            arbiter: self.arbiter.snapshot(),
            routes: self
                .arbiter
                .routes()
                .into_iter()
                .map(|(t, r)| (t.index() as u8, r))
                .collect(),
            arbiter_members: self.arbiter.capacity(),
            stats: self.stats,
        }
    }

    /// The server of snapshot `s`, its timers armed as much later than `now` as they were left
    /// at the snapshot, with an arbiter in the snapshot's state (share it with the forwarding
    /// side: [`arbiter`](Self::arbiter)). A group's transmissions keep their SSRCs: they are
    /// reserved in `ssrcs` (the group's registry); a private call needs none. Slots out of range
    /// in a snapshot are skipped.
    pub fn restore(s: &TcSnapshot, now: Instant, ssrcs: Option<Arc<SsrcRegistry>>) -> Self {
        let procedure = match s.procedure {
            ProcedureSnapshot::Private {
                transmitter,
                audio_ssrc,
                video_ssrc,
            } => Procedure::Private {
                transmitter: slot(transmitter).unwrap_or(Slot::FIRST),
                audio_ssrc: Ssrc(audio_ssrc),
                video_ssrc: Ssrc(video_ssrc),
            },
            ProcedureSnapshot::Group => Procedure::Group,
        };
        let routes: Vec<(Slot, u64)> = s
            .routes
            .iter()
            .filter_map(|&(t, r)| Some((slot(t)?, r)))
            .collect();
        let arbiter = Arc::new(Arbiter::restored(s.arbiter_members, s.arbiter, &routes));
        let ids = ServerIdentity {
            call_id: s.call_id.clone(),
            server_ssrc: Ssrc(s.server_ssrc),
        };
        let mut t = Self::new(s.config.clone(), procedure, ids, arbiter, ssrcs);
        for m in &s.members {
            t.restore_member(m, now);
        }
        t.queue = s
            .queue
            .iter()
            .filter_map(|q| {
                Some(Queued {
                    member: slot(q.member)?,
                    rank: Rank {
                        class: q.rank.0,
                        priority: q.rank.1,
                    },
                    indicator: q.indicator,
                    seq: q.seq,
                })
            })
            .collect();
        t.queue_seq = s.queue_seq;
        t.started = s.started;
        t.finished = s.finished;
        t.t1 = later(now, s.t1_ms);
        t.t2 = later(now, s.t2_ms);
        t.idle_sent = s.idle_sent;
        t.idle_seq = s.idle_seq;
        t.stats = s.stats;
        t
    }

    fn restore_member(&mut self, m: &MemberSnapshot, now: Instant) {
        let Some(s) = slot(m.slot) else { return };
        let tx = m.transmission.as_ref().map(|x| Transmission {
            audio: Ssrc(x.audio_ssrc),
            video: Ssrc(x.video_ssrc),
            rank: Rank {
                class: x.rank.0,
                priority: x.rank.1,
            },
            indicator: x.indicator,
            granted_at: now
                .checked_sub(Duration::from_millis(x.granted_ms_ago))
                .unwrap_or(now),
            first_media: x.first_media,
            granted_sent: x.granted_sent,
            t4: later(now, x.t4_ms),
            max_duration: later(now, x.max_duration_ms),
            inactivity: later(now, x.inactivity_ms),
            t11: later(now, x.t11_ms),
        });
        if let (Some(tx), Some(r)) = (&tx, &self.ssrcs) {
            r.reserve(tx.audio);
            r.reserve(tx.video);
        }
        let budget = TokenBucket::new(
            f64::from(self.cfg.reply_rate_per_sec),
            f64::from(self.cfg.reply_burst),
        );
        let member = Member {
            setup: m.setup.clone(),
            tx,
            last_ssrcs: m.last_ssrcs.map(|(a, v)| (Ssrc(a), Ssrc(v))),
            recently_ended: m.recently_ended,
            // A transmission with media implies it (a record written without the flag).
            media_seen: m.media_seen || m.transmission.as_ref().is_some_and(|t| t.first_media),
            media_packets: m.media_packets,
            unpermitted_run: m.unpermitted_run,
            revoke: m.revoke.map(|r| Revoke::restored(&r, now)),
            receiving: m.receiving,
            reception_grants: m
                .reception_grants
                .iter()
                .filter_map(|&(t, sent, due)| {
                    Some(ReceptionGrant {
                        transmitter: slot(t)?,
                        sent,
                        due: now + Duration::from_millis(due),
                    })
                })
                .collect(),
            idle_acked: m.idle_acked,
            budget,
        };
        if let Some(place) = self.members.get_mut(s.index()) {
            *place = Some(member);
        }
    }
}
