//! Which requests the server answers at all: only those addressed to a loopback name
//! (`Host: localhost`, `127.x.y.z` or `[::1]`, any port). The stand-in binds 127.0.0.1,
//! but a page on another site can still reach it through DNS rebinding (its own name,
//! re-pointed at 127.0.0.1): its requests carry that name as `Host` and are refused
//! here, so they can read nothing (`/api/_calls` holds stderr tails) and post nothing.
//! A browser's cross-site POST is refused the same way by its `Origin`.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether a `Host` value (`name[:port]`) names this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        return v6.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether an `Origin` value (`scheme://host[:port]`, or `null`) is a page served from
/// loopback.
pub(super) fn is_loopback_origin(origin: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, host)| is_loopback_host(host))
}

/// Middleware: answers 421 (wrong `Host`) or 403 (foreign `Origin`) with a one-line
/// reason before any handler runs; passes everything else on.
pub(super) async fn loopback_only(req: Request, next: Next) -> Response {
    // HTTP/1.1 carries `Host`; HTTP/2 the URI's authority.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    let Some(host) = host else {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "no Host header: the Slack stand-in answers only requests to localhost or 127.0.0.1",
        );
    };
    if !is_loopback_host(&host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "the Slack stand-in answers only requests to localhost, 127.0.0.1 or [::1] \
             (this one named another host)",
        );
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("?"));
    if origin.is_some_and(|o| !is_loopback_origin(o)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the Slack stand-in takes no requests from pages of other sites",
        );
    }
    next.run(req).await
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{reason}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_any_port_pass() {
        for ok in [
            "localhost",
            "LocalHost:8080",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:3000",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:4000",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
    }

    #[test]
    fn every_other_name_is_refused() {
        for bad in [
            "evil.example",
            "evil.example:80",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "evil.localhost",
            "128.0.0.1",
            "0.0.0.0",
            "10.0.0.1:80",
            "[::2]",
            "[::1]x",
            "[::1]:",
            "localhost:",
            "localhost:http",
            "",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn origins_of_loopback_pages_pass() {
        assert!(is_loopback_origin("http://127.0.0.1:5555"));
        assert!(is_loopback_origin("http://localhost"));
        assert!(!is_loopback_origin("https://evil.example"));
        assert!(!is_loopback_origin("null"));
    }
}
