//! PKCE (RFC 7636), S256 only: `plain` is never accepted (RFC 9700 §2.1.1), so a challenge is always
//! the base64url SHA-256 of the verifier.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::secrets::{constant_time_eq, sha256_b64url};

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An S256 challenge is the base64url (no padding) of a 32-byte digest: exactly 43 characters that
/// decode to 32 bytes. Anything else can never match a verifier, so it is refused at the authorize
/// endpoint instead of failing later at the token endpoint.
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|digest| digest.len() == 32)
}

/// The S256 challenge of a verifier (for clients and tests).
pub fn challenge_s256(verifier: &str) -> String {
    sha256_b64url(verifier.as_bytes())
}

/// True when `verifier` is well-formed and its S256 challenge equals `challenge`.
///
/// A malformed verifier is `false` here too; the token endpoint checks [`valid_verifier`] first to
/// answer `invalid_request` rather than `invalid_grant`.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    valid_verifier(verifier)
        && constant_time_eq(challenge_s256(verifier).as_bytes(), challenge.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_vector() {
        assert_eq!(challenge_s256(VERIFIER), CHALLENGE);
        assert!(verify_s256(VERIFIER, CHALLENGE));
    }

    #[test]
    fn wrong_verifier_or_challenge_fails() {
        let other = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj";
        assert!(!verify_s256(other, CHALLENGE));
        assert!(!verify_s256(
            VERIFIER,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        // plain (challenge == verifier) is never accepted.
        assert!(!verify_s256(VERIFIER, VERIFIER));
        assert!(!verify_s256(VERIFIER, ""));
    }

    #[test]
    fn verifier_syntax() {
        assert!(valid_verifier(VERIFIER));
        assert!(valid_verifier(&"a".repeat(43)));
        assert!(valid_verifier(&"~._-".repeat(32)));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(valid_verifier(&"a".repeat(128)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(42))));
        assert!(!valid_verifier(&format!("{} ", "a".repeat(42))));
        assert!(!valid_verifier(&format!("{}é", "a".repeat(41))));
        // A malformed verifier never verifies, even against its own hash.
        let short = "a".repeat(42);
        assert!(!verify_s256(&short, &challenge_s256(&short)));
    }

    #[test]
    fn challenge_syntax() {
        assert!(valid_challenge(CHALLENGE));
        assert!(!valid_challenge(&CHALLENGE[..42]));
        assert!(!valid_challenge(&format!("{CHALLENGE}=")));
        assert!(!valid_challenge(&CHALLENGE.replace('-', "+")));
        assert!(!valid_challenge(VERIFIER.trim_end_matches('k'))); // 42 chars
        assert!(!valid_challenge(""));
    }
}
