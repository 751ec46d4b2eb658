//! HS256 JSON Web Tokens, the small subset the v1 protocol needs: sign, and verify (the
//! algorithm, the signature in constant time, the expiry).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// The publish key it was issued to.
    pub(crate) sub: String,
    /// The organisation.
    pub(crate) org: String,
    /// Issued at, epoch seconds.
    pub(crate) iat: u64,
    /// Expires at, epoch seconds.
    pub(crate) exp: u64,
}

/// Why a token was refused (never shown to the caller in detail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JwtError {
    Malformed,
    Algorithm,
    Signature,
    Expired,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

fn mac(key: &[u8]) -> HmacSha256 {
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

pub(crate) fn sign(key: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

pub(crate) fn verify(key: &[u8], token: &str, now_secs: u64) -> Result<Claims, JwtError> {
    if token.len() > 4096 {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(key);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    m.verify_slice(&sig).map_err(|_| JwtError::Signature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if claims.exp <= now_secs {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "pk".into(),
            org: "acme".into(),
            iat: 100,
            exp,
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let t = sign(b"k", &claims(200));
        assert_eq!(verify(b"k", &t, 150), Ok(claims(200)));
        assert_eq!(verify(b"k", &t, 200), Err(JwtError::Expired));
        assert_eq!(verify(b"other", &t, 150), Err(JwtError::Signature));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let t = sign(b"k", &claims(200));
        let (head, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                org: "other".into(),
                ..claims(200)
            })
            .unwrap(),
        );
        assert_eq!(
            verify(b"k", &format!("{head}.{forged}.{sig}"), 150),
            Err(JwtError::Signature)
        );
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        assert_eq!(
            verify(b"k", &format!("{none}.{forged}."), 150),
            Err(JwtError::Algorithm)
        );
        for bad in ["", "a", "a.b", "a.b.c", "a.b.c.d", "...", &"x".repeat(5000)] {
            assert!(verify(b"k", bad, 150).is_err(), "{bad}");
        }
    }
}
