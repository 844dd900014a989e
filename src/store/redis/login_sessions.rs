//! Login sessions in Redis (see `Store::put_login_session`).
//!
//! Keys, under one hash tag so each script touches one cluster slot:
//! - `<prefix>{login}:ls:<id hash>`: the session as JSON, expiring with it (`EXAT`);
//! - `<prefix>{login}:user:<username>`: sorted set of the user's id hashes scored by expiry, expiring
//!   with its last member. It is the per-user bound and the admin listing.
//!
//! Every write is one script, so the bound holds whatever nodes sign users in at once.

use std::sync::OnceLock;

use redis::Script;

use super::scripts::LUA_COMMON;
use super::{RedisStore, clamp_time, corrupt, now_secs};
use crate::store::{LoginSession, StoreResult};

const LUA_PUT: &str = include_str!("lua/login_put.lua");

const LUA_END: &str = include_str!("lua/login_end.lua");

const LUA_LIST: &str = include_str!("lua/login_list.lua");

const LUA_END_USER: &str = include_str!("lua/login_end_user.lua");

struct Scripts {
    put: Script,
    end: Script,
    list: Script,
    end_user: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let script = |body: &str| crate::redis::script(LUA_COMMON, body);
        Scripts {
            put: script(LUA_PUT),
            end: script(LUA_END),
            list: script(LUA_LIST),
            end_user: script(LUA_END_USER),
        }
    })
}

impl RedisStore {
    fn login_base(&self) -> String {
        format!("{}{{login}}:", self.keys.prefix)
    }

    pub(super) async fn login_put(
        &self,
        id_hash: &str,
        session: &LoginSession,
        max_per_user: u32,
    ) -> StoreResult<()> {
        let base = self.login_base();
        let json = Self::to_json(session)?;
        let mut conn = self.backend.conn();
        let _: i64 = self
            .backend
            .bounded(
                scripts()
                    .put
                    .key(format!("{base}ls:{id_hash}"))
                    .key(format!("{base}user:{}", session.username))
                    .arg(json)
                    .arg(clamp_time(session.expires_at))
                    .arg(max_per_user.max(1))
                    .arg(now_secs())
                    .arg(&base)
                    .arg(id_hash)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn login_get(
        &self,
        id_hash: &str,
        now: u64,
    ) -> StoreResult<Option<LoginSession>> {
        let mut conn = self.backend.conn();
        let raw: Option<String> = self
            .backend
            .bounded(
                redis::cmd("GET")
                    .arg(format!("{}ls:{id_hash}", self.login_base()))
                    .query_async(&mut conn),
            )
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let session: LoginSession =
            serde_json::from_str(&raw).map_err(|e| corrupt("login session", e))?;
        Ok((now < session.expires_at).then_some(session))
    }

    pub(super) async fn login_end(&self, id_hash: &str, now: u64) -> StoreResult<bool> {
        let base = self.login_base();
        let mut conn = self.backend.conn();
        let ended: i64 = self
            .backend
            .bounded(
                scripts()
                    .end
                    .key(format!("{base}ls:{id_hash}"))
                    .arg(&base)
                    .arg(id_hash)
                    .arg(now)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(ended == 1)
    }

    pub(super) async fn login_of_user(
        &self,
        username: &str,
        now: u64,
    ) -> StoreResult<Vec<(String, LoginSession)>> {
        let base = self.login_base();
        let mut conn = self.backend.conn();
        let flat: Vec<String> = self
            .backend
            .bounded(
                scripts()
                    .list
                    .key(format!("{base}user:{username}"))
                    .arg(&base)
                    .arg(now)
                    .invoke_async(&mut conn),
            )
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            if let [hash, json] = pair {
                let session: LoginSession =
                    serde_json::from_str(json).map_err(|e| corrupt("login session", e))?;
                if now < session.expires_at {
                    out.push((hash.clone(), session));
                }
            }
        }
        // Oldest first, like the memory store (the index is ordered by expiry).
        out.sort_by_key(|(_, s)| s.auth_time);
        Ok(out)
    }

    pub(super) async fn login_end_user(&self, username: &str, now: u64) -> StoreResult<u64> {
        let base = self.login_base();
        let mut conn = self.backend.conn();
        let ended: u64 = self
            .backend
            .bounded(
                scripts()
                    .end_user
                    .key(format!("{base}user:{username}"))
                    .arg(&base)
                    .arg(now)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(ended)
    }
}
