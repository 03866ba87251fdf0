//! Shared harness for the behaviour tests: a call table driven on virtual time, a counting
//! port allocator, SDP builders and a decoder for what the server sends.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use mcvideo_relay::control::call::{
    AnswerCall, CallConfig, CallEvent, CallEventKind, CallOffer, CallTable, CreateCall,
    PortAllocator, RelayPort, SeededEntropy,
};
use mcvideo_relay::control::policy::{AllowAll, AuthorizationPolicy};
use mcvideo_relay::control::{MediaSecurity, Party};
use mcvideo_relay::sdp::MediaKind;
use mcvideo_relay::wire::tc::{EmitOptions, MessageKind, TcMessage};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod browser;
pub mod ffmpeg;
pub mod net;

/// Fails the test with `hint` when `tool` (run with `arg`, e.g. `--version`) is missing.
pub fn require_tool(tool: &str, arg: &str, hint: &str) {
    let ok = std::process::Command::new(tool)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{tool}` is needed for this test and is not on PATH: {hint}"
    );
}

pub const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
pub const CALLER: &str = "sip:alice@mcx.example";
pub const CALLEE: &str = "sip:bob@mcx.example";

/// Hands out port pairs from a small range and remembers what is in use.
#[derive(Debug, Default)]
pub struct Ports {
    pub next: u16,
    pub limit: u16,
    pub in_use: HashSet<RelayPort>,
    pub free_list: Vec<RelayPort>,
}

impl Ports {
    pub fn new(limit_pairs: u16) -> Self {
        Ports {
            next: 40_000,
            limit: 40_000 + limit_pairs * 2,
            ..Default::default()
        }
    }
}

impl PortAllocator for Ports {
    fn allocate(&mut self, _party: Party, _kind: &MediaKind, rtcp_mux: bool) -> Option<RelayPort> {
        let p = match self.free_list.pop() {
            Some(p) => p,
            None => {
                if self.next >= self.limit {
                    return None;
                }
                let port = self.next;
                self.next += 2;
                RelayPort {
                    rtp: SocketAddr::new(RELAY_IP, port),
                    rtcp: SocketAddr::new(RELAY_IP, port + 1),
                }
            }
        };
        let p = if rtcp_mux {
            RelayPort { rtcp: p.rtp, ..p }
        } else {
            p
        };
        assert!(self.in_use.insert(p), "port handed out twice");
        Some(p)
    }

    fn free(&mut self, port: RelayPort) {
        assert!(self.in_use.remove(&port), "freed a port not in use");
        self.free_list.push(RelayPort {
            rtp: port.rtp,
            rtcp: SocketAddr::new(port.rtp.ip(), port.rtp.port() + 1),
        });
    }
}

/// The caller's offer: audio, video with an a=ssrc, the MCVideo control line, a MIKEY line.
pub fn caller_offer() -> String {
    "v=0\r\n\
o=alice 1 1 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAYAyO2ZsKrXRmUAAAAAAAAAAAAAAAAAAAAAAA==\r\n\
m=audio 6000 RTP/SAVP 96\r\n\
i=audio component of MCVideo\r\n\
a=rtpmap:96 AMR-WB/16000\r\n\
a=ssrc:1111 cname:alice\r\n\
m=video 6002 RTP/SAVP 97\r\n\
i=video component of MCVideo\r\n\
a=rtpmap:97 H264/90000\r\n\
a=fmtp:97 packetization-mode=1\r\n\
a=ssrc:2222 cname:alice\r\n\
a=sendonly\r\n\
m=application 6004 udp MCVideo\r\n\
a=fmtp:MCVideo mc_queueing;mc_priority=5;mc_implicit_request\r\n"
        .to_owned()
}

/// The callee's answer to the offer it was given: same lines, its own ports.
pub fn callee_answer(control: bool) -> String {
    format!(
        "v=0\r\n\
o=bob 7 7 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 7000 RTP/SAVP 96\r\n\
a=rtpmap:96 AMR-WB/16000\r\n\
m=video 7002 RTP/SAVP 97\r\n\
a=rtpmap:97 H264/90000\r\n\
a=recvonly\r\n\
m=application {} udp MCVideo\r\n\
a=fmtp:MCVideo mc_queueing\r\n",
        if control { 7004 } else { 0 }
    )
}

pub fn create_request(caller_sdp: String) -> CreateCall {
    CreateCall {
        call_id: Some("call-1".into()),
        caller_id: CALLER.into(),
        caller_sdp,
        callee_id: CALLEE.into(),
        video_push: true,
        video_pull: false,
        commencement_mode: None,
        media_security: MediaSecurity::EndToEnd,
        caller_tc_key: None,
        callee_interface: None,
        caller_interface: None,
    }
}

/// A call table on virtual time.
pub struct Harness {
    pub table: CallTable,
    pub ports: Ports,
    pub t0: Instant,
    pub now: Instant,
}

/// What a call sent: (destination, message bytes).
pub type Sent = Vec<(Party, Vec<u8>)>;

impl Harness {
    pub fn new(config: CallConfig) -> Self {
        Self::with_policy(config, Arc::new(AllowAll))
    }

    #[allow(clippy::disallowed_methods)] // the test's own epoch; the core is only given it
    pub fn with_policy(config: CallConfig, policy: Arc<dyn AuthorizationPolicy>) -> Self {
        let t0 = Instant::now();
        Harness {
            table: CallTable::new(config, policy, Box::new(SeededEntropy(7))),
            ports: Ports::new(1000),
            t0,
            now: t0,
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for c in self.table.iter_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
    }

    /// Advance in small steps (so timers fire at their own times) up to `d`.
    pub fn run_for(&mut self, d: Duration, step: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.advance(step);
        }
    }

    pub fn create(&mut self, req: CreateCall) -> CallOffer {
        self.table
            .create_call(self.now, req, &mut self.ports)
            .expect("create_call")
    }

    /// Create call-1 and accept it with a control channel on both sides; returns the offer.
    pub fn established(&mut self) -> CallOffer {
        let offer = self.create(create_request(caller_offer()));
        self.table
            .accept_call(
                self.now,
                "call-1",
                AnswerCall {
                    callee_sdp: callee_answer(true),
                    callee_tc_key: None,
                },
            )
            .expect("accept_call");
        offer
    }

    pub fn sent(&mut self, id: &str) -> Sent {
        let call = self.table.get_mut(id).expect("call");
        let mut buf = Vec::new();
        let mut v = Vec::new();
        while let Some(to) = call.poll_transmit(&mut buf) {
            v.push((to, buf.clone()));
        }
        v
    }

    pub fn events(&mut self, id: &str) -> Vec<CallEventKind> {
        let call = self.table.get_mut(id).expect("call");
        let mut v = Vec::new();
        while let Some(CallEvent { kind, .. }) = call.poll_event() {
            v.push(kind);
        }
        v
    }

    pub fn control(&mut self, id: &str, from: Party, msg: &TcMessage<'_>) {
        let bytes = msg.to_vec(&EmitOptions::default()).expect("emit");
        let now = self.now;
        self.table
            .get_mut(id)
            .expect("call")
            .handle_control(now, from, &bytes);
    }

    pub fn media(&mut self, id: &str, from: Party, packets: u32) {
        let now = self.now;
        self.table
            .get_mut(id)
            .expect("call")
            .handle_media(now, from, packets);
    }
}

/// (destination, kind) of each sent message.
pub fn kinds(sent: &Sent) -> Vec<(Party, MessageKind)> {
    sent.iter()
        .map(|(p, b)| (*p, TcMessage::parse(b).expect("server output parses").kind))
        .collect()
}

pub fn parse(b: &[u8]) -> TcMessage<'_> {
    TcMessage::parse(b).expect("server output parses")
}
