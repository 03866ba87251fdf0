//! A minimal ng (rtpengine control protocol) client for the tests: bencode in and out over UDP.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B {
    I(i64),
    S(Vec<u8>),
    L(Vec<B>),
    D(BTreeMap<Vec<u8>, B>),
}

pub fn s(x: &str) -> B {
    B::S(x.as_bytes().to_vec())
}

pub fn d(pairs: &[(&str, B)]) -> B {
    B::D(
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect(),
    )
}

impl B {
    pub fn enc(&self, out: &mut Vec<u8>) {
        match self {
            B::I(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
            B::S(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            B::L(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.enc(out));
                out.push(b'e');
            }
            B::D(m) => {
                out.push(b'd');
                for (k, v) in m {
                    B::S(k.clone()).enc(out);
                    v.enc(out);
                }
                out.push(b'e');
            }
        }
    }

    pub fn get(&self, k: &str) -> Option<&B> {
        match self {
            B::D(m) => m.get(k.as_bytes()),
            _ => None,
        }
    }

    pub fn str(&self, k: &str) -> Option<String> {
        match self.get(k)? {
            B::S(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

fn dec(i: &[u8], p: &mut usize) -> B {
    match i[*p] {
        b'i' => {
            let e = *p + i[*p..].iter().position(|c| *c == b'e').unwrap();
            let n = std::str::from_utf8(&i[*p + 1..e]).unwrap().parse().unwrap();
            *p = e + 1;
            B::I(n)
        }
        b'l' => {
            *p += 1;
            let mut l = Vec::new();
            while i[*p] != b'e' {
                l.push(dec(i, p));
            }
            *p += 1;
            B::L(l)
        }
        b'd' => {
            *p += 1;
            let mut m = BTreeMap::new();
            while i[*p] != b'e' {
                let B::S(k) = dec(i, p) else { panic!("key") };
                m.insert(k, dec(i, p));
            }
            *p += 1;
            B::D(m)
        }
        _ => {
            let c = *p + i[*p..].iter().position(|c| *c == b':').unwrap();
            let n: usize = std::str::from_utf8(&i[*p..c]).unwrap().parse().unwrap();
            *p = c + 1 + n;
            B::S(i[c + 1..c + 1 + n].to_vec())
        }
    }
}

pub fn decode(i: &[u8]) -> B {
    let mut p = 0;
    let v = dec(i, &mut p);
    assert_eq!(p, i.len(), "trailing bytes");
    v
}

/// An ng client on its own loopback socket.
pub struct Ng {
    pub sock: UdpSocket,
    pub to: SocketAddr,
}

impl Ng {
    pub fn new(to: SocketAddr) -> Ng {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Ng { sock, to }
    }

    /// Sends raw bytes; the raw reply, if one came within `wait`.
    pub fn raw(&self, data: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        self.sock.send_to(data, self.to).unwrap();
        let mut buf = vec![0u8; 65_536];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    /// `cookie SP bencode(req)`; the raw reply.
    pub fn request_raw(&self, cookie: &str, req: &B) -> Vec<u8> {
        let mut data = format!("{cookie} ").into_bytes();
        req.enc(&mut data);
        self.raw(&data, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("no ng reply to {cookie}"))
    }

    /// A request; the reply's dictionary (the cookie checked).
    pub fn request(&self, cookie: &str, req: &B) -> B {
        let r = self.request_raw(cookie, req);
        let rest = r
            .strip_prefix(format!("{cookie} ").as_bytes())
            .unwrap_or_else(|| {
                panic!(
                    "reply without cookie {cookie}: {:?}",
                    String::from_utf8_lossy(&r)
                )
            });
        decode(rest)
    }
}
