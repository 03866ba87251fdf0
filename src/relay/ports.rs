//! The relay's port range: binds real UDP sockets for each stream of each leg (RTP on an even
//! port, RTCP on the next one unless rtcp-mux) and takes the numbers back on release.

use crate::control::call::{PortAllocator, RelayPort};
use crate::control::Party;
use crate::sdp::MediaKind;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Sockets bound for one stream of one leg.
#[derive(Debug)]
pub(crate) struct BoundPort {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: Option<UdpSocket>,
}

/// The pool of even port numbers in `[min, max]`.
#[derive(Debug)]
pub(crate) struct PortPool {
    ip: IpAddr,
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
            min,
            max: max.max(min),
            next: min,
            used: vec![0; 1024],
            in_use: 0,
            buffer_bytes,
        }
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

    fn bind(&self, port: u16) -> io::Result<UdpSocket> {
        let addr = SocketAddr::new(self.ip, port);
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if self.buffer_bytes > 0 {
            // Best effort: the kernel caps these at net.core.{r,w}mem_max.
            let _ = s.set_recv_buffer_size(self.buffer_bytes);
            let _ = s.set_send_buffer_size(self.buffer_bytes);
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s.into())
    }

    /// Binds the next free pair (one port with `mux`). Ports another process holds are skipped.
    pub(crate) fn allocate(&mut self, mux: bool) -> Option<(RelayPort, BoundPort)> {
        for _ in 0..self.capacity() {
            let port = self.next;
            self.next = if port >= self.max.saturating_sub(1) {
                self.min
            } else {
                port + 2
            };
            if self.is_used(port) {
                continue;
            }
            let rtp = match self.bind(port) {
                Ok(s) => s,
                Err(e) if out_of_descriptors(&e) => return self.descriptors_exhausted(&e),
                Err(_) => continue, // held by another process: skip it
            };
            let rtcp = if mux {
                None
            } else {
                match port.checked_add(1).map(|p| self.bind(p)) {
                    Some(Ok(s)) => Some(s),
                    Some(Err(e)) if out_of_descriptors(&e) => {
                        return self.descriptors_exhausted(&e)
                    }
                    _ => continue,
                }
            };
            self.set_used(port, true);
            self.in_use += 1;
            let rtp_addr = SocketAddr::new(self.ip, port);
            let rtcp_addr = if mux {
                rtp_addr
            } else {
                SocketAddr::new(self.ip, port + 1)
            };
            return Some((
                RelayPort {
                    rtp: rtp_addr,
                    rtcp: rtcp_addr,
                },
                BoundPort { rtp, rtcp },
            ));
        }
        None
    }

    fn descriptors_exhausted(&self, e: &io::Error) -> Option<(RelayPort, BoundPort)> {
        // Scanning on is pointless: no port will bind until descriptors are freed.
        tracing::warn!(error = %e, "out of file descriptors: raise the open-files limit (LimitNOFILE); each call holds one socket per relay port");
        None
    }

    /// Takes a port number back (its sockets must be closed by then).
    pub(crate) fn free(&mut self, port: u16) {
        if self.is_used(port) {
            self.set_used(port, false);
            self.in_use -= 1;
        }
    }
}

/// EMFILE / ENFILE: the process or the system is out of file descriptors.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// [`PortAllocator`] over a [`PortPool`] that keeps the bound sockets for the engine.
pub(crate) struct Binder<'a> {
    pub(crate) pool: &'a mut PortPool,
    pub(crate) bound: HashMap<u16, BoundPort>,
}

impl PortAllocator for Binder<'_> {
    fn allocate(&mut self, _party: Party, kind: &MediaKind, rtcp_mux: bool) -> Option<RelayPort> {
        // The transmission control channel is one port (RTCP APP only).
        let mux = rtcp_mux || *kind == MediaKind::Control;
        let (port, sockets) = self.pool.allocate(mux)?;
        self.bound.insert(port.rtp.port(), sockets);
        Some(port)
    }

    fn free(&mut self, port: RelayPort) {
        self.bound.remove(&port.rtp.port()); // closes the sockets
        self.pool.free(port.rtp.port());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_odd_and_reusable() {
        let mut p = PortPool::new("127.0.0.1".parse().unwrap(), 47_001, 47_010, 0);
        assert_eq!(p.capacity(), 5);
        let mut got = Vec::new();
        while let Some((port, sockets)) = p.allocate(false) {
            assert_eq!(port.rtp.port() % 2, 0);
            assert_eq!(port.rtcp.port(), port.rtp.port() + 1);
            got.push((port, sockets));
        }
        assert!(!got.is_empty() && got.len() <= 5);
        assert_eq!(p.in_use(), got.len());
        let (first, sockets) = got.remove(0);
        drop(sockets);
        p.free(first.rtp.port());
        let (again, _s) = p.allocate(true).expect("freed pair is reusable");
        assert_eq!(again.rtp, first.rtp);
        assert_eq!(again.rtcp, again.rtp, "mux: one port");
    }
}
