//! What the JetStream source and sink share about reaching NATS: the server
//! list of a `url` setting.

use async_nats::ServerAddr;

use crate::error::ConfigError;

/// The servers of a `url` setting: one URL, or several separated by commas
/// (the client moves to another when its server goes away).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key` when the list is empty or an entry
/// does not parse.
pub(crate) fn server_addrs(key: &str, url: &str) -> Result<Vec<ServerAddr>, ConfigError> {
    let addrs = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<ServerAddr>()
                .map_err(|e| ConfigError::invalid(key, format!("`{u}` is not a NATS URL: {e}")))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    if addrs.is_empty() {
        return Err(ConfigError::invalid(key, "is empty"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_more_urls() {
        let a = server_addrs("k", "nats://a:4222, nats://b:4223").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].port(), 4223);
        assert_eq!(server_addrs("k", "nats://h").unwrap().len(), 1);
        for bad in ["", " , ", "nats://h:notaport"] {
            let e = server_addrs("source.url", bad).unwrap_err();
            assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
            assert!(e.to_string().contains("source.url"), "{e}");
        }
    }
}
