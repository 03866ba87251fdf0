//! The golden-file driver for group calls: runs a scenario on virtual time through
//! [`TransmissionControlServer`]'s public API and writes a transcript in the format of `driver.rs` (see
//! there), members named by their MCVideo ID:
//!
//! * inputs: `> join <user> ...`, `> start`, `> leave <user>`, `> rx <user> <hex>`,
//!   `> media <user> <packets>`, `> timer`, `> release <reason>`;
//! * `tx <user> <hex>`: a datagram from `poll_transmit`, byte for byte;
//! * `event <name> <json>`: an event the engine publishes on the SSE stream, rendered as the
//!   engine's group worker maps it (call ID `group-1`); `internal <name> <json>`: an event of
//!   the server the engine does not publish (rejected, media started, reception started/ended);
//! * `timeout <ms>|none`; `forward <transmitter>->[receivers] ...|none` (the arbiter's routes);
//!   `queue <user>:<position>,...|empty`; each whenever it changes;
//! * `stats ...` at the end.
//!
//! Everything that depends on the group implementation is in this file.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use super::driver::{canonical, hex};
use mcvideo_relay::control::arbiter::{Arbiter, Slot};
use mcvideo_relay::control::call::{CallEvent, CallEventKind};
use mcvideo_relay::control::server::{
    MemberSetup, ServerIdentity, TcConfig, TcEvent, TransmissionControlServer,
};
use mcvideo_relay::control::ssrc::SsrcRegistry;
use mcvideo_relay::control::ReleaseReason;
use mcvideo_relay::wire::tc::{EmitOptions, TcMessage};
use mcvideo_relay::Ssrc;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server's SSRC on every control channel.
pub const SERVER_SSRC: u32 = 0x5e5e_5e5e;

pub struct GroupDriver {
    pub s: TransmissionControlServer,
    base: Instant,
    now: Instant,
    logged_at: Option<Instant>,
    names: BTreeMap<usize, String>,
    seen_timeout: Option<Option<u64>>,
    seen_forward: Option<String>,
    seen_queue: Option<String>,
    log: String,
}

/// A member with a control channel, its own priority and nothing else.
pub fn member(id: &str, priority: u8) -> MemberSetup {
    MemberSetup {
        user_id: id.into(),
        priority,
        control: true,
        ..MemberSetup::default()
    }
}

impl GroupDriver {
    #[allow(clippy::disallowed_methods)] // the scenario's base instant; the core is only given it
    pub fn new(cfg: TcConfig) -> Self {
        let base = Instant::now();
        GroupDriver {
            s: TransmissionControlServer::group(
                cfg,
                ServerIdentity {
                    call_id: "sip:group1@mcx".into(),
                    server_ssrc: Ssrc(SERVER_SSRC),
                },
                Arc::new(Arbiter::new()),
                Arc::new(SsrcRegistry::new(0x1234)),
            ),
            base,
            now: base,
            logged_at: None,
            names: BTreeMap::new(),
            seen_timeout: None,
            seen_forward: None,
            seen_queue: None,
            log: String::new(),
        }
    }

    /// A started group with members `ids` (priority 100 each).
    pub fn started(cfg: TcConfig, ids: &[&str]) -> Self {
        let mut d = GroupDriver::new(cfg);
        for id in ids {
            d.join(member(id, 100));
        }
        d.start();
        d
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64
    }

    fn line(&mut self, s: &str) {
        if self.logged_at != Some(self.now) {
            self.logged_at = Some(self.now);
            let _ = writeln!(self.log, "at {}", self.ms(self.now));
        }
        self.log.push_str(s);
        self.log.push('\n');
    }

    pub fn note(&mut self, s: &str) {
        self.line(&format!("# {s}"));
    }

    fn name(&self, s: Slot) -> String {
        self.names
            .get(&s.index())
            .cloned()
            .unwrap_or_else(|| format!("slot{}", s.index()))
    }

    pub fn slot(&self, user: &str) -> Slot {
        let i = self
            .names
            .iter()
            .rev()
            .find(|(_, n)| n.as_str() == user)
            .map(|(i, _)| *i)
            .unwrap_or_else(|| panic!("no member {user}"));
        Slot::new(i).unwrap()
    }

    fn drain(&mut self) {
        let mut buf = Vec::new();
        while let Some(to) = self.s.poll_transmit(&mut buf) {
            let l = format!("tx {} {}", self.name(to), hex(&buf));
            self.line(&l);
        }
        while let Some(ev) = self.s.poll_event() {
            let l = self.event(ev);
            self.line(&l);
        }
        let t = self.s.poll_timeout().map(|t| self.ms(t));
        if self.seen_timeout != Some(t) {
            self.seen_timeout = Some(t);
            self.line(&match t {
                Some(ms) => format!("timeout {ms}"),
                None => "timeout none".to_owned(),
            });
        }
        let f = self.forwarding();
        if self.seen_forward.as_deref() != Some(f.as_str()) {
            self.line(&f);
            self.seen_forward = Some(f);
        }
        let q = self.queue();
        if self.seen_queue.as_deref() != Some(q.as_str()) {
            self.line(&q);
            self.seen_queue = Some(q);
        }
    }

    /// An event as the engine publishes it (or `internal ...` for one it does not).
    fn event(&self, ev: TcEvent) -> String {
        let user = |s: Slot| -> Arc<str> { Arc::from(self.name(s).as_str()) };
        let internal =
            |name: &str, v: serde_json::Value| format!("internal {name} {}", canonical(&v));
        let kind = match ev {
            TcEvent::Joined { member } => CallEventKind::ParticipantJoined {
                member: user(member),
            },
            TcEvent::Left { member } => CallEventKind::ParticipantLeft {
                member: user(member),
            },
            TcEvent::Granted {
                member,
                audio_ssrc,
                video_ssrc,
            } => CallEventKind::MemberGranted {
                member: user(member),
                audio_ssrc,
                video_ssrc,
            },
            TcEvent::Queued { member, position } => CallEventKind::TransmissionQueued {
                member: user(member),
                position,
            },
            TcEvent::Preempted { member, by } => CallEventKind::TransmissionPreempted {
                member: user(member),
                by: user(by),
            },
            TcEvent::TransmissionEnded { member, reason } => {
                CallEventKind::MemberTransmissionEnded {
                    member: user(member),
                    reason,
                }
            }
            TcEvent::Idle => CallEventKind::TransmissionIdle,
            TcEvent::Released { reason } => CallEventKind::Released { reason },
            TcEvent::Rejected { member, cause } => {
                return internal(
                    "rejected",
                    serde_json::json!({"mcvideo_id": &*user(member), "cause": u16::from(cause)}),
                )
            }
            TcEvent::MediaStarted { member } => {
                return internal(
                    "media_started",
                    serde_json::json!({"mcvideo_id": &*user(member)}),
                )
            }
            TcEvent::ReceptionStarted {
                receiver,
                transmitter,
            } => {
                return internal(
                    "reception_started",
                    serde_json::json!({"receiver": &*user(receiver), "transmitter": &*user(transmitter)}),
                )
            }
            TcEvent::ReceptionEnded {
                receiver,
                transmitter,
            } => {
                return internal(
                    "reception_ended",
                    serde_json::json!({"receiver": &*user(receiver), "transmitter": &*user(transmitter)}),
                )
            }
        };
        let ev = CallEvent {
            call_id: "group-1".into(),
            kind,
        };
        format!(
            "event {} {}",
            ev.kind.name(),
            canonical(&mcvideo_relay::sidecar::event_json(&ev))
        )
    }

    /// The arbiter's routes, transmitters in slot order.
    fn forwarding(&self) -> String {
        let a = self.s.arbiter();
        let routes: Vec<String> = self
            .names
            .keys()
            .filter_map(|i| Slot::new(*i))
            .filter(|s| a.may_forward(*s))
            .map(|s| {
                let rx: Vec<String> = mcvideo_relay::control::arbiter::slots(a.receivers(s))
                    .map(|r| self.name(r))
                    .collect();
                format!("{}->[{}]", self.name(s), rx.join(","))
            })
            .collect();
        if routes.is_empty() {
            "forward none".to_owned()
        } else {
            format!("forward {}", routes.join(" "))
        }
    }

    fn queue(&self) -> String {
        let q: Vec<String> = self
            .s
            .queue()
            .iter()
            .map(|q| format!("{}:{}", q.user_id, q.position))
            .collect();
        if q.is_empty() {
            "queue empty".to_owned()
        } else {
            format!("queue {}", q.join(","))
        }
    }

    pub fn join(&mut self, setup: MemberSetup) -> Option<Slot> {
        self.line(&format!(
            "> join {} priority={} receive_only={} control={} video_ssrc={} audio_ssrc={}",
            setup.user_id,
            setup.priority,
            setup.receive_only,
            setup.control,
            setup
                .video_ssrc
                .map_or("-".to_owned(), |s| s.get().to_string()),
            setup
                .audio_ssrc
                .map_or("-".to_owned(), |s| s.get().to_string()),
        ));
        let user = setup.user_id.clone();
        let now = self.now;
        let r = match self.s.join(now, setup) {
            Ok(slot) => {
                self.names.insert(slot.index(), user);
                self.line(&format!("joined slot={}", slot.index()));
                Some(slot)
            }
            Err(e) => {
                self.line(&format!("error {e:?}: {e}"));
                None
            }
        };
        self.drain();
        r
    }

    pub fn start(&mut self) {
        self.line("> start");
        let now = self.now;
        self.s.start(now);
        self.drain();
    }

    pub fn leave(&mut self, user: &str) {
        self.line(&format!("> leave {user}"));
        let now = self.now;
        let slot = self.slot(user);
        let r = self.s.leave(now, slot);
        self.line(&format!("left {r}"));
        self.drain();
    }

    pub fn release(&mut self, reason: ReleaseReason) {
        self.line(&format!("> release {}", reason.as_str()));
        self.s.release(reason);
        self.drain();
    }

    pub fn rx(&mut self, user: &str, datagram: &[u8]) {
        self.line(&format!("> rx {user} {}", hex(datagram)));
        let now = self.now;
        let slot = self.slot(user);
        self.s.handle_datagram(now, slot, datagram);
        self.drain();
    }

    pub fn msg(&mut self, user: &str, m: &TcMessage<'_>) {
        let b = m.to_vec(&EmitOptions::default()).unwrap();
        self.rx(user, &b);
    }

    pub fn media(&mut self, user: &str, packets: u32) {
        self.line(&format!("> media {user} {packets}"));
        let now = self.now;
        let slot = self.slot(user);
        self.s.handle_media(now, slot, packets);
        self.drain();
    }

    /// Moves time to `ms`, firing the timer at each instant it is due.
    pub fn run_until(&mut self, ms: u64) {
        let end = self.base + Duration::from_millis(ms);
        assert!(end >= self.now, "time goes forward only");
        for _ in 0..1_000_000 {
            match self.s.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.line("> timer");
                    let now = self.now;
                    self.s.handle_timeout(now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    pub fn advance(&mut self, ms: u64) {
        let t = self.ms(self.now) + ms;
        self.run_until(t);
    }

    pub fn finish(mut self) -> String {
        let st = *self.s.stats();
        fn kinds(k: impl Iterator<Item = (&'static str, u64)>) -> String {
            k.map(|(l, n)| format!("{l}:{n}"))
                .collect::<Vec<_>>()
                .join(",")
        }
        let l = format!(
            "stats received=[{}] sent=[{}] malformed={} ignored={} rate_limited={} unpermitted_media={} grants={} queued={} preemptions={} finished={}",
            kinds(st.received.iter()),
            kinds(st.sent.iter()),
            st.malformed,
            st.ignored,
            st.rate_limited,
            st.unpermitted_media_packets,
            st.grants,
            st.queued,
            st.preemptions,
            self.s.finished().map_or("-", |r| r.as_str()),
        );
        self.line(&l);
        self.log
    }
}
