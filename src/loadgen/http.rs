//! A minimal HTTP/1.1 client over one keep-alive `TcpStream`: enough for the sidecar's JSON API
//! (Content-Length or chunked bodies, `Connection: close`, one retry on a stale connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted.
const MAX_BODY: usize = 16 << 20;

/// A response: status and body.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// One connection to one server, reopened when the server closes it.
pub(crate) struct HttpClient {
    addr: SocketAddr,
    host: String,
    prefix: String,
    token: Option<String>,
    conn: Option<BufReader<TcpStream>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What went wrong and whether the request may have reached the server.
struct Failure {
    message: String,
    /// Nothing of a response was read: on a reused connection, the server had closed it.
    nothing_read: bool,
}

impl HttpClient {
    /// A client for `base` (`http://host:port[/prefix]`).
    pub(crate) fn new(base: &str, token: Option<String>) -> Result<HttpClient, String> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{base}`: only http:// URLs are supported"))?;
        let (host, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("`{host}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{host}` resolves to no address"))?;
        Ok(HttpClient {
            addr,
            host: host.to_owned(),
            prefix: prefix.to_owned(),
            token,
            conn: None,
        })
    }

    /// Sends one request (`body` as JSON) and reads the whole response.
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, String> {
        let reused = self.conn.is_some();
        match self.attempt(method, path, body) {
            Ok(r) => Ok(r),
            Err(f) if reused && f.nothing_read => {
                // The server closed an idle keep-alive connection: once more on a fresh one.
                self.conn = None;
                self.attempt(method, path, body).map_err(|f| f.message)
            }
            Err(f) => Err(f.message),
        }
    }

    fn attempt(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, Failure> {
        let fail = |message: String, nothing_read: bool| Failure {
            message,
            nothing_read,
        };
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
                .map_err(|e| fail(format!("connect {}: {e}", self.addr), false))?;
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let _ = s.set_write_timeout(Some(IO_TIMEOUT));
            self.conn = Some(BufReader::new(s));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(fail("no connection".into(), false));
        };
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n",
            self.prefix, self.host
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        match body {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None if matches!(method, "POST" | "PUT") => req.push_str("Content-Length: 0\r\n\r\n"),
            None => req.push_str("\r\n"),
        }
        if let Err(e) = conn.get_mut().write_all(req.as_bytes()) {
            self.conn = None;
            return Err(fail(format!("{method} {path}: write: {e}"), true));
        }
        let result = read_response(conn);
        match result {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(f) => {
                self.conn = None;
                Err(fail(
                    format!("{method} {path}: {}", f.message),
                    f.nothing_read,
                ))
            }
        }
    }
}

fn read_response(conn: &mut BufReader<TcpStream>) -> Result<(Response, bool), Failure> {
    let err = |message: String| Failure {
        message,
        nothing_read: false,
    };
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => {
            return Err(Failure {
                message: "connection closed before a response".into(),
                nothing_read: true,
            })
        }
        Ok(_) => {}
        Err(e) => {
            return Err(Failure {
                message: format!("read: {e}"),
                nothing_read: true,
            })
        }
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(format!("bad status line `{}`", line.trim_end())))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut keep = version == "HTTP/1.1";
    loop {
        line.clear();
        let n = conn
            .read_line(&mut line)
            .map_err(|e| err(format!("read headers: {e}")))?;
        if n == 0 {
            return Err(err("connection closed in the headers".into()));
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => {
                content_length = Some(
                    value
                        .parse()
                        .map_err(|_| err(format!("bad Content-Length `{value}`")))?,
                )
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    keep = false;
                } else if v.contains("keep-alive") {
                    keep = true;
                }
            }
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line)
                .map_err(|e| err(format!("read chunk size: {e}")))?;
            let size_text = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| err(format!("bad chunk size `{}`", line.trim())))?;
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    line.clear();
                    let n = conn
                        .read_line(&mut line)
                        .map_err(|e| err(format!("read trailer: {e}")))?;
                    if n == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(err("response body too large".into()));
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            conn.read_exact(&mut body[start..])
                .map_err(|e| err(format!("read chunk: {e}")))?;
            body.truncate(start + size);
        }
    } else if let Some(n) = content_length {
        if n > MAX_BODY {
            return Err(err("response body too large".into()));
        }
        body.resize(n, 0);
        conn.read_exact(&mut body)
            .map_err(|e| err(format!("read body: {e}")))?;
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        // No length: the body runs to the end of the connection.
        conn.take(MAX_BODY as u64)
            .read_to_end(&mut body)
            .map_err(|e| err(format!("read body: {e}")))?;
        keep = false;
    }
    let body = String::from_utf8(body).map_err(|_| err("response body is not UTF-8".into()))?;
    Ok((Response { status, body }, keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn content_length_chunked_and_reconnect() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            // First connection: two keep-alive responses, then it closes.
            let (mut s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let read_req = |r: &mut BufReader<TcpStream>| {
                let mut len = 0;
                let mut line = String::new();
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut b = vec![0; len];
                r.read_exact(&mut b).unwrap();
                String::from_utf8(b).unwrap()
            };
            assert_eq!(read_req(&mut r), "{\"a\":1}");
            s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\n{\"x\":1}")
                .unwrap();
            read_req(&mut r);
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"y\r\n3\r\n\":2\r\n1\r\n}\r\n0\r\n\r\n")
                .unwrap();
            drop((s, r));
            // Second connection after the client finds the first one closed.
            let (mut s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            read_req(&mut r);
            s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            )
            .unwrap();
        });
        let mut c = HttpClient::new(&format!("http://{addr}"), Some("t".into())).unwrap();
        let r = c.request("POST", "/v1/calls", Some("{\"a\":1}")).unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, "{\"x\":1}"));
        let r = c.request("GET", "/v1/calls", None).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{\"y\":2}"));
        std::thread::sleep(Duration::from_millis(50));
        let r = c.request("DELETE", "/v1/calls/x", None).unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "{}"));
        server.join().unwrap();
    }
}
