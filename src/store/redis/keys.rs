//! Every key the store uses, built in one place; `docs/redis.md` lists them with their TTLs and the
//! script that writes each.

use super::*;

/// Every key the store uses; see `docs/redis.md`.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub(super) prefix: String,
    /// `<prefix>{tokens}:`: sessions, refresh tokens and revocations share one hash slot.
    pub(super) tokens: String,
    pub(super) channel: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            tokens: format!("{prefix}{{tokens}}:"),
            channel: format!("{prefix}revocations"),
        }
    }

    pub(super) fn code(&self, code_hash: &str) -> String {
        format!("{}code:{code_hash}", self.prefix)
    }

    pub(super) fn refresh(&self, token_hash: &str) -> String {
        format!("{}rt:{token_hash}", self.tokens)
    }

    pub(super) fn session(&self, sid: &str) -> String {
        format!("{}session:{sid}", self.tokens)
    }

    pub(super) fn client_sessions(&self, api_id: &str, client_id: &str) -> String {
        format!("{}client_sessions:{api_id}:{client_id}", self.tokens)
    }

    pub(super) fn revoked(&self, kind: RevocationKind) -> String {
        format!("{}revoked:{}", self.tokens, kind.as_str())
    }

    /// One hash of per-client cutoffs (field: `<api_id> <client_id>`; neither contains a space).
    pub(super) fn client_cutoffs(&self) -> String {
        format!("{}client_cutoffs", self.tokens)
    }

    /// Stateless tokens issued per client of one API (fields `<client_id>` and `<client_id> last`).
    pub(super) fn stateless(&self, api_id: &str) -> String {
        format!("{}stateless:{api_id}", self.prefix)
    }

    /// The two fields of one client in [`Keys::stateless`]: its count, and when it last counted.
    /// A client id has no space, so the second can never be another client's first.
    pub(super) fn stateless_fields(client_id: &str) -> [String; 2] {
        [client_id.to_string(), format!("{client_id} last")]
    }

    pub(super) fn clients(&self, api_id: &str) -> String {
        format!("{}clients:{api_id}", self.prefix)
    }

    /// One hash of every stored policy (field: id, value: JSON), without a TTL (docs/design.md §7).
    pub(super) fn policies(&self) -> String {
        format!("{}policies", self.prefix)
    }

    /// The two counters of a guess. The address part is a hash tag, so both land in one cluster
    /// slot and one script can reserve them together: `failures:{login:movies|10.0.0.1}` and
    /// `failures:{login:movies|10.0.0.1}:alice` (scope and address never contain braces).
    pub(super) fn guess(&self, guess: &Guess<'_>) -> [String; 2] {
        let tag = format!(
            "{}failures:{{{}|{}}}",
            self.prefix, guess.scope, guess.address
        );
        let subject = format!("{tag}:{}", guess.subject);
        [tag, subject]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RevocationKind {
    Sid,
    Jti,
}

impl RevocationKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Sid => "sid",
            RevocationKind::Jti => "jti",
        }
    }
}
