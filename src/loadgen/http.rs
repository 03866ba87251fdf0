//! The crate's one HTTP/1.1 client: blocking, over one keep-alive `TcpStream`, enough for the
//! sidecar's API (Content-Length or chunked bodies, `Connection: close`, one retry on a stale
//! connection, a response held open as a stream for Server-Sent Events).
//!
//! The load generator sets up calls with it, and the integration tests drive the sidecar with it:
//! `tests/sidecar_support` compiles this same file into the tests (`#[path]`), so they need
//! neither the `loadgen` feature nor a second client; hence only `std` here, and its own tests
//! live beside it in `http_tests.rs`. Not a general-purpose client: `http://` only, no
//! redirects, no TLS; it may change at any time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted.
const MAX_BODY: usize = 16 << 20;

/// A response: status, headers (as sent) and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order, trimmed.
    pub headers: Vec<(String, String)>,
    /// The whole body (chunked bodies joined).
    pub body: String,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A response whose body is left on the connection: read it with [`read_chunk`] (chunked) or
/// as it comes (e.g. `text/event-stream`).
#[derive(Debug)]
pub struct Stream {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order, trimmed.
    pub headers: Vec<(String, String)>,
    /// The connection, positioned at the start of the body.
    pub conn: BufReader<TcpStream>,
}

impl Stream {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether the body is chunked.
    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// One connection to one server, reopened when the server closes it.
pub struct HttpClient {
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

impl Failure {
    fn after_read(message: String) -> Failure {
        Failure {
            message,
            nothing_read: false,
        }
    }
}

impl HttpClient {
    /// A client for `base` (`http://host:port[/prefix]`) sending `Authorization: Bearer token`
    /// when given.
    pub fn new(base: &str, token: Option<String>) -> Result<HttpClient, String> {
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

    /// Sends one JSON request (`body` as JSON, `Accept: application/json`) and reads the whole
    /// response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, String> {
        let mut headers = vec![("Accept", "application/json")];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.send(method, path, &headers, body.unwrap_or_default().as_bytes())
    }

    /// Sends one request with `headers` and `body` as given and reads the whole response.
    /// `Host` and the bearer token are added, and `Content-Length` unless `headers` has one
    /// (for a body, or for `POST` and `PUT`).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, String> {
        let mut req = self.head(method, path, headers, body).into_bytes();
        req.extend_from_slice(body);
        let what = format!("{method} {path}");
        let reused = self.conn.is_some();
        match self.attempt(&req, &what) {
            Ok(r) => Ok(r),
            Err(f) if reused && f.nothing_read => {
                // The server closed an idle keep-alive connection: once more on a fresh one.
                self.conn = None;
                self.attempt(&req, &what).map_err(|f| f.message)
            }
            Err(f) => Err(f.message),
        }
    }

    /// Sends one request on a connection of its own and returns once the response's head is
    /// read, with the body left on the connection (e.g. `GET /v1/events`) and no read timeout.
    pub fn stream(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Stream, String> {
        let mut conn = self.connect().map_err(|f| f.message)?;
        let req = self.head(method, path, headers, &[]);
        conn.get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| format!("{method} {path}: write: {e}"))?;
        let head =
            read_head_inner(&mut conn).map_err(|f| format!("{method} {path}: {}", f.message))?;
        Ok(Stream {
            status: head.status,
            headers: head.headers,
            conn,
        })
    }

    fn connect(&self) -> Result<BufReader<TcpStream>, Failure> {
        let s = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
            .map_err(|e| Failure::after_read(format!("connect {}: {e}", self.addr)))?;
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
        Ok(BufReader::new(s))
    }

    /// The request's head, ending with the blank line.
    fn head(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\n",
            self.prefix, self.host
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let has_length = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        if !has_length && (!body.is_empty() || matches!(method, "POST" | "PUT")) {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req
    }

    /// Writes `req` (request `what`, for errors) on the kept connection, or a new one, and
    /// reads the response.
    fn attempt(&mut self, req: &[u8], what: &str) -> Result<Response, Failure> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::after_read("no connection".into()));
        };
        if let Err(e) = conn.get_mut().write_all(req) {
            self.conn = None;
            return Err(Failure {
                message: format!("{what}: write: {e}"),
                nothing_read: true,
            });
        }
        match read_response(conn) {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(f) => {
                self.conn = None;
                Err(Failure {
                    message: format!("{what}: {}", f.message),
                    nothing_read: f.nothing_read,
                })
            }
        }
    }
}

/// A response's status line and headers.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    /// HTTP/1.1 and no `Connection: close`.
    keep: bool,
}

fn read_head_inner<R: BufRead>(conn: &mut R) -> Result<Head, Failure> {
    let err = Failure::after_read;
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
    let mut keep = version == "HTTP/1.1";
    let mut headers = Vec::new();
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
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep = false;
            } else if v.contains("keep-alive") {
                keep = true;
            }
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(Head {
        status,
        headers,
        keep,
    })
}

/// Reads one chunk of a chunked body: `Ok(None)` after the last (zero-size) chunk and its
/// trailers, or when the connection ends.
pub fn read_chunk<R: BufRead>(conn: &mut R) -> Result<Option<Vec<u8>>, String> {
    let mut line = String::new();
    if conn
        .read_line(&mut line)
        .map_err(|e| format!("read chunk size: {e}"))?
        == 0
    {
        return Ok(None);
    }
    let size_text = line.trim().split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size_text, 16)
        .map_err(|_| format!("bad chunk size `{}`", line.trim()))?;
    if size == 0 {
        // Trailers until the empty line.
        loop {
            line.clear();
            let n = conn
                .read_line(&mut line)
                .map_err(|e| format!("read trailer: {e}"))?;
            if n == 0 || line.trim().is_empty() {
                return Ok(None);
            }
        }
    }
    if size > MAX_BODY {
        return Err("chunk too large".into());
    }
    let mut data = vec![0; size + 2];
    conn.read_exact(&mut data)
        .map_err(|e| format!("read chunk: {e}"))?;
    data.truncate(size);
    Ok(Some(data))
}

fn read_response(conn: &mut BufReader<TcpStream>) -> Result<(Response, bool), Failure> {
    let err = Failure::after_read;
    let Head {
        status,
        headers,
        mut keep,
    } = read_head_inner(conn)?;
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let content_length = match header(&headers, "content-length") {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| err(format!("bad Content-Length `{v}`")))?,
        ),
        None => None,
    };
    let mut body = Vec::new();
    if chunked {
        while let Some(chunk) = read_chunk(conn).map_err(err)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(err("response body too large".into()));
            }
            body.extend_from_slice(&chunk);
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
    Ok((
        Response {
            status,
            headers,
            body,
        },
        keep,
    ))
}
