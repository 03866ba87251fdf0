//! The calls of one engine: creation (authorization, the designated UE, the offer to the
//! callee), acceptance, rejection and release, with the SSRCs in use.

use super::*;

/// The calls of one engine, with the registry, the policy and the SSRCs in use.
#[derive(Debug)]
pub struct CallTable {
    config: CallConfig,
    policy: Arc<dyn AuthorizationPolicy>,
    registry: UeRegistry,
    entropy: EntropyBox,
    calls: HashMap<CallId, Call>,
    /// IDs of calls created here but run elsewhere ([`CallTable::create_detached`]).
    detached: std::collections::HashSet<CallId>,
    ssrcs: HashMap<u32, u32>,
}

struct EntropyBox(Box<dyn Entropy>);

impl core::fmt::Debug for EntropyBox {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Entropy")
    }
}

/// Longest call ID accepted.
pub const MAX_CALL_ID_LEN: usize = CallId::MAX_LEN;

pub(super) fn valid_call_id(id: &str) -> bool {
    CallId::is_valid(id)
}

pub(super) fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// The supported `a=crypto` line of a stream, if any: (tag, suite).
pub(super) fn pick_crypto(m: &crate::sdp::Media) -> Option<(u32, SrtpSuite, &str)> {
    m.crypto
        .iter()
        .find_map(|c| SrtpSuite::from_name(&c.suite).map(|s| (c.tag, s, c.key_b64.as_str())))
}

/// A fresh SRTP master key (and salt) for `suite`.
pub(super) fn fresh_key(entropy: &mut dyn Entropy, suite: SrtpSuite) -> MasterKey {
    let mut material = vec![0u8; suite.key_len() + suite.salt_len()];
    entropy.fill(&mut material);
    MasterKey { suite, material }
}

pub(super) fn is_rtp_media(kind: &MediaKind) -> bool {
    matches!(kind, MediaKind::Audio | MediaKind::Video)
}

/// The transmission control server of a one-to-one call: the private procedure, the caller in
/// slot 0 and the callee in slot 1, the kind's transmitter granted at acceptance with `ids`'
/// SSRCs. The callee's control channel is known at the answer ([`TransmissionControlServer::set_control`]).
pub(super) fn private_server(
    cfg: &TcConfig,
    kind: CallKind,
    call_id: &str,
    ids: &Identities,
    caller_control: bool,
) -> TransmissionControlServer {
    let transmitter = kind.transmitter();
    let member = |party: Party, user_id: &str, control: bool| MemberSetup {
        user_id: user_id.to_owned(),
        receive_only: party != transmitter,
        control,
        ..MemberSetup::default()
    };
    TransmissionControlServer::private(
        cfg.clone(),
        Procedure::Private {
            transmitter: transmitter.slot(),
            audio_ssrc: ids.audio_ssrc,
            video_ssrc: ids.video_ssrc,
        },
        ServerIdentity {
            call_id: call_id.to_owned(),
            server_ssrc: ids.server_ssrc,
        },
        Arc::new(Arbiter::with_members(2)),
        [
            member(Party::Caller, &ids.caller_id, caller_control),
            member(Party::Callee, &ids.callee_id, false),
        ],
    )
}

impl CallTable {
    /// An empty table.
    pub fn new(
        config: CallConfig,
        policy: Arc<dyn AuthorizationPolicy>,
        entropy: Box<dyn Entropy>,
    ) -> Self {
        CallTable {
            config,
            policy,
            registry: UeRegistry::default(),
            entropy: EntropyBox(entropy),
            calls: HashMap::new(),
            detached: Default::default(),
            ssrcs: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CallConfig {
        &self.config
    }

    /// The UE registry.
    pub fn registry(&self) -> &UeRegistry {
        &self.registry
    }

    /// The UE registry, to register and unregister UEs.
    pub fn registry_mut(&mut self) -> &mut UeRegistry {
        &mut self.registry
    }

    /// Replaces the authorization policy (for calls created from now on).
    pub fn set_policy(&mut self, policy: Arc<dyn AuthorizationPolicy>) {
        self.policy = policy;
    }

    /// Number of calls held (any state).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is held.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// A call by ID.
    pub fn get(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    /// A call by ID, to drive it.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Call> {
        self.calls.get_mut(id)
    }

    /// Every call.
    pub fn iter(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// Every call, to drive them.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Call> {
        self.calls.values_mut()
    }

    /// Removes a call (normally one that is released) and forgets its SSRCs. The caller gives
    /// its [`Call::relay_ports`] back to the pool and drains its remaining events.
    pub fn remove(&mut self, id: &str) -> Option<Call> {
        let call = self.calls.remove(id)?;
        self.release_ssrcs(&call);
        Some(call)
    }

    /// Calls created with [`Self::create_detached`] and not yet forgotten.
    pub fn detached_len(&self) -> usize {
        self.detached.len()
    }

    /// Forgets a call made with [`Self::create_detached`] once it is released: its ID and SSRCs
    /// are free again. The caller gives its [`Call::relay_ports`] back to the pool.
    pub fn forget(&mut self, call: &Call) {
        if self.detached.remove(call.id()) {
            self.release_ssrcs(call);
        }
    }

    fn release_ssrcs(&mut self, call: &Call) {
        let ids = call.identities();
        for ssrc in [ids.audio_ssrc, ids.video_ssrc, ids.server_ssrc] {
            if let Some(n) = self.ssrcs.get_mut(&ssrc.get()) {
                *n -= 1;
                if *n == 0 {
                    self.ssrcs.remove(&ssrc.get());
                }
            }
        }
    }

    fn random_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.entropy.0.fill(&mut b);
        u32::from_be_bytes(b)
    }

    /// A random SSRC not in use in this table (and not 0).
    fn fresh_ssrc(&mut self) -> u32 {
        loop {
            let s = self.random_u32();
            if s != 0 && !self.ssrcs.contains_key(&s) {
                return s;
            }
        }
    }

    fn fresh_key(&mut self, suite: SrtpSuite) -> MasterKey {
        fresh_key(&mut *self.entropy.0, suite)
    }

    fn fresh_call_id(&mut self) -> String {
        loop {
            let mut b = [0u8; 8];
            self.entropy.0.fill(&mut b);
            let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
            if !self.calls.contains_key(id.as_str()) && !self.detached.contains(id.as_str()) {
                return id;
            }
        }
    }

    /// Seed steps 1–4: checks, authorizes, allocates relay ports and builds the callee's offer.
    /// Nothing is kept when it fails.
    pub fn create_call(
        &mut self,
        now: Instant,
        req: CreateCall,
        ports: &mut dyn PortAllocator,
    ) -> Result<CallOffer, SetupError> {
        let (call, offer) = self.create_detached(now, req, ports)?;
        self.detached.remove(call.id());
        self.calls.insert(call.id.clone(), call);
        Ok(offer)
    }

    /// The checks of [`Self::create_call`] that need no SDP work and allocate nothing: request
    /// fields, duplicate ID, call limit, authorization and the callee's registration. An engine
    /// runs them before it binds sockets for the call.
    pub fn precheck(&self, req: &CreateCall) -> Result<(), SetupError> {
        self.admit(req).map(|_| ())
    }

    /// Takes in a call restored from a snapshot ([`Call::restore`]) to run it here, as
    /// [`Self::create_call`] keeps a call it made. Refused when the ID is taken or the table
    /// is full.
    pub fn insert_restored(&mut self, call: Call) -> Result<(), SetupError> {
        self.adopt_detached(&call)?;
        self.detached.remove(call.id());
        self.calls.insert(call.id.clone(), call);
        Ok(())
    }

    /// Takes in a call restored from a snapshot ([`Call::restore`]) that runs elsewhere, as
    /// [`Self::create_detached`] would have: its ID and SSRCs stay reserved until
    /// [`Self::forget`]. Refused when the ID is taken or the table is full.
    pub fn adopt_detached(&mut self, call: &Call) -> Result<(), SetupError> {
        if self.calls.contains_key(call.id()) || self.detached.contains(call.id()) {
            return Err(SetupError::DuplicateCallId(call.id().to_owned()));
        }
        if self.calls.len() + self.detached.len() >= self.config.max_calls {
            return Err(SetupError::TooManyCalls);
        }
        let ids = call.identities();
        for s in [ids.audio_ssrc, ids.video_ssrc, ids.server_ssrc] {
            *self.ssrcs.entry(s.get()).or_insert(0) += 1;
        }
        self.detached.insert(call.call_id().clone());
        Ok(())
    }

    /// [`Self::create_call`] for a call that runs elsewhere (an engine's worker): the call is
    /// returned instead of kept; its ID and SSRCs stay reserved until [`Self::forget`].
    pub fn create_detached(
        &mut self,
        now: Instant,
        req: CreateCall,
        ports: &mut dyn PortAllocator,
    ) -> Result<(Call, CallOffer), SetupError> {
        let delivery = self.admit(&req)?;
        let commencement_mode = req
            .commencement_mode
            .or(delivery.commencement_mode)
            .unwrap_or(self.config.default_commencement_mode);
        self.offer(now, req, ports, delivery.ue_ids, commencement_mode)
    }

    fn admit(&self, req: &CreateCall) -> Result<crate::control::registry::Delivery, SetupError> {
        if req.video_push == req.video_pull {
            return Err(SetupError::NotVideoPush);
        }
        for (what, id) in [
            ("caller mcvideo_id", &req.caller_id),
            ("callee mcvideo_id", &req.callee_id),
        ] {
            if !valid_user_id(id) {
                return Err(SetupError::BadRequest(format!(
                    "{what} must be 1 to {MAX_ID_LEN} octets with no control characters"
                )));
            }
        }
        if let Some(id) = &req.call_id {
            if !valid_call_id(id) {
                return Err(SetupError::BadRequest(format!(
                    "call_id must be 1 to {MAX_CALL_ID_LEN} characters of A-Z a-z 0-9 - _ ."
                )));
            }
            if self.calls.contains_key(id.as_str()) || self.detached.contains(id.as_str()) {
                return Err(SetupError::DuplicateCallId(id.to_string()));
            }
        }
        if self.calls.len() + self.detached.len() >= self.config.max_calls {
            return Err(SetupError::TooManyCalls);
        }
        // Step 2: authorization, nothing allocated yet.
        let (caller, callee) = (&req.caller_id, &req.callee_id);
        authorized(Party::Caller, caller, self.policy.may_push(caller))?;
        authorized(Party::Callee, callee, self.policy.may_receive_push(callee))?;
        // Step 4: where the call goes and how it commences.
        let delivery = self.registry.delivery(&req.callee_id);
        if delivery.ue_ids.is_empty() && self.config.require_registered_callee {
            return Err(SetupError::CalleeNotRegistered(req.callee_id.clone()));
        }
        Ok(delivery)
    }

    fn offer(
        &mut self,
        now: Instant,
        req: CreateCall,
        ports: &mut dyn PortAllocator,
        deliver_to: Vec<String>,
        commencement_mode: CommencementMode,
    ) -> Result<(Call, CallOffer), SetupError> {
        let offer =
            SessionDescription::parse(&req.caller_sdp).map_err(|error| SetupError::BadSdp {
                party: Party::Caller,
                error,
            })?;
        let offered = self.offered(&offer);
        let video = check_caller_media(&offer, &offered, req.media_security)?;
        let (audio_ssrc, video_ssrc) = caller_ssrcs(&offer, video);
        let mut streams = allocate_streams(&offer, &offered, ports)?;
        let sdp_offer = self.callee_offer(&offer, &mut streams, req.media_security, ports)?;

        let kind = if req.video_pull {
            CallKind::VideoPull
        } else {
            CallKind::VideoPush
        };
        let (audio_ssrc, video_ssrc, server_ssrc) =
            self.transmission_ssrcs(kind, audio_ssrc, video_ssrc);
        let caller_control = streams
            .iter()
            .any(|s| s.kind == MediaKind::Control && s.active());
        let call_id: CallId = match req.call_id {
            Some(id) => id,
            None => self.fresh_call_id().into(),
        };
        let ids = Identities {
            caller_id: req.caller_id.clone(),
            callee_id: req.callee_id.clone(),
            audio_ssrc: Ssrc(audio_ssrc),
            video_ssrc: Ssrc(video_ssrc),
            server_ssrc: Ssrc(server_ssrc),
        };
        let server = private_server(&self.config.tc, kind, &call_id, &ids, caller_control);
        let mut timers = TimerTable::default();
        timers.set(Timer::OfferTimeout, now + self.config.offer_timeout);
        let mut call = Call {
            id: call_id.clone(),
            kind,
            caller_id: req.caller_id,
            callee_id: req.callee_id,
            state: CallState::Offered,
            commencement_mode,
            media_security: req.media_security,
            deliver_to: deliver_to.clone(),
            streams,
            tc_keys: [req.caller_tc_key, None],
            ids,
            server,
            timers,
            events: VecDeque::new(),
            tc_tap: None,
            release_reason: None,
            times: CallTimes {
                created: now,
                established: None,
                released: None,
            },
            sdp: [Some(sdp_offer.as_str().into()), None],
        };
        call.push(CallEventKind::Progress);
        self.detached.insert(call_id.clone());
        let offer = CallOffer {
            call_id,
            sdp_offer,
            commencement_mode,
            deliver_to,
        };
        Ok((call, offer))
    }

    /// Which of the offer's `m=` lines the relay offers on (by index): video and transmission
    /// control, audio and other media as configured, never a rejected (port 0) one.
    fn offered(&self, offer: &SessionDescription) -> Vec<bool> {
        offer
            .media()
            .iter()
            .map(|m| {
                m.port != 0
                    && match &m.kind {
                        MediaKind::Video | MediaKind::Control => true,
                        MediaKind::Audio => self.config.offer_audio,
                        MediaKind::Other(_) => self.config.offer_other_media,
                    }
            })
            .collect()
    }

    /// The SDP offer toward the callee: the relay's callee-side ports, and in per_leg mode the
    /// relay's own key toward the callee (drawn now, in stream order; the caller's inbound key
    /// is kept beside it in each stream's pending keys). On error every port is freed.
    fn callee_offer(
        &mut self,
        offer: &SessionDescription,
        streams: &mut [MediaStream],
        media_security: MediaSecurity,
        ports: &mut dyn PortAllocator,
    ) -> Result<String, SetupError> {
        // Per-leg keys: the caller's inbound key is in its offer; the relay makes its own key
        // toward the callee now and the one toward the caller when the answer comes.
        let mut rewrites = Vec::with_capacity(streams.len());
        for (s, m) in streams.iter_mut().zip(offer.media()) {
            let Some(relay) = s.relay[Party::Callee.index()] else {
                rewrites.push(MediaRewrite::Reject);
                continue;
            };
            let mut crypto = None;
            if media_security == MediaSecurity::PerLeg && is_rtp_media(&m.kind) {
                if let Some((tag, suite, b64)) = pick_crypto(m) {
                    if let Ok(caller_inbound) = MasterKey::from_base64(suite, b64) {
                        let callee_outbound = self.fresh_key(suite);
                        crypto = Some(vec![callee_outbound.sdes_attribute(tag)]);
                        s.pending_keys = Some(PendingKeys {
                            tag,
                            caller_inbound,
                            callee_outbound,
                        });
                    }
                }
            }
            rewrites.push(MediaRewrite::Keep {
                port: relay.rtp.port(),
                rtcp_port: (!relay.muxed()).then(|| relay.rtcp.port()),
                crypto,
            });
        }
        let callee_ip = streams
            .iter()
            .find_map(|s| s.relay[Party::Callee.index()])
            .map(|p| p.rtp.ip())
            .ok_or_else(|| caller_no_media("no stream could be offered"))?;
        offer
            .rewrite(&Rewrite {
                connection: callee_ip,
                media: rewrites,
            })
            .map_err(|error| {
                free_streams(streams, ports);
                SetupError::BadSdp {
                    party: Party::Caller,
                    error,
                }
            })
    }

    /// The transmission's audio, video and server SSRCs, each counted in the SSRC registry:
    /// in a push the caller's own when its SDP names them (in a pull the callee transmits, so
    /// the caller's are not the transmission's), otherwise fresh ones.
    fn transmission_ssrcs(
        &mut self,
        kind: CallKind,
        audio_ssrc: Option<u32>,
        video_ssrc: Option<u32>,
    ) -> (u32, u32, u32) {
        // In a pull the callee transmits: the caller's SSRCs are not the transmission's.
        let (audio_ssrc, video_ssrc) = match kind {
            CallKind::VideoPush => (audio_ssrc, video_ssrc),
            CallKind::VideoPull => (None, None),
        };
        let audio_ssrc = audio_ssrc.unwrap_or_else(|| self.fresh_ssrc());
        let video_ssrc = video_ssrc.unwrap_or_else(|| self.fresh_ssrc());
        let server_ssrc = self.fresh_ssrc();
        for s in [audio_ssrc, video_ssrc, server_ssrc] {
            *self.ssrcs.entry(s).or_insert(0) += 1;
        }
        (audio_ssrc, video_ssrc, server_ssrc)
    }

    /// Seed steps 6–10: the callee accepted with `answer`. Builds the caller's answer,
    /// establishes the call and grants the caller. On error the call stays offered.
    pub fn accept_call(
        &mut self,
        now: Instant,
        call_id: &str,
        answer: AnswerCall,
    ) -> Result<CallAnswer, SetupError> {
        call_in(&mut self.calls, call_id)?.accept(now, answer, &mut *self.entropy.0)
    }

    /// The callee declined. The call is released (reason `rejected`) and removed; the caller
    /// gives its ports back and drains its events.
    pub fn reject_call(&mut self, now: Instant, call_id: &str) -> Result<Call, SetupError> {
        call_in(&mut self.calls, call_id)?.reject(now)?;
        self.remove(call_id).ok_or_else(|| unknown(call_id))
    }

    /// Releases a call for `reason` and removes it.
    pub fn release_call(
        &mut self,
        now: Instant,
        call_id: &str,
        reason: ReleaseReason,
    ) -> Result<Call, SetupError> {
        call_in(&mut self.calls, call_id)?.release(now, reason);
        self.remove(call_id).ok_or_else(|| unknown(call_id))
    }
}

/// No call `call_id` in the table.
fn unknown(call_id: &str) -> SetupError {
    SetupError::UnknownCall(call_id.to_owned())
}

/// Call `call_id` of `calls`.
fn call_in<'c>(
    calls: &'c mut HashMap<CallId, Call>,
    call_id: &str,
) -> Result<&'c mut Call, SetupError> {
    calls.get_mut(call_id).ok_or_else(|| unknown(call_id))
}

/// `party` (`user`) may not take part, as the policy's `verdict` says.
fn authorized(party: Party, user: &str, verdict: Result<(), String>) -> Result<(), SetupError> {
    verdict.map_err(|reason| SetupError::NotAuthorized {
        party,
        user: user.to_owned(),
        reason,
    })
}

/// The caller's offer has no media the relay can take, for `reason`.
fn caller_no_media(reason: &str) -> SetupError {
    SetupError::NoAcceptableMedia {
        party: Party::Caller,
        reason: reason.to_owned(),
    }
}

/// Checks the caller's offer before anything is allocated: a video stream, an address to send
/// to on every offered stream, and in per_leg mode a usable `a=crypto` key on every offered
/// audio and video stream. Returns the video stream.
fn check_caller_media<'o>(
    offer: &'o SessionDescription,
    offered: &[bool],
    media_security: MediaSecurity,
) -> Result<&'o crate::sdp::Media, SetupError> {
    let video = offer
        .media()
        .iter()
        .find(|m| m.kind == MediaKind::Video && m.port != 0)
        .ok_or_else(|| {
            caller_no_media("the offer has no video stream (m=video with a non-zero port)")
        })?;
    for (m, &o) in offer.media().iter().zip(offered) {
        if o && m.rtp_addr().is_none() {
            return Err(caller_no_media(&format!(
                "m= line {} has no usable address to send to",
                m.line
            )));
        }
        if o && media_security == MediaSecurity::PerLeg && is_rtp_media(&m.kind) {
            let Some((_, suite, b64)) = pick_crypto(m) else {
                return Err(caller_no_media(&format!(
                    "per_leg mode needs an a=crypto line with AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80 in the section of line {}",
                    m.line
                )));
            };
            MasterKey::from_base64(suite, b64).map_err(|e| SetupError::BadSdp {
                party: Party::Caller,
                error: SdpError {
                    line: m.line,
                    content: format!("a=crypto ({})", suite.name()),
                    reason: if e == crate::keys::KeyError::BadBase64 {
                        "key is not valid base64"
                    } else {
                        "key and salt have the wrong length for the suite"
                    },
                },
            })?;
        }
    }
    Ok(video)
}

/// The caller's audio and video SSRCs when its SDP names them: those of the transmission
/// control `a=fmtp:MCVideo` line, else the first `a=ssrc` of the video (and audio) stream.
fn caller_ssrcs(
    offer: &SessionDescription,
    video: &crate::sdp::Media,
) -> (Option<u32>, Option<u32>) {
    let control_fmtp = offer
        .media()
        .iter()
        .find(|m| m.kind == MediaKind::Control)
        .and_then(|m| m.mcvideo);
    let video_ssrc = control_fmtp
        .and_then(|f| f.mc_video_ssrc)
        .or_else(|| video.ssrcs.first().copied());
    let audio_ssrc = control_fmtp.and_then(|f| f.mc_audio_ssrc).or_else(|| {
        offer
            .media()
            .iter()
            .find(|m| m.kind == MediaKind::Audio)
            .and_then(|m| m.ssrcs.first().copied())
    });
    (audio_ssrc, video_ssrc)
}

/// The call's media streams, with relay ports for both legs of every offered stream. When the
/// ports run out, or a leg's interface is of another address family than the caller's
/// address, every port is freed and the call refused.
fn allocate_streams(
    offer: &SessionDescription,
    offered: &[bool],
    ports: &mut dyn PortAllocator,
) -> Result<Vec<MediaStream>, SetupError> {
    let mut streams = Vec::with_capacity(offer.media().len());
    let mut failed = false;
    for (index, (m, &o)) in offer.media().iter().zip(offered).enumerate() {
        let mut s = MediaStream {
            index,
            kind: m.kind.clone(),
            proto: m.proto.clone(),
            offered: o,
            relay: [None, None],
            remote_rtp: [m.rtp_addr(), None],
            remote_rtcp: [m.rtcp_addr(), None],
            announced_ssrcs: [m.ssrcs.clone(), Vec::new()],
            keys: [None, None],
            clock_rate: m.clock_rate,
            encoding: m.encoding.clone(),
            pending_keys: None,
        };
        if o && !failed {
            for party in [Party::Caller, Party::Callee] {
                match ports.allocate(party, &m.kind, m.rtcp_mux) {
                    Some(p) => s.relay[party.index()] = Some(p),
                    None => failed = true,
                }
            }
        }
        streams.push(s);
    }
    if failed {
        free_streams(&streams, ports);
        return Err(SetupError::NoPortsAvailable);
    }
    // A leg on an interface of the other address family could never reach its party.
    let mismatch = streams.iter().zip(offer.media()).find(|(s, m)| {
        match (s.relay[Party::Caller.index()], m.rtp_addr()) {
            (Some(r), Some(a)) => r.rtp.is_ipv4() != a.is_ipv4(),
            _ => false,
        }
    });
    if let Some((_, m)) = mismatch {
        free_streams(&streams, ports);
        return Err(caller_no_media(&format!(
            "m= line {}: its address family has no media interface on the relay",
            m.line
        )));
    }
    Ok(streams)
}

/// Frees every relay port of `streams`.
fn free_streams(streams: &[MediaStream], ports: &mut dyn PortAllocator) {
    for p in streams
        .iter()
        .flat_map(|s| s.relay.iter().flatten().copied())
    {
        ports.free(p);
    }
}
