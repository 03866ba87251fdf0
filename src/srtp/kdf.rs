//! Session-key derivation (RFC 3711 §4.3) with the AES-CM PRF (§4.3.3), key derivation rate 0.
//!
//! Both suites derive their session keys this way: RFC 7714 §11 keeps the RFC 3711 KDF for
//! AEAD_AES_128_GCM, with a 96-bit master salt (zero-padded on the right to the 112 bits the PRF
//! input has, as libsrtp and webrtc-rs do) and a 96-bit session salt.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128Enc;

/// RFC 3711 §4.3.2: SRTP encryption key.
pub(super) const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
/// RFC 3711 §4.3.2: SRTP authentication key.
pub(super) const LABEL_SRTP_AUTHENTICATION: u8 = 0x01;
/// RFC 3711 §4.3.2: SRTP salting key.
pub(super) const LABEL_SRTP_SALT: u8 = 0x02;
/// RFC 3711 §4.3.2: SRTCP encryption key.
pub(super) const LABEL_SRTCP_ENCRYPTION: u8 = 0x03;
/// RFC 3711 §4.3.2: SRTCP authentication key.
pub(super) const LABEL_SRTCP_AUTHENTICATION: u8 = 0x04;
/// RFC 3711 §4.3.2: SRTCP salting key.
pub(super) const LABEL_SRTCP_SALT: u8 = 0x05;

/// The AES-CM PRF keyed with one master key and master salt.
pub(super) struct Prf {
    aes: Aes128Enc,
    /// The master salt at the top of a 128-bit block (`salt << 16` for a 112-bit salt).
    salt: u128,
}

impl Prf {
    /// A PRF over `master_key` (16 octets) and `master_salt` (at most 14 octets; a shorter salt is
    /// zero-padded on the right).
    pub(super) fn new(master_key: &[u8; 16], master_salt: &[u8]) -> Self {
        let mut block = [0u8; 16];
        for (b, s) in block.iter_mut().zip(master_salt.iter().take(14)) {
            *b = *s;
        }
        Prf {
            aes: Aes128Enc::new(&(*master_key).into()),
            salt: u128::from_be_bytes(block),
        }
    }

    /// Fills `out` with the keystream for `label` (RFC 3711 §4.3.1, `r = 0`):
    /// `x = (label << 48) XOR master_salt`, blocks `AES(master_key, (x << 16) + i)`.
    pub(super) fn derive(&self, label: u8, out: &mut [u8]) {
        let x = self.salt ^ (u128::from(label) << 64);
        for (i, chunk) in out.chunks_mut(16).enumerate() {
            let mut block = (x ^ i as u128).to_be_bytes().into();
            self.aes.encrypt_block(&mut block);
            for (o, b) in chunk.iter_mut().zip(block) {
                *o = b;
            }
        }
    }

    /// `derive` into a fixed-size array.
    pub(super) fn derive_array<const N: usize>(&self, label: u8) -> [u8; N] {
        let mut out = [0u8; N];
        self.derive(label, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::tests::hex;

    /// RFC 3711 Appendix B.3 (key derivation test vectors, kdr 0, index 0).
    #[test]
    fn rfc3711_b3_key_derivation() {
        let key: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139").try_into().unwrap();
        let prf = Prf::new(&key, &hex("0EC675AD498AFEEBB6960B3AABE6"));

        let enc: [u8; 16] = prf.derive_array(LABEL_SRTP_ENCRYPTION);
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));

        let salt: [u8; 14] = prf.derive_array(LABEL_SRTP_SALT);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));

        // The RFC lists 94 octets of the authentication keystream; SHA1-HMAC uses the first 20.
        let mut auth = [0u8; 94];
        prf.derive(LABEL_SRTP_AUTHENTICATION, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex(
                "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }
}
