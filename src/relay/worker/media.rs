//! The media plane of one established call on its worker: the call's sockets, which serves
//! which stream and party, and the batch loop that receives, judges (with the call's
//! [`CallRules`]) and forwards.

use super::super::io::{Coalescer, RecvBatch, UdpSock};
use super::super::rules::{CallRules, Ingress, Tally};
use super::super::stats::{DropReason, LegSnapshot};
use crate::control::Party;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

/// Largest transmission control datagram received (one MTU).
pub(crate) const CONTROL_MTU: usize = 1500;
/// Receive batches a media socket may take per wake-up before the worker looks at the others.
pub(super) const BATCHES_PER_WAKE: usize = 8;
/// Control datagrams read per wake-up of a control socket.
const CONTROL_PER_WAKE: usize = 16;

/// A call's transmission control channels as the worker reads them, whatever the call's kind
/// (`M` names a member: a party of a one-to-one call, a slot of a group call).
pub(super) trait ControlChannels<M: Copy> {
    /// Control socket `index`, while the call has it.
    fn control_socket(&self, index: usize) -> Option<&UdpSocket>;
    /// The rules' checks of a datagram from `from` on `member`'s channel (source, SRTCP):
    /// the message's length, or why it is dropped.
    fn admit_control(
        &mut self,
        member: M,
        from: SocketAddr,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<usize, DropReason>;
    /// Books `d` on `member`'s leg.
    fn count_control(&mut self, member: M, d: &LegSnapshot);
    /// An admitted message from `member`, for the transmission control server (after the
    /// media activity seen before it).
    fn handle_control(&mut self, now: Instant, member: M, msg: &[u8]);
}

/// Reads `call`'s control socket `index` (`member`'s channel), at most [`CONTROL_PER_WAKE`]
/// datagrams: each is counted on the member's leg and checked by the rules; what they admit
/// goes to the call. Returns whether the call wants a step.
pub(super) fn read_control<M: Copy>(
    call: &mut impl ControlChannels<M>,
    index: usize,
    member: M,
    now: Instant,
    io: &mut Scratch,
) -> bool {
    let mut step = false;
    for _ in 0..CONTROL_PER_WAKE {
        let Some(s) = call.control_socket(index) else {
            break;
        };
        let (n, from) = match s.recv_from(&mut io.control) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => continue, // e.g. an ICMP error: the socket stays usable
        };
        let mut d = LegSnapshot::default();
        d.add_in(1, n as u64);
        let Some(buf) = io.control.get_mut(..n) else {
            continue;
        };
        match call.admit_control(member, from, now, buf) {
            Ok(len) => {
                call.count_control(member, &d);
                if let Some(msg) = io.control.get(..len) {
                    call.handle_control(now, member, msg);
                }
                step = true;
            }
            Err(r) => {
                if let Some(x) = d.drops.get_mut(r as usize) {
                    *x += 1;
                }
                call.count_control(member, &d);
            }
        }
    }
    step
}

/// Media activity of a party or member since the call was last stepped.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Activity {
    pub(super) since_step: u64,
    pub(super) total: u64,
    pub(super) last: Option<Instant>,
}

/// What a socket of a call carries.
#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
    Media(Ingress),
    Control(Party),
}

#[derive(Debug)]
pub(super) struct Socket {
    pub(super) sock: UdpSock,
    pub(super) role: Role,
}

/// The media plane of an established call: its sockets and rules.
#[derive(Debug)]
pub(crate) struct Media {
    pub(super) rules: CallRules,
    pub(super) net: Net,
}

/// A call's sockets, and which serves what.
#[derive(Debug, Default)]
pub(super) struct Net {
    pub(super) sockets: Vec<Socket>,
    /// Per stream and party: the index of the RTP socket, and of the RTCP socket if separate.
    pub(super) rtp: Vec<[usize; 2]>,
    pub(super) rtcp: Vec<[Option<usize>; 2]>,
    pub(super) control: [Option<usize>; 2],
}

/// A worker's reusable buffers: one receive batch, one GSO coalescer, one control buffer.
#[derive(Debug)]
pub(crate) struct Scratch {
    pub(crate) batch: RecvBatch,
    pub(crate) coalescer: Coalescer,
    pub(crate) control: Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            batch: RecvBatch::default(),
            coalescer: Coalescer::default(),
            control: vec![0; CONTROL_MTU],
        }
    }
}

impl Net {
    pub(super) fn push(&mut self, s: std::net::UdpSocket, role: Role) -> io::Result<usize> {
        self.sockets.push(Socket {
            sock: UdpSock::new(s)?,
            role,
        });
        Ok(self.sockets.len() - 1)
    }

    /// The peer's socket for what a packet judged at `at` becomes (RTP or RTCP).
    pub(super) fn peer_socket(&self, at: Ingress, rtcp: bool) -> Option<&UdpSock> {
        let peer = at.party.peer().index();
        let i = if rtcp {
            self.rtcp
                .get(at.stream)
                .and_then(|r| r[peer])
                .or_else(|| self.rtp.get(at.stream).map(|r| r[peer]))
        } else {
            self.rtp.get(at.stream).map(|r| r[peer])
        }?;
        self.sockets.get(i).map(|s| &s.sock)
    }
}

impl Media {
    /// One receive batch from socket `index`: judge each packet in place, forward what
    /// passes (gathering single packets into GSO sends). `None`: nothing to read.
    pub(super) fn pump(
        &mut self,
        index: usize,
        at: Ingress,
        now: Instant,
        io: &mut Scratch,
    ) -> Option<(Tally, bool)> {
        let Media { rules, net } = self;
        let sock = &net.sockets.get(index)?.sock;
        let n = match sock.recv(&mut io.batch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(_) => return None, // e.g. an ICMP-induced error: the socket stays usable
        };
        let drained = n < io.batch.slots();
        let mut t = Tally::default();
        let dest = rules.destination(at, false);
        let peer = net.peer_socket(at, false)?;
        let Scratch {
            batch, coalescer, ..
        } = io;
        for (from, data, stride) in batch.datagrams() {
            let w = judge_datagram(rules, net, at, from, now, data, stride, &mut t);
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
                let more = peer.send(dest, out, stride);
                s.packets += more.packets;
                s.bytes += more.bytes;
                s.failed += more.failed;
                s
            };
            t.out_packets += sent.packets;
            t.out_bytes += sent.bytes;
            t.drop_n(DropReason::SendFailed, sent.failed);
        }
        if let Some(d) = dest {
            let sent = coalescer.flush(peer, d);
            t.out_packets += sent.packets;
            t.out_bytes += sent.bytes;
            t.drop_n(DropReason::SendFailed, sent.failed);
        }
        Some((t, drained))
    }
}

/// Judges every segment of one datagram, compacting the RTP that passes at its front (RTCP and
/// re-sized packets are sent on their own); returns the bytes left to forward.
#[allow(clippy::too_many_arguments)] // the split borrows of one call's media plane
fn judge_datagram(
    rules: &mut CallRules,
    net: &Net,
    at: Ingress,
    from: SocketAddr,
    now: Instant,
    data: &mut [u8],
    stride: usize,
    t: &mut Tally,
) -> usize {
    let (mut r, mut w) = (0usize, 0usize);
    let total = data.len();
    while r < total {
        let seg_len = stride.min(total - r);
        t.in_packets += 1;
        t.in_bytes += seg_len as u64;
        let Some(seg) = data.get_mut(r..r + seg_len) else {
            break;
        };
        match rules.judge(at, from, now, seg, t) {
            Ok(e) if e.len == 0 => {}
            Ok(e) if e.rtcp || e.len != seg_len => {
                // RTCP (its own destination) or a changed size: sent on its own.
                let dest = rules.destination(at, e.rtcp);
                match (dest, net.peer_socket(at, e.rtcp), seg.get(..e.len)) {
                    (Some(dest), Some(s), Some(out)) => {
                        let sent = s.send(dest, out, e.len);
                        t.out_packets += sent.packets;
                        t.out_bytes += sent.bytes;
                        t.drop_n(DropReason::SendFailed, sent.failed);
                    }
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
