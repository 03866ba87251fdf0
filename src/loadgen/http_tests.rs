//! The HTTP client's own tests (beside `http.rs`, which the integration tests also compile).
use super::http::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

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
        s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
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

#[test]
fn send_passes_headers_and_stream_leaves_the_body() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let head = |s: &TcpStream| {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                head.push_str(&line);
                if line == "\r\n" {
                    return head;
                }
            }
        };
        let (mut s, _) = l.accept().unwrap();
        let h = head(&s);
        s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap();
        let (mut s2, _) = l.accept().unwrap();
        let h2 = head(&s2);
        s2.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .unwrap();
        s2.write_all(b"0\r\n\r\n").unwrap();
        drop(s);
        (h, h2)
    });
    let mut c = HttpClient::new(&format!("http://{addr}"), None).unwrap();
    let r = c
        .send(
            "POST",
            "/x",
            &[("Content-Length", "300000"), ("Expect", "100-continue")],
            b"",
        )
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-a"), r.body.as_str()),
        (413, Some("1"), "{}")
    );
    let mut st = c
        .stream("GET", "/events", &[("Accept", "text/event-stream")])
        .unwrap();
    assert!(st.status == 200 && st.chunked(), "{:?}", st.headers);
    assert_eq!(
        read_chunk(&mut st.conn).unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(read_chunk(&mut st.conn).unwrap(), None);
    let (h, h2) = server.join().unwrap();
    assert!(h.starts_with("POST /x HTTP/1.1\r\n"), "{h}");
    assert_eq!(h.matches("Content-Length").count(), 1, "{h}");
    assert!(
        h.contains("Content-Length: 300000\r\nExpect: 100-continue\r\n"),
        "{h}"
    );
    assert!(h2.contains("Accept: text/event-stream\r\n"), "{h2}");
}
