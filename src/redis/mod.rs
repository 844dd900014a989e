//! The Redis connection layer, below both users of Redis: the store (`store::redis`: codes, sessions,
//! revocations, clients, policies, failures) and the limiter (`limits::redis`: leases and exact
//! counts). Owns the connection and its time bound (`conn`), and subscriptions (`pubsub`); knows
//! nothing of keys, scripts' meaning or what a message says.
//!
//! May import: `config`, `error`. Never `store` or `limits`: they are built on this, side by side,
//! and wired together where the gateway is assembled (`lib.rs`).

pub mod conn;
pub mod pubsub;

pub use conn::{Backend, Conn, describe, store_error};

/// A Lua script with helpers prepended (the store's scripts share one set of helpers). One place that
/// builds them, so every script is loaded the same way (`EVALSHA`, then `EVAL` on `NOSCRIPT`).
pub fn script(helpers: &str, body: &str) -> ::redis::Script {
    if helpers.is_empty() {
        ::redis::Script::new(body)
    } else {
        ::redis::Script::new(&format!("{helpers}\n{body}"))
    }
}

/// The throw-away `redis-server` of the tests: the same file the integration tests use.
#[cfg(test)]
#[path = "../../tests/common/redis.rs"]
pub(crate) mod testing;
