//! Signing keys for access tokens, and the JWKS that publishes their public halves.
//!
//! One current key signs; previous keys (docs/design.md §2 `signing.previous_keys`) are only published and
//! accepted, so tokens signed before a rotation stay valid until they expire. Keys are PKCS#8 PEM
//! files. The algorithm is read from the key itself, never trusted from a token: the gateway looks a
//! token's `kid` up in [`KeySet`] and verifies with that key's own algorithm (RFC 8725 §3.1).
//!
//! `kid` is the RFC 7638 JWK thumbprint of the public key, so it is the same on every node and after
//! every restart without being stored anywhere.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rustls_pki_types::pem::{PemObject, SectionKind};
use serde::Serialize;
use serde_json::{Value, json};

use super::ACCESS_TOKEN_TYP;
use crate::config::{SigningAlgorithm, SigningConfig};
use crate::secrets::{b64url, sha256_b64url};

/// A PKCS#8 key is a few kilobytes at most (RSA 8192 ≈ 6 KiB of PEM). The bound keeps a mistaken
/// path (a log file, `/dev/zero`) from being read into memory whole.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

const CONVERT_HINT: &str = "convert it with `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: key file not found{hint}", path.display())]
    Missing { path: PathBuf, hint: &'static str },
    #[error("{}: cannot read the key file: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{}: the key is a {} key but signing.algorithm is {}",
        path.display(), found.as_str(), configured.as_str()
    )]
    AlgorithmMismatch {
        path: PathBuf,
        configured: SigningAlgorithm,
        found: SigningAlgorithm,
    },
    #[error("{}: already exists; refusing to overwrite an existing key", path.display())]
    Exists { path: PathBuf },
    #[error("{}: cannot write the key file: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("could not generate a {} key", alg.as_str())]
    Generate { alg: SigningAlgorithm },
}

impl KeyError {
    fn invalid(path: &Path, reason: impl Into<String>) -> KeyError {
        KeyError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// One problem found by [`KeySet::check`], with the `gateway.yaml` field that named the file.
/// Displays as `signing.key_file: keys/signing.pem: ...`; `tollgate check` prefixes the YAML file.
#[derive(Debug)]
pub struct KeyProblem {
    pub field: String,
    pub error: KeyError,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

/// A new private key for `alg` as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): ES256 → P-256,
/// EdDSA → Ed25519, RS256 → RSA 2048. The DER is PKCS#8 v1, the form `openssl genpkey` writes.
pub fn generate_pkcs8_pem(alg: SigningAlgorithm) -> Result<String, KeyError> {
    let failed = |_| KeyError::Generate { alg };
    let der: Vec<u8> = match alg {
        SigningAlgorithm::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|key| key.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        SigningAlgorithm::EdDsa => Ed25519KeyPair::generate()
            .and_then(|key| key.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        SigningAlgorithm::Rs256 => {
            let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?;
            AsDer::<Pkcs8V1Der>::as_der(&key)
                .map_err(failed)?
                .as_ref()
                .to_vec()
        }
    };
    Ok(pem_encode("PRIVATE KEY", &der))
}

/// Writes a private key file with mode 0600, creating missing parent folders (mode 0700).
///
/// The file is opened with `create_new`, so an existing key is never overwritten (that would
/// invalidate every token signed with it); that case is [`KeyError::Exists`]. A half-written file is
/// removed, so a failed write never leaves behind a file that later fails to load.
pub fn write_private_key(path: &Path, pem: &str) -> Result<(), KeyError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(parent).map_err(|source| KeyError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    // Set at creation, not chmod-ed afterwards: there is no moment in which the key is readable by
    // others.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            KeyError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    // sync_all: a key that vanishes in a crash right after start would invalidate the tokens
    // already issued with it.
    if let Err(source) = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
    {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(KeyError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// The public half of a key, in the form JWKs and RFC 7638 thumbprints need.
#[derive(Clone, PartialEq, Eq)]
enum PublicParts {
    /// P-256 affine coordinates, 32 bytes each.
    Ec { x: Vec<u8>, y: Vec<u8> },
    /// Ed25519 public key, 32 bytes.
    Okp { x: Vec<u8> },
    /// Unsigned big-endian modulus and exponent without leading zeros (RFC 7518 §6.3.1).
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicParts {
    fn alg(&self) -> SigningAlgorithm {
        match self {
            PublicParts::Ec { .. } => SigningAlgorithm::Es256,
            PublicParts::Okp { .. } => SigningAlgorithm::EdDsa,
            PublicParts::Rsa { .. } => SigningAlgorithm::Rs256,
        }
    }

    /// RFC 7638 §3.2: only the required members, in lexicographic order, no whitespace. Every value is
    /// base64url or a fixed name, so no JSON escaping can occur and `format!` is exact.
    fn thumbprint_input(&self) -> String {
        match self {
            PublicParts::Ec { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64url(x),
                b64url(y)
            ),
            PublicParts::Okp { x } => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64url(x))
            }
            PublicParts::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n))
            }
        }
    }

    fn thumbprint(&self) -> String {
        sha256_b64url(self.thumbprint_input().as_bytes())
    }

    /// The published JWK: the key members plus `kid`, `alg` and `use`.
    fn jwk(&self, kid: &str) -> Value {
        let alg = self.alg().as_str();
        match self {
            PublicParts::Ec { x, y } => json!({
                "kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y),
                "kid": kid, "alg": alg, "use": "sig",
            }),
            PublicParts::Okp { x } => json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64url(x),
                "kid": kid, "alg": alg, "use": "sig",
            }),
            PublicParts::Rsa { n, e } => json!({
                "kty": "RSA", "n": b64url(n), "e": b64url(e),
                "kid": kid, "alg": alg, "use": "sig",
            }),
        }
    }

    fn decoding_key(&self, path: &Path) -> Result<DecodingKey, KeyError> {
        let key = match self {
            PublicParts::Ec { x, y } => DecodingKey::from_ec_components(&b64url(x), &b64url(y)),
            PublicParts::Okp { x } => DecodingKey::from_ed_components(&b64url(x)),
            PublicParts::Rsa { n, e } => Ok(DecodingKey::from_rsa_raw_components(n, e)),
        };
        key.map_err(|e| KeyError::invalid(path, format!("unusable public key: {e}")))
    }
}

/// A signing key: the private key for signing, the public key for verifying, and its JWK.
pub struct SigningKey {
    /// RFC 7638 thumbprint (SHA-256, base64url) of the public key.
    pub kid: String,
    /// Detected from the key, not from configuration.
    pub alg: SigningAlgorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The parsed private key that [`SigningKey::sign`] uses. `jsonwebtoken::encode` parses the PKCS#8
    /// key again on every call (for P-256 that includes recomputing and checking the public point,
    /// about as much work as the signature itself); parsed once here, a token costs one signature.
    signer: Signer,
    /// base64url of the JOSE header for `typ: at+jwt`, the only header access tokens use.
    access_token_header: String,
    jwk: Value,
    /// A secret derived from the private key (HMAC-SHA256 under a fixed label) for what the gateway
    /// signs besides tokens, such as the login form's CSRF token. Derived rather than random so that
    /// every node that mounts the same key file accepts what another node issued.
    form_key: Vec<u8>,
}

/// A private key parsed once, for the algorithm of its [`SigningKey`].
enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

impl Signer {
    fn from_pkcs8(
        alg: SigningAlgorithm,
        der: &[u8],
    ) -> Result<Signer, aws_lc_rs::error::KeyRejected> {
        Ok(match alg {
            SigningAlgorithm::Es256 => Signer::Es256(EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
            )?),
            SigningAlgorithm::EdDsa => Signer::EdDsa(Ed25519KeyPair::from_pkcs8(der)?),
            SigningAlgorithm::Rs256 => Signer::Rs256(RsaKeyPair::from_pkcs8(der)?),
        })
    }

    /// The JWS signature of `message` in its JOSE form (ES256: r ‖ s, 64 bytes; RFC 7518 §3.4).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Signer::Es256(key) => Ok(key.sign(&rng, message)?.as_ref().to_vec()),
            Signer::EdDsa(key) => Ok(key.sign(message).as_ref().to_vec()),
            Signer::Rs256(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &rng,
                    message,
                    &mut signature,
                )?;
                Ok(signature)
            }
        }
    }
}

// Hand-written so that no `{:?}` can ever print private key material.
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 PEM private key file (ES256/P-256, EdDSA/Ed25519 or RS256/RSA 2048–8192).
    pub fn from_file(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = read_key_file(path, "")?;
        SigningKey::from_pkcs8_pem(&pem, path)
    }

    /// Parses a PKCS#8 PEM private key; `path` only names the source in errors.
    pub fn from_pkcs8_pem(pem: &[u8], path: &Path) -> Result<SigningKey, KeyError> {
        let der = pkcs8_der_from_pem(pem, path)?;
        let public = public_parts(&der, path)?;
        let alg = public.alg();
        let encoding = match alg {
            // jsonwebtoken hands these bytes straight to aws-lc-rs `from_pkcs8`, the same parser that
            // just accepted them.
            SigningAlgorithm::Es256 => EncodingKey::from_ec_der(&der),
            SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(&der),
            // For RSA jsonwebtoken wants PKCS#1, which it extracts from a PKCS#8 PEM. Re-encoding our
            // DER (instead of passing the file through) guarantees it reads the block we validated,
            // not some other block of the file.
            SigningAlgorithm::Rs256 => {
                EncodingKey::from_rsa_pem(pem_encode("PRIVATE KEY", &der).as_bytes())
                    .map_err(|e| KeyError::invalid(path, format!("unusable RSA key: {e}")))?
            }
        };
        let decoding = public.decoding_key(path)?;
        let signer = Signer::from_pkcs8(alg, &der)
            .map_err(|e| KeyError::invalid(path, format!("unusable private key: {e}")))?;
        let kid = public.thumbprint();
        let form_key = crate::secrets::hmac_sha256_hex(&der, b"tollgate form key v1").into_bytes();
        let access_token_header = encode_header(&jose_header(alg, &kid, ACCESS_TOKEN_TYP))
            .map_err(|e| KeyError::invalid(path, format!("cannot encode the JWS header: {e}")))?;
        let key = SigningKey {
            jwk: public.jwk(&kid),
            kid,
            alg,
            encoding,
            decoding,
            form_key,
            signer,
            access_token_header,
        };
        key.self_test(path)?;
        Ok(key)
    }

    /// Signs and verifies a fixed message once, so a key whose private and public halves were
    /// assembled inconsistently fails at startup (or in `tollgate check`), not at the first token.
    fn self_test(&self, path: &Path) -> Result<(), KeyError> {
        const MESSAGE: &[u8] = b"tollgate signing key self-test";
        let alg = self.jwt_algorithm();
        let signature = jsonwebtoken::crypto::sign(MESSAGE, &self.encoding, alg)
            .map_err(|e| KeyError::invalid(path, format!("the key cannot sign: {e}")))?;
        // Tokens are signed by `signer`, not through `encoding`: its signatures must verify too.
        let token_signature = self
            .signer
            .sign(MESSAGE)
            .map(|s| URL_SAFE_NO_PAD.encode(s))
            .map_err(|_| KeyError::invalid(path, "the key cannot sign"))?;
        for signature in [signature, token_signature] {
            if !matches!(
                jsonwebtoken::crypto::verify(&signature, MESSAGE, &self.decoding, alg),
                Ok(true)
            ) {
                return Err(KeyError::invalid(
                    path,
                    "the key failed its sign-and-verify self-test",
                ));
            }
        }
        Ok(())
    }

    /// The JOSE algorithm of this key; the only algorithm a token verified with it may use.
    pub fn jwt_algorithm(&self) -> Algorithm {
        jwt_algorithm(self.alg)
    }

    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The published JWK: `kty`, `crv`/`x`/`y` or `n`/`e`, plus `kid`, `alg`, `use: "sig"`.
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// A JWS header with this key's `alg` and `kid` and the given `typ` (e.g. `at+jwt`, RFC 9068).
    pub fn header(&self, typ: &str) -> Header {
        jose_header(self.alg, &self.kid, typ)
    }

    /// Signs `claims` as a JWT (JWS compact serialization) with [`SigningKey::header`], exactly as
    /// `jsonwebtoken::encode` lays it out, but with the key parsed once.
    pub fn sign<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let other_header;
        let header = if typ == ACCESS_TOKEN_TYP {
            self.access_token_header.as_str()
        } else {
            other_header = encode_header(&self.header(typ))?;
            other_header.as_str()
        };
        let claims = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(header.len() + claims.len() * 4 / 3 + 4 + 360);
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self
            .signer
            .sign(token.as_bytes())
            .map_err(|_| jsonwebtoken::errors::Error::from(ErrorKind::InvalidKeyFormat))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

/// The JOSE header of a token signed with a key of `alg` named `kid`.
fn jose_header(alg: SigningAlgorithm, kid: &str, typ: &str) -> Header {
    let mut header = Header::new(jwt_algorithm(alg));
    header.kid = Some(kid.to_string());
    header.typ = Some(typ.to_string());
    header
}

fn encode_header(header: &Header) -> Result<String, jsonwebtoken::errors::Error> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?))
}

/// The JOSE algorithm for a configured signing algorithm.
pub fn jwt_algorithm(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::Es256 => Algorithm::ES256,
        SigningAlgorithm::EdDsa => Algorithm::EdDSA,
        SigningAlgorithm::Rs256 => Algorithm::RS256,
    }
}

/// The current signing key and every key whose signatures are still accepted, by `kid`.
#[derive(Debug, Clone)]
pub struct KeySet {
    current: Arc<SigningKey>,
    by_kid: HashMap<String, Arc<SigningKey>>,
    /// Built once: the set never changes after loading (a reload builds a new `KeySet`).
    jwks: Value,
}

impl KeySet {
    /// Loads the keys named by `signing`. When `key_file` is missing and `generate` is true, a new key
    /// of `signing.algorithm` is generated and written first (mode 0600). The current key must be of
    /// the configured algorithm; previous keys keep whatever algorithm they have.
    pub fn load(cfg: &SigningConfig) -> Result<KeySet, KeyError> {
        let path = &cfg.key_file;
        let mut generated = false;
        if cfg.generate && !exists(path)? {
            let pem = generate_pkcs8_pem(cfg.algorithm)?;
            match write_private_key(path, &pem) {
                Ok(()) => generated = true,
                // Another process sharing the folder created it between our check and our write:
                // use its key rather than fail or overwrite it.
                Err(KeyError::Exists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let current = load_current(cfg)?;
        if generated {
            tracing::info!(
                path = %path.display(),
                alg = current.alg.as_str(),
                kid = %current.kid,
                "generated a new signing key"
            );
        }
        let previous = cfg
            .previous_keys
            .iter()
            .map(|p| SigningKey::from_file(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeySet::from_keys(current, previous))
    }

    /// Validates the keys named by `signing` without generating or writing anything, reporting every
    /// problem (for `tollgate check`). A missing `key_file` is fine when `generate` is true.
    pub fn check(cfg: &SigningConfig) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        let will_generate = cfg.generate && matches!(cfg.key_file.try_exists(), Ok(false));
        if !will_generate && let Err(error) = load_current(cfg) {
            problems.push(KeyProblem {
                field: "signing.key_file".to_string(),
                error,
            });
        }
        for (i, path) in cfg.previous_keys.iter().enumerate() {
            if let Err(error) = SigningKey::from_file(path) {
                problems.push(KeyProblem {
                    field: format!("signing.previous_keys[{i}]"),
                    error,
                });
            }
        }
        problems
    }

    /// Builds a set from already loaded keys (also handy in tests). A previous key with the same
    /// `kid` as an earlier one is the same key listed twice and is skipped.
    pub fn from_keys(current: SigningKey, previous: Vec<SigningKey>) -> KeySet {
        let current = Arc::new(current);
        let mut by_kid = HashMap::new();
        let mut published = vec![current.public_jwk().clone()];
        by_kid.insert(current.kid.clone(), current.clone());
        for key in previous {
            if by_kid.contains_key(&key.kid) {
                continue;
            }
            published.push(key.public_jwk().clone());
            by_kid.insert(key.kid.clone(), Arc::new(key));
        }
        KeySet {
            current,
            by_kid,
            jwks: json!({ "keys": published }),
        }
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &Arc<SigningKey> {
        &self.current
    }

    /// The current key's derived secret for forms (see [`SigningKey`]); the same on every node.
    pub fn form_key(&self) -> &[u8] {
        &self.current.form_key
    }

    /// The key with this `kid` (current or previous), if any.
    pub fn get(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.by_kid.get(kid)
    }

    /// `{"keys": [...]}`: the current key first, then the previous keys in configuration order.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }
}

fn load_current(cfg: &SigningConfig) -> Result<SigningKey, KeyError> {
    let path = &cfg.key_file;
    let hint = if cfg.generate {
        ""
    } else {
        " (create it with `tollgate keygen` or set signing.generate: true)"
    };
    let pem = read_key_file(path, hint)?;
    let key = SigningKey::from_pkcs8_pem(&pem, path)?;
    if key.alg != cfg.algorithm {
        return Err(KeyError::AlgorithmMismatch {
            path: path.to_path_buf(),
            configured: cfg.algorithm,
            found: key.alg,
        });
    }
    Ok(key)
}

fn exists(path: &Path) -> Result<bool, KeyError> {
    path.try_exists().map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_key_file(path: &Path, missing_hint: &'static str) -> Result<Vec<u8>, KeyError> {
    let file = fs::File::open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            KeyError::Missing {
                path: path.to_path_buf(),
                hint: missing_hint,
            }
        } else {
            KeyError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    #[cfg(unix)]
    if let Ok(meta) = file.metadata() {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the signing key file is accessible to other users; `chmod 600` it"
            );
        }
    }
    let mut pem = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if pem.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::invalid(
            path,
            "larger than 1 MiB; not a PEM key file",
        ));
    }
    Ok(pem)
}

/// The DER of the one `PRIVATE KEY` block in `pem`. Other PEM blocks (a certificate next to the key)
/// are ignored; the other private key formats get an error that says how to convert them.
fn pkcs8_der_from_pem(pem: &[u8], path: &Path) -> Result<Vec<u8>, KeyError> {
    // rustls-pki-types skips sections it does not know, so look for the encrypted form explicitly
    // to give a useful message instead of "no private key".
    if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(KeyError::invalid(
            path,
            "the key is encrypted; tollgate needs an unencrypted PKCS#8 key (`openssl pkcs8 -topk8 -nocrypt`)",
        ));
    }
    let mut found = None;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) =
            section.map_err(|e| KeyError::invalid(path, format!("not a valid PEM file: {e}")))?;
        match kind {
            SectionKind::PrivateKey if found.is_some() => {
                return Err(KeyError::invalid(
                    path,
                    "more than one PRIVATE KEY block; put one key in each file",
                ));
            }
            SectionKind::PrivateKey => found = Some(der),
            SectionKind::RsaPrivateKey => {
                return Err(KeyError::invalid(
                    path,
                    format!("a PKCS#1 RSA PRIVATE KEY, not PKCS#8; {CONVERT_HINT}"),
                ));
            }
            SectionKind::EcPrivateKey => {
                return Err(KeyError::invalid(
                    path,
                    format!("a SEC1 EC PRIVATE KEY, not PKCS#8; {CONVERT_HINT}"),
                ));
            }
            _ => {}
        }
    }
    found.ok_or_else(|| {
        KeyError::invalid(
            path,
            "no `-----BEGIN PRIVATE KEY-----` block; expected a PKCS#8 PEM private key",
        )
    })
}

/// Finds the key type by letting each supported parser try: exactly one of them accepts a given
/// PKCS#8 document, and each checks the key's consistency while parsing.
fn public_parts(der: &[u8], path: &Path) -> Result<PublicParts, KeyError> {
    if let Ok(key) = Ed25519KeyPair::from_pkcs8(der) {
        return Ok(PublicParts::Okp {
            x: key.public_key().as_ref().to_vec(),
        });
    }
    if let Ok(key) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
        // Uncompressed SEC1 point: 0x04 || x || y.
        return match key.public_key().as_ref() {
            [0x04, xy @ ..] if xy.len() == 64 => {
                let (x, y) = xy.split_at(32);
                Ok(PublicParts::Ec {
                    x: x.to_vec(),
                    y: y.to_vec(),
                })
            }
            _ => Err(KeyError::invalid(
                path,
                "unexpected P-256 public key encoding",
            )),
        };
    }
    if let Ok(key) = RsaKeyPair::from_pkcs8(der) {
        let components = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
        return Ok(PublicParts::Rsa {
            n: strip_leading_zeros(components.n),
            e: strip_leading_zeros(components.e),
        });
    }
    let other_curve = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der).is_ok()
        || EcdsaKeyPair::from_pkcs8(&ECDSA_P521_SHA512_FIXED_SIGNING, der).is_ok();
    Err(KeyError::invalid(
        path,
        if other_curve {
            "an EC key on a curve other than P-256; ES256 needs a P-256 key"
        } else {
            "not an Ed25519, ECDSA P-256 or RSA (2048 to 8192 bits) private key"
        },
    ))
}

/// JWK integers are unsigned big-endian without leading zero octets (RFC 7518 §6.3.1); aws-lc
/// already encodes them so, this only makes the thumbprint independent of that detail.
fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes
        .iter()
        .take(bytes.len().saturating_sub(1))
        .take_while(|&&b| b == 0)
        .count();
    bytes.drain(..zeros);
    bytes
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // RFC 7468 §2: lines of 64 characters. The base64 alphabet is ASCII, so byte chunks are chars.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::Validation;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Claims {
        sub: String,
        exp: u64,
    }

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            exp: jsonwebtoken::get_current_timestamp() + 300,
        }
    }

    fn config(key_file: PathBuf, alg: SigningAlgorithm, generate: bool) -> SigningConfig {
        SigningConfig {
            algorithm: alg,
            key_file,
            generate,
            previous_keys: Vec::new(),
        }
    }

    fn write_key(dir: &Path, name: &str, alg: SigningAlgorithm) -> PathBuf {
        let path = dir.join(name);
        let pem = generate_pkcs8_pem(alg).expect("generate");
        write_private_key(&path, &pem).expect("write");
        path
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    /// RFC 7638 computed independently of the code under test: the required members of the
    /// published JWK, sorted by a BTreeMap, serialised compactly by serde_json.
    fn rfc7638(jwk: &Value) -> String {
        let required: &[&str] = match jwk["kty"].as_str() {
            Some("EC") => &["crv", "kty", "x", "y"],
            Some("OKP") => &["crv", "kty", "x"],
            Some("RSA") => &["e", "kty", "n"],
            other => panic!("unexpected kty {other:?}"),
        };
        let members: BTreeMap<&str, &str> = required
            .iter()
            .map(|m| (*m, jwk[*m].as_str().expect("string member")))
            .collect();
        let canonical = serde_json::to_string(&members).expect("json");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    fn verify(key: &SigningKey, token: &str) -> jsonwebtoken::errors::Result<Claims> {
        let validation = Validation::new(key.jwt_algorithm());
        jsonwebtoken::decode::<Claims>(token, key.decoding_key(), &validation).map(|d| d.claims)
    }

    fn round_trip(alg: SigningAlgorithm) {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys_dir = dir.path().join("keys").join("nested");
        let path = keys_dir.join("signing.pem");

        let pem = generate_pkcs8_pem(alg).expect("generate");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg:?}");
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        write_private_key(&path, &pem).expect("write");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&keys_dir), 0o700);

        // Never overwritten.
        let other = generate_pkcs8_pem(alg).expect("generate");
        let err = write_private_key(&path, &other).expect_err("must refuse to overwrite");
        assert!(matches!(err, KeyError::Exists { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert_eq!(fs::read_to_string(&path).expect("read"), pem);

        let cfg = config(path.clone(), alg, false);
        let set = KeySet::load(&cfg).expect("load");
        let key = set.current();
        assert_eq!(key.alg, alg);
        assert_eq!(key.jwt_algorithm(), jwt_algorithm(alg));

        // Sign with the EncodingKey directly and through `sign`; verify with the DecodingKey.
        let mut header = Header::new(key.jwt_algorithm());
        header.kid = Some(key.kid.clone());
        let direct = jsonwebtoken::encode(&header, &claims(), key.encoding_key()).expect("encode");
        assert_eq!(verify(key, &direct).expect("verify").sub, "alice");
        let token = key.sign("at+jwt", &claims()).expect("sign");
        let decoded_header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(decoded_header.kid.as_deref(), Some(key.kid.as_str()));
        assert_eq!(decoded_header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(decoded_header.alg, jwt_algorithm(alg));
        assert_eq!(verify(key, &token).expect("verify").sub, "alice");

        // A token from another key of the same algorithm does not verify.
        let stranger =
            SigningKey::from_pkcs8_pem(other.as_bytes(), Path::new("<other>")).expect("other key");
        let forged = stranger.sign("at+jwt", &claims()).expect("sign");
        assert!(verify(key, &forged).is_err());

        // kid: stable across loads, equal to the RFC 7638 thumbprint of the published JWK.
        let again = KeySet::load(&cfg).expect("reload");
        assert_eq!(again.current().kid, key.kid);
        let jwk = key.public_jwk();
        assert_eq!(rfc7638(jwk), key.kid);
        assert_eq!(jwk["kid"], key.kid.as_str());
        assert_eq!(jwk["alg"], alg.as_str());
        assert_eq!(jwk["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{private} published");
        }
        let b64 = |m: &str| {
            URL_SAFE_NO_PAD
                .decode(jwk[m].as_str().expect("member"))
                .expect("base64url")
        };
        match alg {
            SigningAlgorithm::Es256 => {
                assert_eq!(
                    (jwk["kty"].as_str(), jwk["crv"].as_str()),
                    (Some("EC"), Some("P-256"))
                );
                assert_eq!((b64("x").len(), b64("y").len()), (32, 32));
            }
            SigningAlgorithm::EdDsa => {
                assert_eq!(
                    (jwk["kty"].as_str(), jwk["crv"].as_str()),
                    (Some("OKP"), Some("Ed25519"))
                );
                assert_eq!(b64("x").len(), 32);
            }
            SigningAlgorithm::Rs256 => {
                assert_eq!(jwk["kty"], "RSA");
                assert_eq!(b64("n").len(), 256);
                assert_eq!(jwk["e"], "AQAB");
            }
        }
        assert_eq!(set.jwks()["keys"][0], *jwk);
        assert!(set.get(&key.kid).is_some());
        assert!(set.get("unknown").is_none());
        assert!(KeySet::check(&cfg).is_empty());
    }

    #[test]
    fn es256_round_trip() {
        round_trip(SigningAlgorithm::Es256);
    }

    #[test]
    fn eddsa_round_trip() {
        round_trip(SigningAlgorithm::EdDsa);
    }

    #[test]
    fn rs256_round_trip() {
        round_trip(SigningAlgorithm::Rs256);
    }

    #[test]
    fn rfc7638_example_vector() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let parts = PublicParts::Rsa {
            n: URL_SAFE_NO_PAD.decode(n).expect("n"),
            e: URL_SAFE_NO_PAD.decode("AQAB").expect("e"),
        };
        assert_eq!(
            parts.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        // A leading zero octet must not change the thumbprint.
        let mut padded = vec![0u8];
        padded.extend(URL_SAFE_NO_PAD.decode(n).expect("n"));
        assert_eq!(
            b64url(&strip_leading_zeros(padded)),
            n,
            "leading zeros are stripped"
        );
    }

    #[test]
    fn generate_when_missing_then_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/signing.pem");
        let cfg = config(path.clone(), SigningAlgorithm::Es256, true);
        assert!(KeySet::check(&cfg).is_empty(), "missing + generate is fine");
        assert!(!path.exists(), "check never generates");

        let first = KeySet::load(&cfg).expect("load generates");
        assert!(path.exists());
        assert_eq!(mode(&path), 0o600);
        let second = KeySet::load(&cfg).expect("load reuses");
        assert_eq!(first.current().kid, second.current().kid);
    }

    #[test]
    fn missing_without_generate_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.pem");
        let cfg = config(path.clone(), SigningAlgorithm::Es256, false);
        let err = KeySet::load(&cfg).expect_err("missing");
        assert!(matches!(err, KeyError::Missing { .. }));
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(err.to_string().contains("tollgate keygen"));
        let problems = KeySet::check(&cfg);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().starts_with("signing.key_file: "));
        assert!(!path.exists());
    }

    #[test]
    fn algorithm_mismatch_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_key(dir.path(), "ec.pem", SigningAlgorithm::Es256);
        for configured in [SigningAlgorithm::EdDsa, SigningAlgorithm::Rs256] {
            let cfg = config(path.clone(), configured, true);
            let err = KeySet::load(&cfg).expect_err("mismatch");
            let msg = err.to_string();
            assert!(matches!(err, KeyError::AlgorithmMismatch { .. }), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(
                msg.contains("ES256") && msg.contains(configured.as_str()),
                "{msg}"
            );
            let problems = KeySet::check(&cfg);
            assert_eq!(problems.len(), 1);
            assert_eq!(problems[0].field, "signing.key_file");
        }
    }

    #[test]
    fn garbage_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [(&str, &[u8], &str); 7] = [
            ("empty.pem", b"", "no `-----BEGIN PRIVATE KEY-----` block"),
            ("text.pem", b"hello, world\n", "no `-----BEGIN PRIVATE KEY-----` block"),
            (
                "bad-b64.pem",
                b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
                "not a valid PEM file",
            ),
            (
                "not-a-key.pem",
                b"-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n",
                "not an Ed25519, ECDSA P-256 or RSA",
            ),
            (
                "unterminated.pem",
                b"-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n",
                "not a valid PEM file",
            ),
            (
                "pkcs1.pem",
                b"-----BEGIN RSA PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END RSA PRIVATE KEY-----\n",
                "openssl pkcs8 -topk8",
            ),
            (
                "encrypted.pem",
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
        ];
        for (name, contents, expected) in cases {
            let path = dir.path().join(name);
            fs::write(&path, contents).expect("write");
            let err = SigningKey::from_file(&path).expect_err(name);
            let msg = err.to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(msg.contains(expected), "{name}: {msg}");
        }

        // Two keys in one file are ambiguous.
        let two = format!(
            "{}{}",
            generate_pkcs8_pem(SigningAlgorithm::EdDsa).expect("gen"),
            generate_pkcs8_pem(SigningAlgorithm::EdDsa).expect("gen")
        );
        let path = dir.path().join("two.pem");
        fs::write(&path, two).expect("write");
        let err = SigningKey::from_file(&path).expect_err("two keys");
        assert!(err.to_string().contains("more than one"), "{err}");

        // Garbage as a previous key is reported under its field.
        let current = write_key(dir.path(), "current.pem", SigningAlgorithm::EdDsa);
        let mut cfg = config(current, SigningAlgorithm::EdDsa, false);
        cfg.previous_keys = vec![dir.path().join("text.pem"), dir.path().join("absent.pem")];
        assert!(KeySet::load(&cfg).is_err());
        let problems: Vec<String> = KeySet::check(&cfg).iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("signing.previous_keys[0]: "),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("signing.previous_keys[1]: "),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("absent.pem: key file not found"),
            "{problems:?}"
        );
    }

    #[test]
    fn p384_key_gets_a_specific_message() {
        let der = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .and_then(|k| k.to_pkcs8v1())
            .expect("p384");
        let pem = pem_encode("PRIVATE KEY", der.as_ref());
        let err =
            SigningKey::from_pkcs8_pem(pem.as_bytes(), Path::new("p384.pem")).expect_err("p384");
        assert!(err.to_string().contains("curve other than P-256"), "{err}");
    }

    #[test]
    fn pkcs8_v2_ed25519_and_surrounding_blocks_are_accepted() {
        // PKCS#8 v2 (with the public key) as some tools write it, after an unrelated PEM block.
        let der = Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8())
            .expect("ed25519 v2");
        let pem = format!(
            "comment line\n{}{}",
            pem_encode("CERTIFICATE", b"not parsed"),
            pem_encode("PRIVATE KEY", der.as_ref())
        );
        let key = SigningKey::from_pkcs8_pem(pem.as_bytes(), Path::new("v2.pem")).expect("v2");
        assert_eq!(key.alg, SigningAlgorithm::EdDsa);
        let token = key.sign("at+jwt", &claims()).expect("sign");
        assert!(verify(&key, &token).is_ok());
    }

    #[test]
    fn previous_keys_are_published_and_keep_their_algorithm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let current = write_key(dir.path(), "current.pem", SigningAlgorithm::EdDsa);
        let old_ec = write_key(dir.path(), "old-ec.pem", SigningAlgorithm::Es256);
        let old_rsa = write_key(dir.path(), "old-rsa.pem", SigningAlgorithm::Rs256);
        let mut cfg = config(current.clone(), SigningAlgorithm::EdDsa, false);
        // The current key listed again as a previous key is published once.
        cfg.previous_keys = vec![old_ec.clone(), current, old_rsa.clone()];
        assert!(KeySet::check(&cfg).is_empty());
        let set = KeySet::load(&cfg).expect("load");

        let ec = SigningKey::from_file(&old_ec).expect("ec");
        let rsa = SigningKey::from_file(&old_rsa).expect("rsa");
        let kids: Vec<&str> = set.jwks()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid"))
            .collect();
        assert_eq!(
            kids,
            [
                set.current().kid.as_str(),
                ec.kid.as_str(),
                rsa.kid.as_str()
            ]
        );
        assert_eq!(set.jwks()["keys"][1]["alg"], "ES256");
        assert_eq!(set.jwks()["keys"][2]["alg"], "RS256");

        // A token signed before the rotation verifies with the key its kid names.
        let old_token = ec.sign("at+jwt", &claims()).expect("sign");
        let kid = jsonwebtoken::decode_header(&old_token)
            .expect("header")
            .kid
            .expect("kid");
        let found = set.get(&kid).expect("previous key by kid");
        assert_eq!(found.alg, SigningAlgorithm::Es256);
        assert!(verify(found, &old_token).is_ok());
        // ...and not with the current key.
        assert!(verify(set.current(), &old_token).is_err());
    }

    #[test]
    fn key_set_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KeySet>();
        assert_send_sync::<SigningKey>();
    }

    #[test]
    fn debug_never_shows_key_material() {
        let pem = generate_pkcs8_pem(SigningAlgorithm::Es256).expect("gen");
        let key = SigningKey::from_pkcs8_pem(pem.as_bytes(), Path::new("k.pem")).expect("key");
        let set = KeySet::from_keys(key, Vec::new());
        let debug = format!("{set:?}");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&body[..20]));
        assert!(debug.contains(&set.current().kid));
    }
}
