//! What every conversation with an identity provider shares: where it may be reached,
//! and how its error codes are shown.

/// Plain http only on loopback (tests, sidecars): over a network it would expose codes,
/// secrets and tokens.
pub(crate) fn secure_enough(url: &url::Url) -> bool {
    url.scheme() == "https"
        || match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        }
}

/// A provider's error code as shown or logged: an OAuth error code (`access_denied`), or
/// a fixed word when it is not one (the text is the provider's, or whoever sent it).
pub(crate) fn oauth_error_code(error: &str) -> String {
    if !error.is_empty()
        && error.len() <= 64
        && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        error.to_string()
    } else {
        "an unknown error".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_are_shown_as_codes_only() {
        assert_eq!(oauth_error_code("access_denied"), "access_denied");
        assert_eq!(
            oauth_error_code("<b>Your account is locked, call 555</b>"),
            "an unknown error"
        );
        assert_eq!(oauth_error_code(""), "an unknown error");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(secure_enough(&url("https://idp.example/")));
        assert!(secure_enough(&url("http://127.0.0.1:8080/default")));
        assert!(secure_enough(&url("http://localhost/x")));
        assert!(!secure_enough(&url("http://idp.example/")));
    }
}
