//! The relay's port range: binds real UDP sockets for each stream of each leg (RTP on an even
//! port, RTCP on the next one unless rtcp-mux) and takes the numbers back on release.

use crate::control::call::{PortAllocator, RelayPort};
use crate::control::Party;
use crate::sdp::MediaKind;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Mutex;

/// Sockets bound for one stream of one leg.
#[derive(Debug)]
pub(crate) struct BoundPort {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: Option<UdpSocket>,
    /// Which party's pool it came from (set when a call takes it).
    pub(crate) pool: usize,
}

/// The pool of even port numbers in `[min, max]`.
#[derive(Debug)]
pub(crate) struct PortPool {
    ip: IpAddr,
    /// The address handed out in [`RelayPort`]s (and so in SDP): `ip` unless advertised.
    advertised: IpAddr,
    min: u16,
    max: u16,
    next: u16,
    used: Vec<u64>,
    in_use: usize,
    buffer_bytes: usize,
}

impl PortPool {
    pub(crate) fn new(ip: IpAddr, min: u16, max: u16, buffer_bytes: usize) -> Self {
        let min = min.max(1).saturating_add(min % 2); // RTP on even ports
        PortPool {
            ip,
            advertised: ip,
            min,
            max: max.max(min),
            next: min,
            used: vec![0; 1024],
            in_use: 0,
            buffer_bytes,
        }
    }

    /// Advertises `ip` in the SDP instead of the bound address (NAT).
    pub(crate) fn advertise(mut self, ip: IpAddr) -> Self {
        self.advertised = ip;
        self
    }

    /// Port pairs the range holds.
    pub(crate) fn capacity(&self) -> usize {
        usize::from((self.max - self.min) / 2 + 1)
    }

    /// Port pairs handed out.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    fn is_used(&self, port: u16) -> bool {
        self.used
            .get(usize::from(port / 64))
            .is_some_and(|w| w & (1 << (port % 64)) != 0)
    }

    fn set_used(&mut self, port: u16, used: bool) {
        if let Some(w) = self.used.get_mut(usize::from(port / 64)) {
            if used {
                *w |= 1 << (port % 64);
            } else {
                *w &= !(1 << (port % 64));
            }
        }
    }

    /// Marks the next free even port number used, without binding it.
    fn reserve(&mut self) -> Option<u16> {
        for _ in 0..self.capacity() {
            let port = self.next;
            self.next = if port >= self.max.saturating_sub(1) {
                self.min
            } else {
                port + 2
            };
            if !self.is_used(port) {
                self.set_used(port, true);
                self.in_use += 1;
                return Some(port);
            }
        }
        None
    }

    /// [`Self::allocate`] for a pool other threads share: the port number is reserved under
    /// the lock, the sockets are bound outside it.
    pub(crate) fn allocate_shared(
        pool: &Mutex<PortPool>,
        mux: bool,
    ) -> Option<(RelayPort, BoundPort)> {
        let lock = || pool.lock().unwrap_or_else(|e| e.into_inner());
        let (ip, advertised, buffer_bytes, capacity) = {
            let p = lock();
            (p.ip, p.advertised, p.buffer_bytes, p.capacity())
        };
        for _ in 0..capacity {
            let port = lock().reserve()?;
            match bind_pair(ip, advertised, port, mux, buffer_bytes) {
                Ok(b) => return Some(b),
                Err(e) if out_of_descriptors(&e) => {
                    lock().free(port);
                    tracing::warn!(error = %e, "out of file descriptors: raise the open-files limit (LimitNOFILE); each call holds one socket per relay port");
                    return None;
                }
                Err(_) => lock().free(port), // held by another process: try the next one
            }
        }
        None
    }

    /// Binds exactly `port` (and `port + 1` without `mux`) for a call taken over from another
    /// relay, and marks it used. Fails when the number is already in use here or the address
    /// cannot be bound (another process holds it; on another host's address without
    /// `net.ipv4.ip_nonlocal_bind`).
    pub(crate) fn claim_shared(
        pool: &Mutex<PortPool>,
        port: u16,
        mux: bool,
    ) -> io::Result<(RelayPort, BoundPort)> {
        let lock = || pool.lock().unwrap_or_else(|e| e.into_inner());
        let (ip, advertised, buffer_bytes) = {
            let mut p = lock();
            if port < p.min || port > p.max || port % 2 != p.min % 2 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("port {port} is not in this relay's range"),
                ));
            }
            if p.is_used(port) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("port {port} is in use by another call here"),
                ));
            }
            p.set_used(port, true);
            p.in_use += 1;
            (p.ip, p.advertised, p.buffer_bytes)
        };
        bind_pair(ip, advertised, port, mux, buffer_bytes).inspect_err(|_| lock().free(port))
    }

    /// The address handed out in relay ports (and SDP).
    pub(crate) fn advertised(&self) -> IpAddr {
        self.advertised
    }

    /// Takes a port number back (its sockets must be closed by then).
    pub(crate) fn free(&mut self, port: u16) {
        if self.is_used(port) {
            self.set_used(port, false);
            self.in_use -= 1;
        }
    }
}

fn bind(ip: IpAddr, port: u16, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer_bytes > 0 {
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = s.set_recv_buffer_size(buffer_bytes);
        let _ = s.set_send_buffer_size(buffer_bytes);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds RTP on `port` and, without `mux`, RTCP on `port + 1`; the relay ports carry the
/// `advertised` address.
fn bind_pair(
    ip: IpAddr,
    advertised: IpAddr,
    port: u16,
    mux: bool,
    buffer_bytes: usize,
) -> io::Result<(RelayPort, BoundPort)> {
    let rtp = bind(ip, port, buffer_bytes)?;
    let rtp_addr = SocketAddr::new(advertised, port);
    let (rtcp, rtcp_addr) = if mux {
        (None, rtp_addr)
    } else {
        let p = port.checked_add(1).ok_or(io::ErrorKind::AddrNotAvailable)?;
        (
            Some(bind(ip, p, buffer_bytes)?),
            SocketAddr::new(advertised, p),
        )
    };
    Ok((
        RelayPort {
            rtp: rtp_addr,
            rtcp: rtcp_addr,
        },
        BoundPort { rtp, rtcp, pool: 0 },
    ))
}

/// EMFILE / ENFILE: the process or the system is out of file descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// [`PortAllocator`] over sockets bound before the call procedure ran (falling back to the
/// shared pool): keeps the sockets the call uses for the engine.
pub(crate) struct PreboundAllocator<'a> {
    /// Per party: sockets bound beforehand on its interface.
    pub(crate) ready: [&'a mut Vec<(RelayPort, BoundPort)>; 2],
    /// Per party: its interface's pool.
    pub(crate) pools: [&'a Mutex<PortPool>; 2],
    /// What the call took: relay port → sockets (and the pool it came from).
    pub(crate) bound: HashMap<u16, BoundPort>,
}

impl PortAllocator for PreboundAllocator<'_> {
    fn allocate(&mut self, party: Party, kind: &MediaKind, rtcp_mux: bool) -> Option<RelayPort> {
        let mux = rtcp_mux || *kind == MediaKind::Control;
        let ready = &mut self.ready[party.index()];
        let (port, mut sockets) = match ready.iter().position(|(p, _)| p.muxed() == mux) {
            Some(i) => ready.swap_remove(i),
            None => PortPool::allocate_shared(self.pools[party.index()], mux)?,
        };
        sockets.pool = party.index();
        self.bound.insert(port.rtp.port(), sockets);
        Some(port)
    }

    fn free(&mut self, port: RelayPort) {
        if let Some(b) = self.bound.remove(&port.rtp.port()) {
            // The sockets close as `b` drops.
            if let Some(pool) = self.pools.get(b.pool) {
                pool.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .free(port.rtp.port());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_odd_and_reusable() {
        let p = Mutex::new(PortPool::new(
            "127.0.0.1".parse().unwrap(),
            47_001,
            47_010,
            0,
        ));
        assert_eq!(p.lock().unwrap().capacity(), 5);
        let mut got = Vec::new();
        while let Some((port, sockets)) = PortPool::allocate_shared(&p, false) {
            assert_eq!(port.rtp.port() % 2, 0);
            assert_eq!(port.rtcp.port(), port.rtp.port() + 1);
            got.push((port, sockets));
        }
        assert!(!got.is_empty() && got.len() <= 5);
        assert_eq!(p.lock().unwrap().in_use(), got.len());
        let (first, sockets) = got.remove(0);
        drop(sockets);
        p.lock().unwrap().free(first.rtp.port());
        let (again, _s) = PortPool::allocate_shared(&p, true).expect("freed pair is reusable");
        assert_eq!(again.rtp, first.rtp);
        assert_eq!(again.rtcp, again.rtp, "mux: one port");
    }
}
