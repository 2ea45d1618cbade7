//! Plain HTTP/1.1 against a local server (the preview, the demo's page), written by
//! hand so that a test controls every byte of the request.

use std::io::{Read, Write};
use std::net::TcpStream;

/// Sends `request` as it is to 127.0.0.1:`port`; returns the whole answer (head and
/// body). `Err` when nothing listens or the connection fails.
pub fn raw(port: u16, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `GET path`: (head, body) of the answer.
pub fn get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    split(raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )?)
}

/// `POST path` with a JSON body: (head, body) of the answer.
pub fn post_json(port: u16, path: &str, json: &str) -> std::io::Result<(String, String)> {
    split(raw(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        ),
    )?)
}

fn split(answer: String) -> std::io::Result<(String, String)> {
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) => Ok((head.to_string(), body.to_string())),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP answer: {answer:?}"),
        )),
    }
}
