//! The store's Lua scripts, one `.lua` file each under `lua/` (their headers say what KEYS and ARGV
//! are and what they return). Every operation that must be atomic is one script; the ones that touch
//! tokens, sessions and revocations get the helpers of `lua/common.lua` prepended.

use redis::Script;

pub(super) const LUA_COMMON: &str = include_str!("lua/common.lua");
const LUA_TAKE_CODE: &str = include_str!("lua/take_code.lua");
const LUA_PUT_SESSION: &str = include_str!("lua/put_session.lua");
const LUA_REVOKE_CLIENT: &str = include_str!("lua/revoke_client.lua");
const LUA_PUT_REFRESH: &str = include_str!("lua/put_refresh.lua");
const LUA_ROTATE_REFRESH: &str = include_str!("lua/rotate_refresh.lua");
const LUA_REVOKE_SESSION: &str = include_str!("lua/revoke_session.lua");
const LUA_REVOKE_JTI: &str = include_str!("lua/revoke_jti.lua");
const LUA_RESERVE_ATTEMPT: &str = include_str!("lua/reserve_attempt.lua");
const LUA_RELEASE_ATTEMPT: &str = include_str!("lua/release_attempt.lua");
const LUA_ADMIT_ATTEMPT: &str = include_str!("lua/admit_attempt.lua");
const LUA_CLIENT: &str = include_str!("lua/client.lua");
const LUA_POLICY: &str = include_str!("lua/policy.lua");

pub(super) struct Scripts {
    pub(super) client: Script,
    pub(super) policy: Script,
    pub(super) take_code: Script,
    pub(super) put_session: Script,
    pub(super) put_refresh: Script,
    pub(super) rotate_refresh: Script,
    pub(super) revoke_session: Script,
    pub(super) revoke_jti: Script,
    pub(super) revoke_client: Script,
    pub(super) reserve_attempt: Script,
    pub(super) release_attempt: Script,
    pub(super) admit_attempt: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let script = |body: &str| crate::redis::script(LUA_COMMON, body);
        Scripts {
            client: crate::redis::script("", LUA_CLIENT),
            policy: crate::redis::script("", LUA_POLICY),
            take_code: script(LUA_TAKE_CODE),
            put_session: script(LUA_PUT_SESSION),
            put_refresh: script(LUA_PUT_REFRESH),
            rotate_refresh: script(LUA_ROTATE_REFRESH),
            revoke_session: script(LUA_REVOKE_SESSION),
            revoke_jti: script(LUA_REVOKE_JTI),
            revoke_client: script(LUA_REVOKE_CLIENT),
            reserve_attempt: script(LUA_RESERVE_ATTEMPT),
            release_attempt: script(LUA_RELEASE_ATTEMPT),
            admit_attempt: script(LUA_ADMIT_ATTEMPT),
        }
    }
}
