//! What a call takes from its surroundings: relay ports and randomness.

use super::*;
/// A relay port pair handed out by a [`PortAllocator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "ha", derive(serde::Serialize, serde::Deserialize))]
pub struct RelayPort {
    /// Where the relay receives (and sends) RTP for this stream.
    pub rtp: SocketAddr,
    /// Where it receives RTCP: `rtp` itself with rtcp-mux, else usually port + 1.
    pub rtcp: SocketAddr,
}

impl RelayPort {
    /// Whether RTP and RTCP share the port.
    pub fn muxed(&self) -> bool {
        self.rtp == self.rtcp
    }
}

/// Hands out relay ports. Implemented by the I/O layer (which binds sockets); tests use a
/// counter.
pub trait PortAllocator {
    /// A port (pair) for one stream of one leg; `rtcp_mux` asks for a single port. `None` when
    /// the pool is exhausted.
    fn allocate(&mut self, party: Party, kind: &MediaKind, rtcp_mux: bool) -> Option<RelayPort>;
    /// Returns a port to the pool.
    fn free(&mut self, port: RelayPort);
}

/// A source of random bytes (SSRCs, call IDs, SRTP keys). The engine uses the OS.
pub trait Entropy: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// Deterministic entropy for tests and fuzzing (SplitMix64). **Not** for keys in production.
#[derive(Debug, Clone)]
pub struct SeededEntropy(pub u64);

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let bytes = z.to_le_bytes();
            chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or_default());
        }
    }
}
