//! Size limits on untrusted SDP input.

/// Largest SDP text accepted, in bytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Largest number of media sections (`m=` lines) accepted.
pub const MAX_MEDIA: usize = 64;
/// Largest number of lines accepted (including trailing blank lines).
pub const MAX_LINES: usize = 4096;

/// Characters of the offending line kept in an [`SdpError`].
pub(super) const ERR_CONTENT_CHARS: usize = 100;
