//! The ng commands over the [`Engine`]: `ping`, `offer`, `answer`, `delete`, `query`, `list`,
//! `statistics`, with rtpengine's reply shapes (`result`, `error-reason`, `sdp`).
//!
//! An ng call (its `call-id`) is one engine call whose ID is derived from the `call-id` by a
//! hash (`ng-` and 24 hex digits: the engine takes `[A-Za-z0-9._-]{1,64}`, a SIP Call-ID is
//! anything). The map from `call-id` to the engine call also keeps the tags and the SDPs
//! exchanged, so that a repeated `offer` or `answer` (a SIP retransmission that reached the
//! proxy's script again, a new cookie) gets the same SDP back and never a second call.

use super::bencode::{dict, Value};
use crate::control::call::{AnswerCall, CallState, CreateCall, SetupError};
use crate::control::{CommencementMode, MediaSecurity};
use crate::relay::{sdp_family, CallSummary, Engine, InterfaceProblem};
use crate::sdp::SessionDescription;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Distinct unknown flags and keys logged (each once); later ones are not logged.
const MAX_LOGGED_UNKNOWN: usize = 256;

/// Call-IDs a `list` reply carries at most, in bytes (a reply is one UDP datagram).
const MAX_LIST_BYTES: usize = 48 * 1024;

/// Call-IDs of calls the engine ended on its own, remembered so that the `delete` that follows
/// (the BYE) is answered `ok`; at most this many, oldest forgotten first.
const MAX_ENDED: usize = 4096;

/// What an `offer` without an `mcvideo` dictionary gets.
#[derive(Debug, Clone)]
pub(crate) struct NgDefaults {
    /// Media security of ng calls.
    pub(crate) media_security: MediaSecurity,
    /// Commencement mode asked for (None = the engine's rule).
    pub(crate) commencement_mode: Option<CommencementMode>,
}

impl Default for NgDefaults {
    fn default() -> Self {
        NgDefaults {
            media_security: MediaSecurity::EndToEnd,
            commencement_mode: None,
        }
    }
}

#[derive(Debug)]
struct NgCall {
    engine_id: String,
    from_tag: Vec<u8>,
    to_tag: Option<Vec<u8>>,
    offer_in: Vec<u8>,
    offer_out: String,
    answer_in: Option<Vec<u8>>,
    answer_out: Option<String>,
    created: u64,
    last_signal: u64,
    /// The media interfaces of the caller's and the callee's legs (indices into the engine's).
    interfaces: [usize; 2],
    /// Set up by another relay and adopted here (high availability): its offer, its tags and
    /// its legs' interfaces are what the later requests say (the image holds no ng state).
    adopted: bool,
}

/// The command handler: the engine and the ng call map.
pub(crate) struct Commands {
    engine: Arc<Engine>,
    defaults: NgDefaults,
    calls: HashMap<Vec<u8>, NgCall>,
    ended: VecDeque<Vec<u8>>,
    logged_unknown: HashSet<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The engine call ID of an ng `call-id`.
pub(crate) fn engine_call_id(call_id: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, call_id);
    format!("ng-{}", hex(d.as_ref().get(..12).unwrap_or_default()))
}

/// The reply a command made, whether it succeeded (`Ok`) or not (`Err`, an error reply).
fn either(reply: Result<Value, Value>) -> Value {
    match reply {
        Ok(v) | Err(v) => v,
    }
}

fn error(reason: impl Into<String>) -> Value {
    dict([
        ("result", Value::str("error")),
        ("error-reason", Value::str(reason.into())),
    ])
}

fn ok_with(pairs: Vec<(&str, Value)>) -> Value {
    let mut d: BTreeMap<Vec<u8>, Value> = pairs
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v))
        .collect();
    d.insert(b"result".to_vec(), Value::str("ok"));
    Value::Dict(d)
}

fn setup_error(e: &SetupError) -> Value {
    let mut v = error(e.to_string());
    if let Value::Dict(d) = &mut v {
        d.insert(b"mcvideo-error".to_vec(), Value::str(e.code()));
    }
    v
}

/// Flags (in the `flags` list) asking for what this relay does not do.
fn refused_flag(flag: &str) -> Option<&'static str> {
    let f = flag.to_ascii_lowercase();
    let f = f.as_str();
    if f.starts_with("transcode") || f.starts_with("codec-") || f == "always-transcode" {
        Some("transcoding and codec changes")
    } else if f.starts_with("record") && f != "record-call" {
        Some("call recording other than record-call")
    } else if f.starts_with("ice=force") || f == "ice-lite" || f.starts_with("ice-lite=") {
        Some("ICE termination")
    } else if f.starts_with("dtls=") && !matches!(f, "dtls=off" | "dtls=no") {
        Some("DTLS-SRTP termination")
    } else if f.starts_with("osrtp-offer") || f.starts_with("sdes-only") {
        Some("SRTP negotiation")
    } else if f.starts_with("t.38") || f.starts_with("t38") {
        Some("T.38 gateway")
    } else if matches!(f, "rtp/avp" | "rtp/savp" | "rtp/avpf" | "rtp/savpf")
        || f.starts_with("transport-protocol=")
    {
        Some("transport protocol translation")
    } else if f.starts_with("address-family=") || f.starts_with("media-address=") {
        Some("changing the media address family or address (several media interfaces)")
    } else if f == "inject-dtmf" || f.starts_with("dtmf") {
        Some("DTMF injection")
    } else {
        None
    }
}

/// Dictionary keys understood or harmless to ignore: never logged.
const KNOWN_KEYS: [&str; 19] = [
    "command",
    "direction",
    "from-interface",
    "to-interface",
    "call-id",
    "from-tag",
    "to-tag",
    "via-branch",
    "sdp",
    "flags",
    "replace",
    "received-from",
    "mcvideo",
    "from-uri",
    "to-uri",
    "supports",
    "label",
    "limit",
    "rtcp-mux",
];

fn bool_word(v: Option<&Value>) -> Option<bool> {
    match v?.as_str()?.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn leg_totals(s: &CallSummary) -> Value {
    let n = |v: u64| Value::Int(i64::try_from(v).unwrap_or(i64::MAX));
    let drops = |l: &crate::relay::LegSnapshot| l.drops.iter().sum::<u64>();
    // rtpengine's shape (`RTP`: packets, bytes, errors received), and the push's two
    // directions as this relay counts them.
    dict([
        (
            "RTP",
            dict([
                ("packets", n(s.caller.packets_in + s.callee.packets_in)),
                ("bytes", n(s.caller.bytes_in + s.callee.bytes_in)),
                ("errors", n(drops(&s.caller) + drops(&s.callee))),
            ]),
        ),
        (
            "push",
            dict([
                ("caller packets in", n(s.caller.packets_in)),
                ("caller bytes in", n(s.caller.bytes_in)),
                ("callee packets out", n(s.callee.packets_out)),
                ("callee bytes out", n(s.callee.bytes_out)),
            ]),
        ),
    ])
}

fn mcvideo_info(s: &CallSummary) -> Value {
    dict([
        ("call-id", Value::str(s.call_id.as_str())),
        ("state", Value::str(s.state.as_str())),
        ("transmission", Value::str(s.transmission.as_str())),
        ("caller", Value::str(&s.caller_id)),
        ("callee", Value::str(&s.callee_id)),
        (
            "commencement-mode",
            Value::str(s.commencement_mode.as_str()),
        ),
        ("media-security", Value::str(s.media_security.as_str())),
    ])
}

impl Commands {
    pub(crate) fn new(engine: Arc<Engine>, defaults: NgDefaults) -> Commands {
        Commands {
            engine,
            defaults,
            calls: HashMap::new(),
            ended: VecDeque::new(),
            logged_unknown: HashSet::new(),
        }
    }

    /// Engine call IDs of the ng calls held (tests, fuzzing).
    #[cfg_attr(not(fuzzing), allow(dead_code))]
    pub(crate) fn engine_ids(&self) -> Vec<String> {
        self.calls.values().map(|c| c.engine_id.clone()).collect()
    }

    /// The ng `call-id`s held (fuzzing).
    #[cfg_attr(not(fuzzing), allow(dead_code))]
    pub(crate) fn ng_call_ids(&self) -> Vec<Vec<u8>> {
        self.calls.keys().cloned().collect()
    }

    fn log_unknown(&mut self, what: &str, name: &str) {
        self.log_once(what, name, &format!("ignoring unknown {what}"));
    }

    /// Logs `message` about `name` (a flag or key of kind `what`) the first time only.
    fn log_once(&mut self, what: &str, name: &str, message: &str) {
        if self.logged_unknown.len() < MAX_LOGGED_UNKNOWN
            && self.logged_unknown.insert(format!("{what}:{name}"))
        {
            let name: String = name.chars().take(64).collect();
            info!(%name, "ng: {message} (logged once)");
        }
    }

    /// Forgets ng calls the engine has released on its own (end of transmission, timeouts).
    pub(crate) fn prune(&mut self) {
        if self.calls.is_empty() {
            return;
        }
        let live: HashSet<String> = self
            .engine
            .calls()
            .into_iter()
            .filter(|c| c.state != CallState::Released)
            .map(|c| String::from(c.call_id))
            .collect();
        let ended = &mut self.ended;
        self.calls.retain(|k, c| {
            let keep = live.contains(&c.engine_id);
            if !keep {
                if ended.len() >= MAX_ENDED {
                    ended.pop_front();
                }
                ended.push_back(k.clone());
            }
            keep
        });
    }

    /// The command's name (lower case) for metrics, if the request has one.
    pub(crate) fn command_name(req: &Value) -> Option<String> {
        req.get("command")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    }

    /// Handles one decoded request dictionary; the reply dictionary.
    pub(crate) fn handle(&mut self, req: &Value) -> Value {
        let Some(cmd) = Self::command_name(req) else {
            return error("no command");
        };
        match cmd.as_str() {
            "ping" => dict([("result", Value::str("pong"))]),
            "offer" => either(self.try_offer(req)),
            "answer" => either(self.try_answer(req)),
            "delete" => either(self.try_delete(req)),
            "query" => either(self.try_query(req)),
            "list" => self.list(req),
            "statistics" => self.statistics(),
            _ => error("Unrecognized command"),
        }
    }

    /// Checks the flags and option keys of an offer or answer: the first refused one is an
    /// error; unknown ones are logged once and ignored.
    fn check_options(&mut self, req: &Value, sdp: &str) -> Result<(), Value> {
        let Value::Dict(d) = req else {
            return Err(error("not a dictionary"));
        };
        let mut unknown = Vec::new();
        for (k, v) in d {
            let key = String::from_utf8_lossy(k).to_ascii_lowercase();
            let word = v.as_str().map(str::to_ascii_lowercase);
            let refused = match key.as_str() {
                "codec" => match v {
                    Value::Dict(c) if !c.is_empty() => Some("transcoding and codec changes"),
                    _ => None,
                },
                // Read by `wants_record`.
                "record call" | "record-call" | "recording" => None,
                "ice" => match word.as_deref() {
                    Some("remove") if sdp.contains("a=candidate") => {
                        Some("removing ICE candidates")
                    }
                    Some("remove" | "default" | "optional") => None,
                    _ => Some("ICE termination"),
                },
                "dtls" => match word.as_deref() {
                    Some("off" | "no" | "disable") => None,
                    _ => Some("DTLS-SRTP termination"),
                },
                "transport protocol" | "transport-protocol" => {
                    Some("transport protocol translation")
                }
                "address family" | "address-family" | "media address" | "media-address"
                | "interface" | "inbound-peer" | "outbound-peer" => Some(
                    "changing the media address family or interface (several media interfaces)",
                ),
                "t.38" | "t38" => Some("T.38 gateway"),
                "osrtp" => Some("SRTP negotiation"),
                _ => {
                    if !KNOWN_KEYS.contains(&key.as_str()) {
                        unknown.push(key.clone());
                    }
                    None
                }
            };
            if let Some(what) = refused {
                return Err(error(format!(
                    "not supported by this relay: {what} (key `{key}`)"
                )));
            }
        }
        for k in unknown {
            self.log_unknown("key", &k);
        }
        if let Some(Value::List(flags)) = req.get("flags") {
            for f in flags {
                let Some(f) = f.as_str() else { continue };
                if let Some(what) = refused_flag(f) {
                    return Err(error(format!(
                        "not supported by this relay: {what} (flag `{f}`)"
                    )));
                }
                let name = f.split('=').next().unwrap_or(f).to_ascii_lowercase();
                // `replace-*` flags are read with the `replace` list.
                if !name.starts_with("replace-")
                    && !matches!(
                        name.as_str(),
                        "trust-address"
                            | "symmetric"
                            | "asymmetric"
                            | "port-latching"
                            | "loop-protect"
                            | "from-uri"
                            | "to-uri"
                            | "record-call"
                    )
                {
                    self.log_unknown("flag", &name);
                }
            }
        }
        Ok(())
    }

    /// rtpengine's `direction` (or `from-interface` / `to-interface`): the interface names of
    /// the message's sender's side and of the other side, each with how the request named it.
    fn direction(req: &Value) -> Result<[Option<(&'static str, String)>; 2], Value> {
        let mut out: [Option<(&'static str, String)>; 2] = [None, None];
        match req.get("direction") {
            None => {}
            Some(Value::List(l)) => {
                let names: Vec<&str> = l.iter().filter_map(Value::as_str).collect();
                let [first, second] = names.as_slice() else {
                    return Err(error(
                        "direction must list two interface names (the sender's side, then the \
                         other side)",
                    ));
                };
                if names.len() != l.len() {
                    return Err(error("direction must list two interface names"));
                }
                out = [
                    Some(("direction[0]", (*first).to_owned())),
                    Some(("direction[1]", (*second).to_owned())),
                ];
            }
            Some(_) => return Err(error("direction must be a list of two interface names")),
        }
        for (slot, key) in out.iter_mut().zip(["from-interface", "to-interface"]) {
            let Some(v) = req.get(key) else { continue };
            let Some(name) = v.as_str() else {
                return Err(error(format!("{key} must be an interface name")));
            };
            match slot {
                Some((label, n)) if n != name => {
                    return Err(error(format!(
                        "{key} {name:?} and {label} {n:?} name different interfaces"
                    )));
                }
                Some(_) => {}
                None => *slot = Some((key, name.to_owned())),
            }
        }
        Ok(out)
    }

    /// The interface `name` (as the request's `label` named it), if it exists and fits the
    /// address family `v4` of the SDP: its index; else an ng error naming it and why.
    fn check_interface(&self, label: &str, name: &str, v4: Option<bool>) -> Result<usize, Value> {
        self.engine
            .named_interface(name, v4)
            .map_err(|p: InterfaceProblem| error(format!("{label} {name:?}: {p}")))
    }

    /// The `replace` list and `replace-*` flags: whether the `o=` address is to be the relay's
    /// (`origin`, `origin-full`). The others are in effect anyway (`session-connection`,
    /// `sdp-version`, `zero-address`, `username`, `session-name`: the relay rewrites every `c=`
    /// line and hands each side one SDP that never changes) or ignored and logged once.
    fn replace_options(&mut self, req: &Value) -> Result<bool, Value> {
        let mut names: Vec<String> = Vec::new();
        match req.get("replace") {
            None => {}
            Some(Value::List(l)) => {
                names.extend(l.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            Some(v) => match v.as_str() {
                Some(one) => names.push(one.to_owned()),
                None => return Err(error("replace must be a list of names")),
            },
        }
        if let Some(Value::List(flags)) = req.get("flags") {
            names.extend(flags.iter().filter_map(|f| {
                let f = f.as_str()?;
                let (head, rest) = f.split_at_checked("replace-".len())?;
                head.eq_ignore_ascii_case("replace-")
                    .then(|| rest.to_owned())
            }));
        }
        let mut origin = false;
        for n in names {
            let n: String = n
                .chars()
                .map(|c| match c {
                    ' ' | '_' => '-',
                    c => c.to_ascii_lowercase(),
                })
                .collect();
            match n.as_str() {
                "origin" | "origin-full" => origin = true,
                "session-connection" | "sdp-version" | "zero-address" | "username"
                | "session-name" => {}
                "force-increment-sdp-ver" => self.log_once(
                    "replace",
                    &n,
                    "ignoring replace flag (a repeated offer or answer gets the same SDP)",
                ),
                _ => self.log_unknown("replace flag", &n),
            }
        }
        Ok(origin)
    }

    /// Whether `replace origin` can rewrite `sdp`'s `o=` line (an SDP that does not parse is
    /// left to the engine, which names the line).
    fn origin_rewritable(sdp: &str) -> Result<(), Value> {
        match SessionDescription::parse(sdp) {
            Ok(d) => d
                .with_origin(std::net::Ipv4Addr::LOCALHOST.into())
                .map(|_| ())
                .map_err(|e| error(format!("replace origin: {e}"))),
            Err(_) => Ok(()),
        }
    }

    /// `sdp` with its `o=` line naming the address of interface `iface` (rtpengine's
    /// `replace origin`).
    fn origin(&self, sdp: &str, iface: usize) -> Result<String, Value> {
        let ip = self
            .engine
            .interfaces()
            .get(iface)
            .map(|i| i.advertised.unwrap_or(i.ip))
            .ok_or_else(|| error("replace origin: the leg's media interface is gone"))?;
        SessionDescription::parse(sdp)
            .and_then(|d| d.with_origin(ip))
            .map_err(|e| error(format!("replace origin: {e}")))
    }

    fn required<'a>(req: &'a Value, key: &str) -> Result<&'a [u8], Value> {
        match req.get(key).and_then(Value::as_bytes) {
            Some(b) if !b.is_empty() => Ok(b),
            _ => Err(error(format!("No {key} in message"))),
        }
    }

    fn sdp(req: &Value) -> Result<(&[u8], &str), Value> {
        let raw = Self::required(req, "sdp")?;
        let text = std::str::from_utf8(raw).map_err(|_| error("the SDP is not UTF-8"))?;
        Ok((raw, text))
    }

    /// A string from the request's dictionary key or a `key=value` flag.
    fn option<'a>(req: &'a Value, key: &str) -> Option<&'a str> {
        if let Some(s) = req.get(key).and_then(Value::as_str) {
            return Some(s);
        }
        let Some(Value::List(flags)) = req.get("flags") else {
            return None;
        };
        flags.iter().find_map(|f| {
            let (k, v) = f.as_str()?.split_once('=')?;
            k.eq_ignore_ascii_case(key).then_some(v)
        })
    }

    /// rtpengine's `record-call` flag, or its `record call` key (`yes`, `on`...), on an offer
    /// or an answer: the call's media is recorded (docs/recording.md).
    fn wants_record(req: &Value) -> bool {
        let Value::Dict(d) = req else {
            return false;
        };
        let key = d.iter().any(|(k, v)| {
            let k = String::from_utf8_lossy(k).to_ascii_lowercase();
            matches!(k.as_str(), "record call" | "record-call" | "recording")
                && bool_word(Some(v)) != Some(false)
        });
        let flag = || match req.get("flags") {
            Some(Value::List(flags)) => flags.iter().any(|f| {
                f.as_str()
                    .is_some_and(|f| f.eq_ignore_ascii_case("record-call"))
            }),
            _ => false,
        };
        key || flag()
    }

    fn try_offer(&mut self, req: &Value) -> Result<Value, Value> {
        let call_id = Self::required(req, "call-id")?;
        let from_tag = Self::required(req, "from-tag")?;
        let (sdp_raw, sdp) = Self::sdp(req)?;
        if let Some(c) = self.calls.get_mut(call_id) {
            // The same offer again (a retransmitted INVITE that reached the script).
            if c.from_tag == from_tag && c.offer_in == sdp_raw {
                c.last_signal = unix_now();
                return Ok(ok_with(vec![("sdp", Value::str(&c.offer_out))]));
            }
            return Err(error(
                "a re-offer with other media or tags is not supported: the relay holds one \
                 video push per call-id",
            ));
        }
        self.check_options(req, sdp)?;
        let mc = req.get("mcvideo");
        let (video_push, video_pull) = Self::offer_kinds(mc)?;
        let (caller_interface, callee_interface) = self.offer_interfaces(req, sdp)?;
        let replace_origin = self.replace_options(req)?;
        if replace_origin {
            // The caller's o= line must be one the relay can rewrite (before any call exists).
            Self::origin_rewritable(sdp)?;
        }
        let (commencement_mode, media_security) = self.offer_modes(mc)?;
        let (caller_id, callee_id) = Self::offer_parties(req, mc, from_tag);
        let engine_id = engine_call_id(call_id);
        let ifaces_asked = (caller_interface.clone(), callee_interface.clone());
        let offer = self
            .engine
            .create_call(CreateCall {
                call_id: Some(engine_id.clone().into()),
                caller_id,
                caller_sdp: sdp.to_owned(),
                callee_id,
                video_push,
                video_pull,
                commencement_mode,
                media_security,
                caller_tc_key: None,
                callee_interface,
                caller_interface,
            })
            .map_err(|e| {
                warn!(call = %engine_id, code = e.code(), "ng offer refused");
                setup_error(&e)
            })?;
        if Self::wants_record(req) {
            // Refused (disk space): counted and logged by the recorder; the call goes on.
            let _ = self.engine.record_call(&engine_id);
        }
        // The engine placed the legs as this says (it just did, with the same input).
        let interfaces = self
            .engine
            .interfaces_for(sdp, ifaces_asked.0.as_deref(), ifaces_asked.1.as_deref())
            .unwrap_or_default();
        let mut sdp_offer = offer.sdp_offer;
        if replace_origin {
            sdp_offer = match self.origin(&sdp_offer, interfaces[1]) {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.engine.reject_call(&engine_id);
                    return Err(e);
                }
            };
        }
        let now = unix_now();
        self.calls.insert(
            call_id.to_vec(),
            NgCall {
                engine_id,
                from_tag: from_tag.to_vec(),
                to_tag: None,
                offer_in: sdp_raw.to_vec(),
                offer_out: sdp_offer.clone(),
                answer_in: None,
                answer_out: None,
                created: now,
                last_signal: now,
                interfaces,
                adopted: false,
            },
        );
        Ok(ok_with(vec![("sdp", Value::str(sdp_offer))]))
    }

    /// The `mcvideo` dictionary's call kind: (video push, video pull); a push unless it asks
    /// for a pull.
    fn offer_kinds(mc: Option<&Value>) -> Result<(bool, bool), Value> {
        if let Some(m) = mc {
            if !matches!(m, Value::Dict(_)) {
                return Err(error("mcvideo must be a dictionary"));
            }
        }
        let video_pull = match mc.and_then(|m| m.get("video-pull")) {
            None => false,
            Some(v) => bool_word(Some(v))
                .ok_or_else(|| error("mcvideo.video-pull must be \"yes\" or \"no\""))?,
        };
        let video_push = match mc.and_then(|m| m.get("video-push")) {
            None => !video_pull,
            Some(v) => bool_word(Some(v))
                .ok_or_else(|| error("mcvideo.video-push must be \"yes\" or \"no\""))?,
        };
        Ok((video_push, video_pull))
    }

    /// The media interfaces asked for the caller's and the callee's legs.
    fn offer_interfaces(
        &self,
        req: &Value,
        sdp: &str,
    ) -> Result<(Option<String>, Option<String>), Value> {
        // rtpengine's `direction`: [the sender's side, the other side] by interface name; the
        // sender of an offer is the caller. Each name must exist, the caller's must be of its
        // SDP's address family.
        let [sender, other] = Self::direction(req)?;
        let family = sdp_family(sdp);
        if let Some((label, name)) = &sender {
            self.check_interface(label, name, family)?;
        }
        if let Some((label, name)) = &other {
            self.check_interface(label, name, None)?;
        }
        Ok((sender.map(|(_, n)| n), other.map(|(_, n)| n)))
    }

    /// The `mcvideo` dictionary's commencement mode and media security, else the defaults.
    fn offer_modes(
        &self,
        mc: Option<&Value>,
    ) -> Result<(Option<CommencementMode>, MediaSecurity), Value> {
        let mc_str = |k: &str| mc.and_then(|m| m.get(k)).and_then(Value::as_str);
        let commencement_mode = match mc_str("commencement-mode") {
            None => self.defaults.commencement_mode,
            Some(s) => Some(CommencementMode::parse(s).ok_or_else(|| {
                error("mcvideo.commencement-mode must be \"automatic\" or \"manual\"")
            })?),
        };
        let media_security = match mc_str("media-security") {
            None => self.defaults.media_security,
            Some(s) => MediaSecurity::parse(s).ok_or_else(|| {
                error("mcvideo.media-security must be \"end_to_end\" or \"per_leg\"")
            })?,
        };
        Ok((commencement_mode, media_security))
    }

    /// The caller's and the callee's MCVideo IDs: the `mcvideo` dictionary's, else the SIP
    /// URIs, else the tags (`tag:<tag>`).
    fn offer_parties(req: &Value, mc: Option<&Value>, from_tag: &[u8]) -> (String, String) {
        let mc_str = |k: &str| mc.and_then(|m| m.get(k)).and_then(Value::as_str);
        let tag_id = |t: &[u8]| format!("tag:{}", String::from_utf8_lossy(t));
        let caller_id = mc_str("caller")
            .or_else(|| Self::option(req, "from-uri"))
            .map_or_else(|| tag_id(from_tag), str::to_owned);
        let callee_id = mc_str("callee")
            .or_else(|| Self::option(req, "to-uri"))
            .map(str::to_owned)
            .or_else(|| {
                req.get("to-tag")
                    .and_then(Value::as_bytes)
                    .filter(|t| !t.is_empty())
                    .map(tag_id)
            })
            .unwrap_or_else(|| "tag:unknown".to_owned());
        (caller_id, callee_id)
    }

    fn try_answer(&mut self, req: &Value) -> Result<Value, Value> {
        let call_id = Self::required(req, "call-id")?;
        let from_tag = Self::required(req, "from-tag")?;
        let (sdp_raw, sdp) = Self::sdp(req)?;
        let to_tag = req
            .get("to-tag")
            .and_then(Value::as_bytes)
            .filter(|t| !t.is_empty());
        self.adopt_unknown(call_id, req);
        let Some(c) = self.calls.get(call_id) else {
            return Err(error("Unknown call-id"));
        };
        if c.from_tag != from_tag {
            return Err(error("Unknown call-id or from-tag: tags do not match"));
        }
        if let (Some(a_in), Some(a_out)) = (&c.answer_in, &c.answer_out) {
            if a_in == sdp_raw && (to_tag.is_none() || c.to_tag.as_deref() == to_tag) {
                let reply = ok_with(vec![("sdp", Value::str(a_out))]);
                if let Some(c) = self.calls.get_mut(call_id) {
                    c.last_signal = unix_now();
                }
                return Ok(reply);
            }
            return Err(error(
                "the call is answered already: a second answer (forked or re-INVITE) is not \
                 supported",
            ));
        }
        let engine_id = c.engine_id.clone();
        let [caller_iface, callee_iface] = c.interfaces;
        let adopted = c.adopted;
        self.check_options(req, sdp)?;
        // The sender of an answer is the callee: `direction` names its side first. The legs
        // stay where the offer put them; the names must say so.
        let [sender, other] = Self::direction(req)?;
        let family = sdp_family(sdp);
        for (named, party, at, v4) in [
            (sender, "callee", callee_iface, family),
            (other, "caller", caller_iface, None),
        ] {
            let Some((label, name)) = named else { continue };
            // An adopted call's legs are where the dead relay put them: names are checked,
            // not compared with an offer this relay never saw.
            if self.check_interface(label, &name, v4)? != at && !adopted {
                let on = self
                    .engine
                    .interfaces()
                    .get(at)
                    .map_or("", |i| i.name.as_str());
                return Err(error(format!(
                    "{label} {name:?}: the {party}'s leg is on interface {on:?} since the offer \
                     (an answer's direction names the callee's side, its sender, first)"
                )));
            }
        }
        let replace_origin = self.replace_options(req)?;
        if replace_origin {
            Self::origin_rewritable(sdp)?;
        }
        if Self::wants_record(req) {
            // Before the caller learns the relay's answer: no packet of the push comes first.
            let _ = self.engine.record_call(&engine_id);
        }
        let a = self
            .engine
            .accept_call(
                &engine_id,
                AnswerCall {
                    callee_sdp: sdp.to_owned(),
                    callee_tc_key: None,
                },
            )
            .map_err(|e| {
                warn!(call = %engine_id, code = e.code(), "ng answer refused");
                if matches!(e, SetupError::UnknownCall(_)) {
                    self.calls.remove(call_id);
                }
                setup_error(&e)
            })?;
        let mut sdp_answer = a.sdp_answer;
        if replace_origin {
            // Checked before the engine took the answer, so this does not fail; if it did, the
            // call is released (the callee's media runs already) and the answer refused.
            sdp_answer = match self.origin(&sdp_answer, caller_iface) {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.engine.release_call(&engine_id);
                    self.calls.remove(call_id);
                    return Err(e);
                }
            };
        }
        if let Some(c) = self.calls.get_mut(call_id) {
            c.to_tag = to_tag.map(<[u8]>::to_vec);
            c.answer_in = Some(sdp_raw.to_vec());
            c.answer_out = Some(sdp_answer.clone());
            c.last_signal = unix_now();
        }
        Ok(ok_with(vec![("sdp", Value::str(sdp_answer))]))
    }

    /// A call another relay set up over ng and this one adopted (high availability) lives in
    /// the engine under its `call-id`'s engine ID, not in this map: it joins the map with the
    /// tags the request names, so the answer, query and delete that Kamailio sends after the
    /// takeover find it. Nothing happens for a call-id the engine does not hold either.
    fn adopt_unknown(&mut self, call_id: &[u8], req: &Value) {
        if self.calls.contains_key(call_id) {
            return;
        }
        let engine_id = engine_call_id(call_id);
        if !self
            .engine
            .call(&engine_id)
            .is_some_and(|s| s.state != CallState::Released)
        {
            return;
        }
        let tag = |key| {
            req.get(key)
                .and_then(Value::as_bytes)
                .filter(|t| !t.is_empty())
                .map(<[u8]>::to_vec)
        };
        info!(call = %engine_id, "ng: a call adopted from another relay joins the ng calls");
        let now = unix_now();
        self.calls.insert(
            call_id.to_vec(),
            NgCall {
                engine_id,
                from_tag: tag("from-tag").unwrap_or_default(),
                to_tag: tag("to-tag"),
                offer_in: Vec::new(),
                offer_out: String::new(),
                answer_in: None,
                answer_out: None,
                created: now,
                last_signal: now,
                interfaces: [0, 0],
                adopted: true,
            },
        );
    }

    /// The request's call-id; a call the relay adopted (HA) and ng does not know yet is taken
    /// in under it.
    fn named_call<'r>(&mut self, req: &'r Value) -> Result<&'r [u8], Value> {
        let call_id = Self::required(req, "call-id")?;
        self.adopt_unknown(call_id, req);
        Ok(call_id)
    }

    fn try_delete(&mut self, req: &Value) -> Result<Value, Value> {
        let call_id = self.named_call(req)?;
        let Some(c) = self.calls.get(call_id) else {
            if let Some(i) = self.ended.iter().position(|k| k == call_id) {
                self.ended.remove(i);
                return Ok(ok_with(vec![(
                    "warning",
                    Value::str("the relay had released the call already"),
                )]));
            }
            return Err(error("Unknown call-id"));
        };
        // A from-tag or to-tag, when given, must be one of the call's.
        for key in ["from-tag", "to-tag"] {
            if let Some(t) = req
                .get(key)
                .and_then(Value::as_bytes)
                .filter(|t| !t.is_empty())
            {
                if t != c.from_tag.as_slice() && c.to_tag.as_deref() != Some(t) {
                    return Err(error(format!(
                        "Unknown call-id or {key}: tags do not match"
                    )));
                }
            }
        }
        let Some(c) = self.calls.remove(call_id) else {
            return Err(error("Unknown call-id"));
        };
        let offered = self
            .engine
            .call(&c.engine_id)
            .is_some_and(|s| s.state == CallState::Offered);
        let r = if offered {
            self.engine.reject_call(&c.engine_id)
        } else {
            self.engine.release_call(&c.engine_id)
        };
        let mut pairs = vec![
            ("created", Value::Int(c.created as i64)),
            ("last signal", Value::Int(c.last_signal as i64)),
        ];
        match r {
            Ok(s) => {
                pairs.push(("totals", leg_totals(&s)));
                pairs.push(("mcvideo", mcvideo_info(&s)));
            }
            Err(_) => pairs.push((
                "warning",
                Value::str("the relay had released the call already"),
            )),
        }
        Ok(ok_with(pairs))
    }

    fn try_query(&mut self, req: &Value) -> Result<Value, Value> {
        let call_id = self.named_call(req)?;
        let Some(c) = self.calls.get(call_id) else {
            return Err(error("Unknown call-id"));
        };
        let Some(s) = self.engine.call(&c.engine_id) else {
            self.calls.remove(call_id);
            return Err(error("Unknown call-id"));
        };
        let mut tags = BTreeMap::new();
        tags.insert(
            c.from_tag.clone(),
            dict([
                ("tag", Value::Bytes(c.from_tag.clone())),
                ("label", Value::str("caller")),
                ("created", Value::Int(c.created as i64)),
            ]),
        );
        if let Some(t) = &c.to_tag {
            tags.insert(
                t.clone(),
                dict([
                    ("tag", Value::Bytes(t.clone())),
                    ("label", Value::str("callee")),
                    ("created", Value::Int(c.last_signal as i64)),
                ]),
            );
        }
        Ok(ok_with(vec![
            ("created", Value::Int(c.created as i64)),
            ("last signal", Value::Int(c.last_signal as i64)),
            ("tags", Value::Dict(tags)),
            ("totals", leg_totals(&s)),
            ("mcvideo", mcvideo_info(&s)),
        ]))
    }

    fn list(&mut self, req: &Value) -> Value {
        let limit = match req.get("limit") {
            Some(Value::Int(n)) if *n >= 0 => *n as usize,
            Some(v) => match v.as_str().and_then(|s| s.parse::<usize>().ok()) {
                Some(n) => n,
                None => return error("limit must be a non-negative number"),
            },
            None => 32,
        };
        let mut ids: Vec<&Vec<u8>> = self.calls.keys().collect();
        ids.sort();
        // The reply must fit one datagram: stop well before 64 KiB.
        let mut bytes = 0usize;
        let calls = ids
            .into_iter()
            .take(limit)
            .take_while(|k| {
                bytes += k.len() + 8;
                bytes <= MAX_LIST_BYTES
            })
            .map(|k| Value::Bytes(k.clone()))
            .collect();
        ok_with(vec![("calls", Value::List(calls))])
    }

    fn statistics(&mut self) -> Value {
        let s = self.engine.stats();
        let own = self.calls.len() as i64;
        ok_with(vec![(
            "statistics",
            dict([
                (
                    "currentstatistics",
                    dict([
                        ("sessionsown", Value::Int(own)),
                        ("sessionsforeign", Value::Int(0)),
                        ("sessionstotal", Value::Int(s.active_calls as i64)),
                    ]),
                ),
                (
                    "totalstatistics",
                    dict([
                        ("totalsessions", Value::Int(s.calls_created as i64)),
                        (
                            "totalrefused",
                            Value::Int(s.calls_refused.values().sum::<u64>() as i64),
                        ),
                    ]),
                ),
            ]),
        )])
    }
}
