//! The media plane of a call on its worker, whatever its kind: its members' sockets (which
//! serves which stream and member), and the batch loops that receive, judge (with the call's
//! one rule set, [`GroupRules`]) and send.
//!
//! A call delivers in one of two ways, chosen by its procedure:
//!
//! * **to one peer, in place** (a push or pull: [`PairFace`]): each datagram is judged and
//!   re-protected in the buffer it came in, and the batch's RTP goes to the peer in GSO runs
//!   from the peer's own relay socket of the stream. Nothing is copied.
//! * **fanned out** (a group): each segment is judged into the worker's [`FanOut`]; every
//!   delivery is sent from the receiving member's own relay socket of the stream, RTP gathered
//!   per receiver leg into GSO runs (a video frame to one receiver is one `sendmsg`), RTCP on
//!   its own.
//!
//! Everything here is owned by the worker thread: no lock on a packet's path, no allocation
//! per packet or per receiver.

use super::super::io::{Coalescer, RecvBatch, Sent, UdpSock};
use super::super::rules::{
    Delivery, FanOut, GroupIngress, GroupRules, MemberMedia, PairFace, Tally,
};
use super::super::stats::{DropReason, LegSnapshot};
use crate::control::arbiter::Slot;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

/// Largest transmission control datagram received (one MTU).
pub(crate) const CONTROL_MTU: usize = 1500;
/// Receive batches a media socket may take per wake-up before the worker looks at the others.
pub(super) const BATCHES_PER_WAKE: usize = 8;
/// Control datagrams read per wake-up of a control socket.
pub(super) const CONTROL_PER_WAKE: usize = 16;

/// Media activity of a member since the call was last stepped.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Activity {
    pub(super) since_step: u64,
    pub(super) total: u64,
    pub(super) last: Option<Instant>,
}

/// What a socket of a call carries.
#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
    /// Media from a member (where it came in: stream, member, its separate RTCP socket).
    Media(GroupIngress),
    /// A member's transmission control channel.
    Control(Slot),
}

#[derive(Debug)]
pub(super) struct Socket {
    pub(super) sock: UdpSock,
    pub(super) role: Role,
    /// Its local address (read once: a recording's packets name it).
    pub(super) local: Option<SocketAddr>,
}

/// A worker's reusable buffers: one receive batch, one GSO coalescer (a pair's peer), one
/// fan-out (a group's deliveries), one control buffer.
#[derive(Debug)]
pub(crate) struct Scratch {
    pub(crate) batch: RecvBatch,
    pub(crate) coalescer: Coalescer,
    pub(crate) fan: FanOut,
    pub(crate) control: Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            batch: RecvBatch::default(),
            coalescer: Coalescer::default(),
            fan: FanOut::new(),
            control: vec![0; CONTROL_MTU],
        }
    }
}

/// One member's sockets, counters and media activity.
#[derive(Debug)]
pub(super) struct MemberRt {
    /// Its MCVideo ID (a one-to-one call's party: its URI).
    pub(super) user_id: Arc<str>,
    /// Per stream: the index of its RTP socket and of its separate RTCP socket.
    pub(super) rtp: Vec<Option<usize>>,
    pub(super) rtcp: Vec<Option<usize>>,
    pub(super) control: Option<usize>,
    /// SSRCs its SDP announced (allowed besides the granted ones, in a group).
    pub(super) announced: Vec<u32>,
    /// Its relay ports, with their pool (a one-to-one call keeps its ports with its call).
    pub(super) ports: Vec<(usize, u16)>,
    pub(super) counters: LegSnapshot,
    pub(super) activity: Activity,
    /// Its transmission's first media has been seen (or it holds no grant).
    pub(super) media_seen: bool,
    /// Per stream: RTP to it gathered into GSO runs (made when it first receives fanned-out
    /// media: an idle member holds no buffer), and where the run goes.
    pub(super) out: Vec<(Option<Box<Coalescer>>, Option<SocketAddr>)>,
    /// Its media setup with its keys, for a group's high-availability images.
    pub(super) media: MemberMedia,
    /// Per stream: its relay RTP address and whether RTCP is muxed there (a group's images).
    pub(super) relay: Vec<Option<(SocketAddr, bool)>>,
    /// Its control channel's relay address (a group's images).
    pub(super) control_relay: Option<SocketAddr>,
}

impl MemberRt {
    /// A member of a call with `streams` streams, with no socket yet.
    pub(super) fn new(user_id: Arc<str>, streams: usize) -> MemberRt {
        MemberRt {
            user_id,
            rtp: vec![None; streams],
            rtcp: vec![None; streams],
            control: None,
            announced: Vec::new(),
            ports: Vec::new(),
            counters: LegSnapshot::default(),
            activity: Activity::default(),
            media_seen: true,
            out: (0..streams).map(|_| (None, None)).collect(),
            media: MemberMedia::default(),
            relay: Vec::new(),
            control_relay: None,
        }
    }

    /// The index of its socket that sends on stream `si`: its RTCP socket for RTCP when it
    /// has one, else its RTP socket.
    #[inline]
    pub(super) fn own_socket(&self, si: usize, rtcp: bool) -> Option<usize> {
        let rtp = || self.rtp.get(si).copied().flatten();
        if rtcp {
            self.rtcp.get(si).copied().flatten().or_else(rtp)
        } else {
            rtp()
        }
    }

    /// The indices of all its sockets.
    pub(super) fn socket_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.rtp
            .iter()
            .chain(&self.rtcp)
            .chain(std::iter::once(&self.control))
            .flatten()
            .copied()
    }
}

/// A call's sockets and its members (by slot).
#[derive(Debug, Default)]
pub(super) struct Net {
    pub(super) sockets: Vec<Option<Socket>>,
    pub(super) members: Vec<Option<MemberRt>>,
}

impl Net {
    /// Member `slot`, if it is in the call.
    #[inline]
    pub(super) fn member(&self, slot: Slot) -> Option<&MemberRt> {
        self.members.get(slot.index())?.as_ref()
    }

    /// Member `slot`, to change.
    #[inline]
    pub(super) fn member_mut(&mut self, slot: Slot) -> Option<&mut MemberRt> {
        self.members.get_mut(slot.index())?.as_mut()
    }

    /// Socket `index`.
    #[inline]
    pub(super) fn socket(&self, index: usize) -> Option<&Socket> {
        self.sockets.get(index)?.as_ref()
    }

    /// `member`'s socket that sends on stream `si` (see [`MemberRt::own_socket`]).
    #[inline]
    pub(super) fn own_socket(&self, member: Slot, si: usize, rtcp: bool) -> Option<&UdpSock> {
        let i = self.member(member)?.own_socket(si, rtcp)?;
        self.socket(i).map(|s| &s.sock)
    }

    /// Takes in a socket for `role`, in the first free place. Returns its index.
    pub(super) fn push(&mut self, s: UdpSocket, role: Role) -> io::Result<usize> {
        let local = s.local_addr().ok();
        let sock = Some(Socket {
            sock: UdpSock::new(s)?,
            role,
            local,
        });
        match self.sockets.iter().position(Option::is_none) {
            Some(i) => {
                if let Some(x) = self.sockets.get_mut(i) {
                    *x = sock;
                }
                Ok(i)
            }
            None => {
                self.sockets.push(sock);
                Ok(self.sockets.len() - 1)
            }
        }
    }

    /// Every socket to register with the poller, by index.
    pub(super) fn all(&self) -> impl Iterator<Item = (usize, &UdpSocket)> {
        self.sockets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_ref()?.sock.socket())))
    }

    /// Member `slot`'s sockets to register with the poller, by index.
    pub(super) fn of_member(&self, slot: Slot) -> Vec<(usize, &UdpSocket)> {
        let Some(m) = self.member(slot) else {
            return Vec::new();
        };
        m.socket_indices()
            .filter_map(|i| Some((i, self.socket(i)?.sock.socket())))
            .collect()
    }

    /// Closes member `slot`'s sockets and takes it out. Returns it.
    pub(super) fn remove_member(&mut self, slot: Slot) -> Option<MemberRt> {
        let m = self.members.get_mut(slot.index()).and_then(Option::take)?;
        for i in m.socket_indices() {
            if let Some(s) = self.sockets.get_mut(i) {
                *s = None; // closing the socket takes it out of the epoll set
            }
        }
        Some(m)
    }
}

/// Receives one batch from `sock` into `io.batch`: the datagrams, and whether the socket is
/// drained. `None`: nothing to read (or an ICMP-induced error: the socket stays usable).
#[inline]
fn receive(sock: &UdpSock, io: &mut Scratch) -> Option<bool> {
    let n = sock.recv(&mut io.batch).ok()?;
    Some(n < io.batch.slots())
}

/// Adds `more` to `sent`.
#[inline]
fn add_sent(sent: &mut Sent, more: Sent) {
    sent.packets += more.packets;
    sent.bytes += more.bytes;
    sent.failed += more.failed;
}

/// Books a send in the batch's tally.
#[inline]
fn tally_sent(t: &mut Tally, sent: Sent) {
    t.out_packets += sent.packets;
    t.out_bytes += sent.bytes;
    t.drop_n(DropReason::SendFailed, sent.failed);
}

/// One receive batch of a two-member call from socket `index` (`at`): judge each packet in
/// place, forward what passes to the peer (gathering single packets into GSO sends). What went
/// out is in the tally (the caller books it on the peer). `None`: nothing to read.
pub(super) fn pump_pair(
    face: &PairFace,
    rules: &mut GroupRules,
    net: &Net,
    index: usize,
    at: GroupIngress,
    now: Instant,
    io: &mut Scratch,
) -> Option<(Tally, bool)> {
    let drained = receive(&net.socket(index)?.sock, io)?;
    let mut t = Tally::default();
    let dest = face.destination(rules, at, false);
    let peer = pair_peer(net, face, at, false)?;
    let Scratch {
        batch, coalescer, ..
    } = io;
    for (from, data, stride) in batch.datagrams() {
        let w = judge_datagram(face, rules, net, at, from, now, data, stride, &mut t);
        if w == 0 {
            continue;
        }
        let Some(dest) = dest else {
            t.drop_n(DropReason::WrongSource, w.div_ceil(stride) as u64);
            continue;
        };
        let Some(out) = data.get(..w) else { continue };
        let sent = if data.len() == stride {
            // One packet: gather it with its neighbours into one GSO send.
            coalescer.push(out, peer, dest)
        } else {
            // A GRO super-packet: forward it as it is, after what was gathered so far.
            let mut s = coalescer.flush(peer, dest);
            add_sent(&mut s, peer.send(dest, out, stride));
            s
        };
        tally_sent(&mut t, sent);
    }
    if let Some(d) = dest {
        tally_sent(&mut t, coalescer.flush(peer, d));
    }
    Some((t, drained))
}

/// The peer's socket for what a packet judged at `at` becomes (RTP or RTCP).
#[inline]
fn pair_peer<'a>(
    net: &'a Net,
    face: &PairFace,
    at: GroupIngress,
    rtcp: bool,
) -> Option<&'a UdpSock> {
    let peer = face.peer(at.member);
    net.own_socket(peer, at.stream, rtcp)
}

/// Judges every segment of one datagram of a two-member call, compacting the RTP that passes
/// at its front (RTCP and re-sized packets are sent on their own); returns the bytes left to
/// forward.
#[allow(clippy::too_many_arguments)] // the split borrows of one call's media plane
fn judge_datagram(
    face: &PairFace,
    rules: &mut GroupRules,
    net: &Net,
    at: GroupIngress,
    from: SocketAddr,
    now: Instant,
    data: &mut [u8],
    stride: usize,
    t: &mut Tally,
) -> usize {
    let (mut r, mut w) = (0usize, 0usize);
    let total = data.len();
    let route = face.route(at.member);
    while r < total {
        let seg_len = stride.min(total - r);
        t.in_packets += 1;
        t.in_bytes += seg_len as u64;
        let Some(seg) = data.get_mut(r..r + seg_len) else {
            break;
        };
        match rules.judge_pair(at, route, from, now, seg, t) {
            Ok(e) if e.len == 0 => {}
            Ok(e) if e.rtcp || e.len != seg_len => {
                // RTCP (its own destination) or a changed size: sent on its own.
                let dest = face.destination(rules, at, e.rtcp);
                match (dest, pair_peer(net, face, at, e.rtcp), seg.get(..e.len)) {
                    (Some(dest), Some(s), Some(out)) => tally_sent(t, s.send(dest, out, e.len)),
                    _ => t.drop(DropReason::WrongSource),
                }
            }
            Ok(e) => {
                if w != r {
                    data.copy_within(r..r + e.len, w);
                }
                w += e.len;
            }
            Err(reason) => t.drop(reason),
        }
        r += seg_len;
    }
    w
}

/// Books a send to a receiver: its counters and the batch's.
#[inline]
fn sent_to(receiver: &mut LegSnapshot, batch: &mut LegSnapshot, sent: Sent) {
    for c in [receiver, batch] {
        c.add_out(sent.packets, sent.bytes);
        if sent.failed > 0 {
            if let Some(x) = c.drops.get_mut(DropReason::SendFailed as usize) {
                *x += sent.failed;
            }
        }
    }
}

/// One receive batch of a group from socket `index` (`at`): judge each segment into the
/// fan-out, send every delivery from the receiver's socket. What went out is booked per
/// receiver and in `out` (the batch's, for the worker's totals). `None`: nothing to read.
#[allow(clippy::too_many_arguments)] // the split borrows of one call's media plane
pub(super) fn pump_fan(
    rules: &mut GroupRules,
    net: &mut Net,
    dirty: &mut [u64],
    index: usize,
    at: GroupIngress,
    now: Instant,
    io: &mut Scratch,
    out: &mut LegSnapshot,
) -> Option<(Tally, bool)> {
    let drained = receive(&net.socket(index)?.sock, io)?;
    let mut t = Tally::default();
    let Scratch { batch, fan, .. } = io;
    let mut legs = Legs {
        members: &mut net.members,
        sockets: &net.sockets,
        dirty,
    };
    for (from, data, stride) in batch.datagrams() {
        let stride = stride.max(1);
        for seg in data.chunks_mut(stride) {
            t.in_packets += 1;
            t.in_bytes += seg.len() as u64;
            fan.clear();
            if let Err(r) = rules.judge(at, from, now, seg, fan, &mut t) {
                t.drop(r);
                continue;
            }
            for (d, bytes) in fan.iter() {
                if !legs.deliver(d, bytes, out) {
                    t.drop(DropReason::WrongSource);
                }
            }
        }
    }
    // Every receiver leg's gathered run goes out before the next batch.
    legs.flush(out);
    t.out_packets += out.packets_out;
    t.out_bytes += out.bytes_out;
    Some((t, drained))
}

/// The receiver side of a group's batch: its members' legs and sockets, and which legs hold
/// RTP gathered and not yet sent (bit per member, per stream).
struct Legs<'a> {
    members: &'a mut [Option<MemberRt>],
    sockets: &'a [Option<Socket>],
    dirty: &'a mut [u64],
}

/// Socket `i` of `sockets`, while it is open.
#[inline]
fn sock_at(sockets: &[Option<Socket>], i: Option<usize>) -> Option<&UdpSock> {
    sockets.get(i?)?.as_ref().map(|s| &s.sock)
}

impl Legs<'_> {
    /// Sends delivery `d` of `bytes` from its member's own relay socket of the stream (RTCP
    /// from its RTCP socket if it has one), RTP gathered into the leg's GSO run; books it in
    /// `out`. `false` when the member or its socket is gone.
    #[inline]
    fn deliver(&mut self, d: &Delivery, bytes: &[u8], out: &mut LegSnapshot) -> bool {
        let own = match self.members.get(d.member.index()).and_then(Option::as_ref) {
            Some(m) => m.own_socket(d.stream, d.rtcp),
            None => return false,
        };
        let Some(s) = sock_at(self.sockets, own) else {
            return false;
        };
        let Some(m) = self
            .members
            .get_mut(d.member.index())
            .and_then(Option::as_mut)
        else {
            return false;
        };
        let sent = match (d.rtcp, m.out.get_mut(d.stream)) {
            (false, Some((c, to))) => {
                let c = c.get_or_insert_with(Box::default);
                if let Some(w) = self.dirty.get_mut(d.stream) {
                    *w |= d.member.bit();
                }
                // A run goes to one address: a new one sends the old run first.
                let mut sent = match *to {
                    Some(old) if old != d.dest => c.flush(s, old),
                    _ => Sent::default(),
                };
                *to = Some(d.dest);
                add_sent(&mut sent, c.push(bytes, s, d.dest));
                sent
            }
            _ => s.send(d.dest, bytes, bytes.len()),
        };
        sent_to(&mut m.counters, out, sent);
        true
    }

    /// Sends every receiver leg's gathered run; books it in `out`.
    fn flush(&mut self, out: &mut LegSnapshot) {
        for si in 0..self.dirty.len() {
            let w = self.dirty.get_mut(si).map(std::mem::take).unwrap_or(0);
            for r in crate::control::arbiter::slots(w) {
                let own = match self.members.get(r.index()).and_then(Option::as_ref) {
                    Some(m) => m.rtp.get(si).copied().flatten(),
                    None => continue,
                };
                let Some(s) = sock_at(self.sockets, own) else {
                    continue;
                };
                let Some(m) = self.members.get_mut(r.index()).and_then(Option::as_mut) else {
                    continue;
                };
                let Some((Some(c), Some(dest))) = m.out.get_mut(si) else {
                    continue;
                };
                let sent = c.flush(s, *dest);
                sent_to(&mut m.counters, out, sent);
            }
        }
    }
}
