//! Listen addresses: how one is written, and the rule that a listener
//! reachable from other hosts requires a bearer token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use outbox::{Error, Result};

/// `HOST:PORT`, `[V6]:PORT`, or a bare `PORT` (bound on 127.0.0.1).
pub(super) fn parse_listen(key: &str, s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        Error::config(
            key,
            format!("`{s}` is not HOST:PORT with a numeric host (e.g. 127.0.0.1:8080) or a port"),
        )
    })
}

/// A listener reachable from other hosts must require a token.
pub(super) fn check_exposure(section: &str, addr: SocketAddr, has_token: bool) -> Result<()> {
    if addr.ip().is_loopback() || has_token {
        return Ok(());
    }
    Err(Error::config(
        format!("{section}.token_env"),
        format!(
            "{section}.listen {addr} is not a loopback address; set {section}.token_env to require a bearer token"
        ),
    ))
}
