//! The control API's response bodies as typed structs (serde `Serialize`), built from the
//! engine's summaries. Fields are declared in alphabetical order: the bytes on the wire are
//! those of the `serde_json::Value` objects (sorted keys) the API answered with before.
//! Enumerations serialize through their serde `snake_case` names, which are their `as_str`
//! labels (checked by the tests below).

use crate::control::call::{CallEvent, CallEventKind, CallState};
use crate::control::registry::UeEntry;
use crate::control::server::TransmissionState;
use crate::control::server::{EndReason, ReceptionMode};
use crate::control::{CallKind, CommencementMode, MediaSecurity, ReleaseReason};
use crate::relay::rules::{LegQuality, ReceiverReport};
use crate::relay::{CallSummary, DropReason, GroupCallSummary, GroupMemberAnswer, LegSnapshot};
use crate::sdp::MediaKind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn media_kind(k: &MediaKind) -> &str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
        MediaKind::Control => "control",
        MediaKind::Other(o) => o.as_str(),
    }
}

/// `{"error": {...}}`.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: ErrorDetail<'a>,
}

/// An API error: its code, the group member it is about (member-specific setup errors),
/// and a message for people.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorDetail<'a> {
    pub(crate) code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) member: Option<&'a str>,
    pub(crate) message: &'a str,
}

/// One leg's (or member's) packet counters.
#[derive(Debug, Serialize)]
pub(crate) struct Leg<'a> {
    bytes_in: u64,
    bytes_out: u64,
    drops: BTreeMap<&'static str, u64>,
    latches: u64,
    mcvideo_id: &'a str,
    packets_in: u64,
    packets_out: u64,
}

impl<'a> Leg<'a> {
    pub(crate) fn new(id: &'a str, l: &LegSnapshot) -> Self {
        Leg {
            bytes_in: l.bytes_in,
            bytes_out: l.bytes_out,
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), l.dropped(*r)))
                .collect(),
            latches: l.latches,
            mcvideo_id: id,
            packets_in: l.packets_in,
            packets_out: l.packets_out,
        }
    }
}

/// The last RTCP receiver report of a leg.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    cumulative_lost: i32,
    fraction_lost: f64,
    jitter: u32,
    rtt_ms: Option<f64>,
}

impl From<&ReceiverReport> for Report {
    fn from(r: &ReceiverReport) -> Self {
        Report {
            cumulative_lost: r.cumulative_lost,
            fraction_lost: f64::from(r.fraction_lost) / 256.0,
            jitter: r.jitter,
            rtt_ms: r.rtt.map(|d| d.as_secs_f64() * 1000.0),
        }
    }
}

/// The media quality of one leg of one stream (with its stream's kind in a group member's
/// list).
#[derive(Debug, Serialize)]
pub(crate) struct Quality<'a> {
    bitrate_bps: u64,
    bytes: u64,
    frame_rate: f64,
    frames: u64,
    jitter_ms: f64,
    keyframes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    last_packet_age_ms: Option<f64>,
    lost: u64,
    packets: u64,
    receiver_report: Option<Report>,
}

impl<'a> Quality<'a> {
    fn new(q: &LegQuality, kind: Option<&'a str>) -> Self {
        Quality {
            bitrate_bps: q.bitrate_bps,
            bytes: q.bytes,
            frame_rate: q.frame_rate,
            frames: q.frames,
            jitter_ms: q.jitter_ms,
            keyframes: q.keyframes,
            kind,
            last_packet_age_ms: q.last_packet_age.map(|d| d.as_secs_f64() * 1000.0),
            lost: q.lost,
            packets: q.packets,
            receiver_report: q.receiver_report.as_ref().map(Report::from),
        }
    }
}

/// One stream of a one-to-one call: what each party sent the relay and reported receiving.
#[derive(Debug, Serialize)]
pub(crate) struct StreamQuality<'a> {
    callee: Quality<'a>,
    caller: Quality<'a>,
    kind: &'a str,
}

/// Per stream of a one-to-one call, its quality.
pub(crate) fn quality_list(s: &CallSummary) -> Vec<StreamQuality<'_>> {
    s.quality
        .iter()
        .map(|q| StreamQuality {
            callee: Quality::new(&q.legs[1], None),
            caller: Quality::new(&q.legs[0], None),
            kind: media_kind(&q.kind),
        })
        .collect()
}

/// Messages by kind.
fn kinds(c: &crate::control::server::KindCounters) -> BTreeMap<&'static str, u64> {
    c.iter().collect()
}

/// A one-to-one call's transmission control counters.
#[derive(Debug, Serialize)]
pub(crate) struct CallTc {
    ignored: u64,
    malformed: u64,
    rate_limited: u64,
    received: BTreeMap<&'static str, u64>,
    sent: BTreeMap<&'static str, u64>,
}

/// A one-to-one call (push or pull) as `GET /v1/calls/{id}` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Call<'a> {
    call_id: &'a str,
    callee: Leg<'a>,
    caller: Leg<'a>,
    commencement_mode: CommencementMode,
    deliver_to: &'a [String],
    duration_ms: u64,
    kind: CallKind,
    media_security: MediaSecurity,
    /// The HA instance that runs it (with `[ha]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<&'a str>,
    quality: Vec<StreamQuality<'a>>,
    release_reason: Option<ReleaseReason>,
    state: CallState,
    transmission: TransmissionState,
    transmission_control: CallTc,
}

impl<'a> From<&'a CallSummary> for Call<'a> {
    fn from(s: &'a CallSummary) -> Self {
        Call {
            call_id: &s.call_id,
            callee: Leg::new(&s.callee_id, &s.callee),
            caller: Leg::new(&s.caller_id, &s.caller),
            commencement_mode: s.commencement_mode,
            deliver_to: &s.deliver_to,
            duration_ms: ms(s.duration),
            kind: s.kind,
            media_security: s.media_security,
            owner: None,
            quality: quality_list(s),
            release_reason: s.release_reason,
            state: s.state,
            transmission: s.transmission,
            transmission_control: CallTc {
                ignored: s.tc.ignored,
                malformed: s.tc.malformed,
                rate_limited: s.tc.rate_limited,
                received: kinds(&s.tc.received),
                sent: kinds(&s.tc.sent),
            },
        }
    }
}

/// `201` to `POST /v1/calls`.
#[derive(Debug, Serialize)]
pub(crate) struct CallOffered<'a> {
    pub(crate) call_id: &'a str,
    pub(crate) commencement_mode: CommencementMode,
    pub(crate) deliver_to: &'a [String],
    pub(crate) sdp_offer: &'a str,
    pub(crate) state: CallState,
    /// Asked for with `record`: whether the call's media is recorded (`false`: refused,
    /// e.g. too little disk space; the call goes on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recording: Option<bool>,
}

/// `200` to `POST /v1/calls/{id}/answer`.
#[derive(Debug, Serialize)]
pub(crate) struct CallAnswered<'a> {
    pub(crate) call_id: &'a str,
    pub(crate) sdp_answer: &'a str,
    pub(crate) state: CallState,
}

/// The kind of a group call in the API.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GroupKind {
    /// A group call.
    Group,
}

/// A transmission's or request's class (Transmission Indicator).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Indicator {
    Normal,
    ImminentPeril,
    Emergency,
}

impl Indicator {
    fn of(class: u8) -> Self {
        match class {
            2 => Indicator::Emergency,
            1 => Indicator::ImminentPeril,
            _ => Indicator::Normal,
        }
    }
}

/// One member of a group call.
#[derive(Debug, Serialize)]
struct GroupMember<'a> {
    #[serde(flatten)]
    counters: Leg<'a>,
    priority: u8,
    quality: Vec<Quality<'a>>,
    queued: bool,
    receive_only: bool,
    receiving: &'a [String],
    send_only: bool,
    slot: usize,
    transmitting: bool,
}

/// One transmission of a group call.
#[derive(Debug, Serialize)]
struct GroupTransmission<'a> {
    audio_ssrc: u32,
    duration_ms: u64,
    indicator: Indicator,
    mcvideo_id: &'a str,
    media_started: bool,
    priority: u8,
    receivers: &'a [String],
    slot: usize,
    video_ssrc: u32,
}

/// One queued request of a group call.
#[derive(Debug, Serialize)]
struct GroupQueued<'a> {
    indicator: Indicator,
    mcvideo_id: &'a str,
    position: u8,
    priority: u8,
}

/// A group call's transmission control counters.
#[derive(Debug, Serialize)]
struct GroupTc {
    grants: u64,
    ignored: u64,
    malformed: u64,
    preemptions: u64,
    queued: u64,
    rate_limited: u64,
    received: BTreeMap<&'static str, u64>,
    sent: BTreeMap<&'static str, u64>,
    unpermitted_media_packets: u64,
}

/// A group call as `GET /v1/group-calls/{id}` (and `GET /v1/calls`) shows it.
#[derive(Debug, Serialize)]
pub(crate) struct GroupCall<'a> {
    call_id: &'a str,
    duration_ms: u64,
    group_id: &'a str,
    kind: GroupKind,
    max_streams_per_receiver: u8,
    max_transmitters: u8,
    media_security: MediaSecurity,
    members: Vec<GroupMember<'a>>,
    queue: Vec<GroupQueued<'a>>,
    reception_mode: ReceptionMode,
    release_reason: Option<ReleaseReason>,
    state: CallState,
    transmission_control: GroupTc,
    transmissions: Vec<GroupTransmission<'a>>,
}

impl<'a> From<&'a GroupCallSummary> for GroupCall<'a> {
    fn from(s: &'a GroupCallSummary) -> Self {
        GroupCall {
            call_id: &s.call_id,
            duration_ms: ms(s.duration),
            group_id: &s.group_id,
            kind: GroupKind::Group,
            max_streams_per_receiver: s.max_streams_per_receiver,
            max_transmitters: s.max_transmitters,
            media_security: s.media_security,
            members: s
                .members
                .iter()
                .map(|m| GroupMember {
                    counters: Leg::new(&m.mcvideo_id, &m.counters),
                    priority: m.priority,
                    quality: m
                        .quality
                        .iter()
                        .map(|(kind, q)| Quality::new(q, Some(media_kind(kind))))
                        .collect(),
                    queued: m.queued,
                    receive_only: m.receive_only,
                    receiving: &m.receiving,
                    send_only: m.send_only,
                    slot: m.slot.index(),
                    transmitting: m.transmitting,
                })
                .collect(),
            queue: s
                .queue
                .iter()
                .map(|q| GroupQueued {
                    indicator: Indicator::of(q.class),
                    mcvideo_id: &q.mcvideo_id,
                    position: q.position,
                    priority: q.priority,
                })
                .collect(),
            reception_mode: s.reception_mode,
            release_reason: s.release_reason,
            state: s.state,
            transmission_control: GroupTc {
                grants: s.tc.grants,
                ignored: s.tc.ignored,
                malformed: s.tc.malformed,
                preemptions: s.tc.preemptions,
                queued: s.tc.queued,
                rate_limited: s.tc.rate_limited,
                received: kinds(&s.tc.received),
                sent: kinds(&s.tc.sent),
                unpermitted_media_packets: s.tc.unpermitted_media_packets,
            },
            transmissions: s
                .transmissions
                .iter()
                .map(|t| GroupTransmission {
                    audio_ssrc: t.audio_ssrc.get(),
                    duration_ms: ms(t.duration),
                    indicator: Indicator::of(t.class),
                    mcvideo_id: &t.mcvideo_id,
                    media_started: t.media_started,
                    priority: t.priority,
                    receivers: &t.receivers,
                    slot: t.slot.index(),
                    video_ssrc: t.video_ssrc.get(),
                })
                .collect(),
        }
    }
}

/// An entry of `GET /v1/calls`: every kind of call, each with its `kind`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum AnyCall<'a> {
    /// A push or pull call (`kind` `video_push` or `video_pull`).
    OneToOne(Call<'a>),
    /// A group call (`kind` `group`).
    Group(GroupCall<'a>),
}

impl AnyCall<'_> {
    pub(crate) fn call_id(&self) -> &str {
        match self {
            AnyCall::OneToOne(c) => c.call_id,
            AnyCall::Group(g) => g.call_id,
        }
    }
}

/// `GET /v1/calls`.
#[derive(Debug, Serialize)]
pub(crate) struct CallList<'a> {
    pub(crate) calls: Vec<AnyCall<'a>>,
}

/// `GET /v1/group-calls`.
#[derive(Debug, Serialize)]
pub(crate) struct GroupCallList<'a> {
    pub(crate) group_calls: Vec<GroupCall<'a>>,
}

/// One member's answer in `201` to `POST /v1/group-calls`.
#[derive(Debug, Serialize)]
pub(crate) struct MemberAnswer<'a> {
    pub(crate) mcvideo_id: &'a str,
    pub(crate) sdp_answer: &'a str,
    pub(crate) slot: usize,
}

impl<'a> From<&'a GroupMemberAnswer> for MemberAnswer<'a> {
    fn from(a: &'a GroupMemberAnswer) -> Self {
        MemberAnswer {
            mcvideo_id: &a.mcvideo_id,
            sdp_answer: &a.sdp_answer,
            slot: a.slot.index(),
        }
    }
}

/// `201` to `POST /v1/group-calls`.
#[derive(Debug, Serialize)]
pub(crate) struct GroupCreated<'a> {
    pub(crate) call_id: &'a str,
    pub(crate) kind: GroupKind,
    pub(crate) members: Vec<MemberAnswer<'a>>,
    pub(crate) state: CallState,
    /// As [`CallOffered::recording`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recording: Option<bool>,
}

/// `201` to `POST /v1/group-calls/{id}/members`.
#[derive(Debug, Serialize)]
pub(crate) struct MemberAdded<'a> {
    pub(crate) call_id: &'a str,
    /// Its answer's fields, after the call ID.
    #[serde(flatten)]
    pub(crate) member: MemberAnswer<'a>,
}

/// One UE of a user.
#[derive(Debug, Serialize)]
pub(crate) struct Ue<'a> {
    commencement_mode: Option<CommencementMode>,
    designated_for_private_calls: bool,
    ue_id: &'a str,
}

/// A user's UEs.
#[derive(Debug, Serialize)]
pub(crate) struct Ues<'a> {
    mcvideo_id: &'a str,
    ues: Vec<Ue<'a>>,
}

impl<'a> Ues<'a> {
    pub(crate) fn new(user: &'a str, ues: &'a [UeEntry]) -> Self {
        Ues {
            mcvideo_id: user,
            ues: ues
                .iter()
                .map(|u| Ue {
                    commencement_mode: u.commencement_mode,
                    designated_for_private_calls: u.designated_for_private_calls,
                    ue_id: &u.ue_id,
                })
                .collect(),
        }
    }
}

/// `/v1/admin/drain`.
#[derive(Debug, Serialize)]
pub(crate) struct Drain {
    pub(crate) active_calls: usize,
    pub(crate) draining: bool,
}

/// `200` to `POST /v1/admin/reload`.
#[derive(Debug, Serialize)]
pub(crate) struct Reloaded<'a> {
    pub(crate) changes: &'a [String],
    pub(crate) reloaded: bool,
}

/// One recording in `GET /v1/recordings`.
#[derive(Debug, Serialize)]
pub(crate) struct RecordingItem {
    /// Its files' sizes, summed.
    pub(crate) bytes: u64,
    pub(crate) call_id: String,
    /// Its directory's name.
    pub(crate) id: String,
    /// When its directory was opened: RFC 3339, UTC, milliseconds.
    pub(crate) started_at: String,
    /// The same as unix milliseconds.
    pub(crate) started_ms: u64,
    /// Still being written (its call is live, or the writer has not closed it yet).
    pub(crate) writing: bool,
}

/// `200` to `GET /v1/recordings`.
#[derive(Debug, Serialize)]
pub(crate) struct RecordingList {
    /// More recordings match than `limit` returned.
    pub(crate) more: bool,
    /// Newest first.
    pub(crate) recordings: Vec<RecordingItem>,
}

/// One file of a recording (`export/...` for the default export directory's).
#[derive(Debug, Serialize)]
pub(crate) struct RecordingFile {
    pub(crate) bytes: u64,
    pub(crate) name: String,
}

/// `200` to `GET /v1/recordings/{id}`.
#[derive(Debug, Serialize)]
pub(crate) struct Recording {
    pub(crate) bytes: u64,
    pub(crate) call_id: String,
    /// By name.
    pub(crate) files: Vec<RecordingFile>,
    pub(crate) id: String,
    /// `media.json`'s `kind` (`None`: no media recorded).
    pub(crate) kind: Option<String>,
    /// Whether its media was recorded (it has `media.json`).
    pub(crate) media: bool,
    /// `media.json`'s `media_security`.
    pub(crate) media_security: Option<String>,
    /// The members its transmission log names (`member`, `by`, `transmitter`), sorted.
    pub(crate) members: Vec<String>,
    pub(crate) started_at: String,
    pub(crate) started_ms: u64,
    /// Whether it has a transmission log.
    pub(crate) transmission_log: bool,
    pub(crate) writing: bool,
}

/// `200` to `DELETE /v1/recordings/{id}`.
#[derive(Debug, Serialize)]
pub(crate) struct RecordingDeleted<'a> {
    pub(crate) deleted: bool,
    pub(crate) id: &'a str,
}

/// `/healthz`'s status.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Taking calls.
    Ok,
    /// Drain mode.
    Draining,
    /// Fenced (high availability): another instance took this one's calls; it forwards for
    /// none of them. Answered with 503, so a VRRP health check (keepalived's `track_script`)
    /// moves the media address away.
    Fenced,
}

/// `/healthz`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    pub(crate) active_calls: usize,
    pub(crate) active_group_calls: usize,
    pub(crate) status: Status,
    pub(crate) uptime_secs: u64,
}

/// The data of a `call.quality` event.
#[derive(Debug, Serialize)]
pub(crate) struct QualityEvent<'a> {
    pub(crate) call_id: &'a str,
    pub(crate) quality: Vec<StreamQuality<'a>>,
}

/// The data of an `events.lagged` event.
#[derive(Debug, Serialize)]
pub(crate) struct Lagged {
    pub(crate) missed: u64,
}

/// The reason of a `transmission.ended` or `call.released` event.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
enum Reason {
    Call(ReleaseReason),
    Transmission(EndReason),
}

/// The SSE `data` of a call event: the call ID and the event's fields.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Event<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    audio_ssrc: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
    call_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcvideo_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    video_ssrc: Option<u32>,
}

impl<'a> From<&'a CallEvent> for Event<'a> {
    fn from(ev: &'a CallEvent) -> Self {
        let e = Event {
            call_id: &ev.call_id,
            ..Event::default()
        };
        match ev.kind {
            CallEventKind::TransmissionGranted {
                audio_ssrc,
                video_ssrc,
            } => Event {
                audio_ssrc: Some(audio_ssrc.get()),
                video_ssrc: Some(video_ssrc.get()),
                ..e
            },
            CallEventKind::TransmissionEnded { reason } | CallEventKind::Released { reason } => {
                Event {
                    reason: Some(Reason::Call(reason)),
                    ..e
                }
            }
            CallEventKind::MemberGranted {
                ref member,
                audio_ssrc,
                video_ssrc,
            } => Event {
                mcvideo_id: Some(member),
                audio_ssrc: Some(audio_ssrc.get()),
                video_ssrc: Some(video_ssrc.get()),
                ..e
            },
            CallEventKind::TransmissionQueued {
                ref member,
                position,
            } => Event {
                mcvideo_id: Some(member),
                position: Some(position),
                ..e
            },
            CallEventKind::TransmissionPreempted { ref member, ref by } => Event {
                mcvideo_id: Some(member),
                by: Some(by),
                ..e
            },
            CallEventKind::MemberTransmissionEnded { ref member, reason } => Event {
                mcvideo_id: Some(member),
                reason: Some(Reason::Transmission(reason)),
                ..e
            },
            CallEventKind::ParticipantJoined { ref member }
            | CallEventKind::ParticipantLeft { ref member } => Event {
                mcvideo_id: Some(member),
                ..e
            },
            CallEventKind::Adopted { ref from } => Event {
                from: Some(from),
                ..e
            },
            _ => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn name<T: Serialize>(v: T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    /// The API's enumerations serialize as their `as_str` labels (the names the API always had).
    #[test]
    fn serde_names_are_the_labels() {
        for r in ReleaseReason::ALL {
            assert_eq!(name(r), json!(r.as_str()));
        }
        for k in [CallKind::VideoPush, CallKind::VideoPull] {
            assert_eq!(name(k), json!(k.as_str()));
        }
        for s in [
            CallState::Offered,
            CallState::Established,
            CallState::Released,
        ] {
            assert_eq!(name(s), json!(s.as_str()));
        }
        for t in [
            TransmissionState::Idle,
            TransmissionState::Granted,
            TransmissionState::Ended,
            TransmissionState::Released,
        ] {
            assert_eq!(name(t), json!(t.as_str()));
        }
        for m in [MediaSecurity::EndToEnd, MediaSecurity::PerLeg] {
            assert_eq!(name(m), json!(m.as_str()));
            assert_eq!(MediaSecurity::parse(m.as_str()), Some(m));
        }
        for m in [CommencementMode::Automatic, CommencementMode::Manual] {
            assert_eq!(name(m), json!(m.as_str()));
            assert_eq!(CommencementMode::parse(m.as_str()), Some(m));
        }
        for m in [ReceptionMode::Automatic, ReceptionMode::Manual] {
            assert_eq!(name(m), json!(m.as_str()));
            assert_eq!(ReceptionMode::parse(m.as_str()), Some(m));
        }
        for r in [
            EndReason::Completed,
            EndReason::Preempted,
            EndReason::MaxDuration,
            EndReason::MediaTimeout,
            EndReason::NoReceivers,
            EndReason::Left,
            EndReason::Released,
        ] {
            assert_eq!(name(r), json!(r.as_str()));
        }
        assert_eq!(name(Indicator::ImminentPeril), json!("imminent_peril"));
        assert_eq!(name(GroupKind::Group), json!("group"));
    }

    /// Keys come out sorted, as from a `serde_json::Value` object.
    #[test]
    fn keys_are_sorted() {
        let l = LegSnapshot::default();
        let s = serde_json::to_string(&Leg::new("alice", &l)).unwrap();
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(s, v.to_string());
        let e = ErrorBody {
            error: ErrorDetail {
                code: "bad_sdp",
                member: Some("alice"),
                message: "m",
            },
        };
        let s = serde_json::to_string(&e).unwrap();
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(s, v.to_string());
        assert_eq!(v["error"]["member"], "alice");
    }

    /// `201` to `POST /v1/group-calls/{id}/members`: the call ID, then the member's answer as
    /// in `POST /v1/group-calls`, one flat object.
    #[test]
    fn member_added_is_flat() {
        let a = MemberAnswer {
            mcvideo_id: "dave",
            sdp_answer: "v=0",
            slot: 3,
        };
        let s = serde_json::to_string(&MemberAdded {
            call_id: "grp-1",
            member: a,
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"call_id":"grp-1","mcvideo_id":"dave","sdp_answer":"v=0","slot":3}"#
        );
    }
}
