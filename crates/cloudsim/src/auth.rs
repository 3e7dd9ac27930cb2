//! Signature verification, as `ApiServer.verifyRequest` does it.
//!
//! Written independently of ferry's signer (`cloudstack::signing`) on purpose: a
//! simulator that shared the client's code would agree with it even when both are
//! wrong. This one follows the server side: it takes the *decoded* parameter values,
//! re-encodes them the way Java's `URLEncoder` does, sorts by the original names,
//! lowercases, and compares HMAC-SHA1 digests in constant time.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::error::CsError;
use crate::world::Credentials;

/// `URLEncoder.encode(value, "UTF-8")` followed by `replaceAll("\\+", "%20")`.
fn url_encoder(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push_str("%20"),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// `DateUtil.parseTZDateString`: `yyyy-MM-dd'T'HH:mm:ssZ` (`+0000`), and RFC 3339.
fn parse_expires(value: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%z")
        .ok()
        .or_else(|| chrono::DateTime::parse_from_rfc3339(value).ok())
}

fn find<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Checks the signature of a request whose decoded parameters are `params`.
pub fn verify(params: &[(String, String)], credentials: &Credentials) -> Result<(), CsError> {
    let api_key = find(params, "apikey").ok_or_else(CsError::unauthorized)?;
    let signature = find(params, "signature").ok_or_else(CsError::unauthorized)?;
    if api_key != credentials.api_key {
        return Err(CsError::unauthorized());
    }
    if find(params, "signatureversion") == Some("3") {
        let expires = find(params, "expires")
            .and_then(parse_expires)
            .ok_or_else(CsError::unauthorized)?;
        if expires <= chrono::Utc::now() {
            return Err(CsError::unauthorized());
        }
    }
    let mut names: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("signature"))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let unsigned = names
        .iter()
        .map(|(k, v)| format!("{k}={}", url_encoder(v)))
        .collect::<Vec<_>>()
        .join("&")
        .to_lowercase();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(credentials.secret_key.as_bytes()).expect("any key length");
    mac.update(unsigned.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        Ok(())
    } else {
        Err(CsError::unauthorized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_java() {
        assert_eq!(url_encoder("a b~*"), "a%20b%7E*");
        assert_eq!(url_encoder("é"), "%C3%A9");
    }

    #[test]
    fn both_expires_forms_parse() {
        assert!(parse_expires("2026-11-25T20:00:00+0000").is_some());
        assert!(parse_expires("2026-11-25T20:00:00Z").is_some());
        assert!(parse_expires("2026-11-25T20:00:00+01:00").is_some());
        assert!(parse_expires("tomorrow").is_none());
    }
}
