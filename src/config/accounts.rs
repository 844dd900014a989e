//! `users.yaml` and `policies.yaml`: raw → model. Policy `access` ids are checked by the loader once
//! every API is known.

use super::api::{claims, quota, rate_limit};
use super::check;
use super::error::{FileProblems, field, index};
use super::model::{Policy, User};
use super::raw::{RawPolicy, RawUser};

pub(crate) fn users(raw: Vec<RawUser>, out: &mut FileProblems<'_>) -> Vec<User> {
    let mut users: Vec<User> = Vec::with_capacity(raw.len());
    for (i, u) in raw.into_iter().enumerate() {
        let path = index("", i);
        if u.username.is_empty() {
            out.push(&field(&path, "username"), "must not be empty");
        } else if let Some(first) = users.iter().position(|x| x.username == u.username) {
            out.push(
                &field(&path, "username"),
                format!("duplicate username `{}` (first at [{first}])", u.username),
            );
        }
        let _ = out.check(
            &field(&path, "password_hash"),
            check::argon2id(&u.password_hash),
        );
        for (j, s) in u.scopes.iter().enumerate() {
            let _ = out.check(&index(&field(&path, "scopes"), j), check::scope(s));
        }
        claims(&u.claims, &field(&path, "claims"), out);
        users.push(User {
            username: u.username,
            password_hash: u.password_hash,
            scopes: u.scopes,
            claims: u.claims,
            disabled: u.disabled,
        });
    }
    users
}

pub(crate) fn policies(raw: Vec<RawPolicy>, out: &mut FileProblems<'_>) -> Vec<Policy> {
    let mut policies: Vec<Policy> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let path = index("", i);
        if let Some(first) = policies
            .iter()
            .position(|x| x.id == p.id && !p.id.is_empty())
        {
            out.push(
                &field(&path, "id"),
                format!("duplicate policy id `{}` (first at [{first}])", p.id),
            );
        }
        policies.push(policy(p, &path, out));
    }
    policies
}

/// One policy's own rules (everything but uniqueness and the `access` ids, which need the other
/// policies and the APIs). Shared by policies.yaml and the admin API, so a policy is valid in one
/// exactly when it is valid in the other. `path` is the policy's own field path (`[2]` in the file,
/// empty for an admin request body).
pub(crate) fn policy(p: RawPolicy, path: &str, out: &mut FileProblems<'_>) -> Policy {
    if p.id.is_empty() {
        out.push(&field(path, "id"), "must not be empty");
    }
    if let Some(scopes) = &p.scopes {
        for (j, s) in scopes.iter().enumerate() {
            let _ = out.check(&index(&field(path, "scopes"), j), check::scope(s));
        }
    }
    Policy {
        rate_limit: p
            .rate_limit
            .map(|r| rate_limit(&r, &field(path, "rate_limit"), out)),
        quota: p.quota.map(|q| quota(&q, &field(path, "quota"), out)),
        id: p.id,
        scopes: p.scopes,
        access: p.access,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::model::{OnStorageError, Quota, RateLimit};
    use crate::config::testutil::{Fixture, PHC};

    fn with_users(yaml: &str) -> Fixture {
        let f = Fixture::new();
        f.write(
            "gateway.yaml",
            "signing: {generate: true}\nusers: users.yaml\n",
        );
        f.write("users.yaml", yaml);
        f
    }

    fn with_policies(yaml: &str) -> Fixture {
        let f = Fixture::new();
        f.write(
            "gateway.yaml",
            "signing: {generate: true}\npolicies: policies.yaml\n",
        );
        f.write("policies.yaml", yaml);
        f
    }

    #[test]
    fn users_parsed() {
        let f = with_users(&format!(
            "- {{username: alice, password_hash: '{PHC}', scopes: [read], claims: {{email: a@example.com}}}}\n- {{username: bob, password_hash: '{PHC}', disabled: true}}\n"
        ));
        let c = f.load().unwrap();
        let users = &c.runtime.users;
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].username, "alice");
        assert_eq!(users[0].password_hash, PHC);
        assert_eq!(users[0].scopes, vec!["read"]);
        assert_eq!(users[0].claims["email"], serde_json::json!("a@example.com"));
        assert!(!users[0].disabled);
        assert!(users[1].disabled);
    }

    #[test]
    fn empty_users_file_is_no_users() {
        let f = with_users("# nobody yet\n");
        assert!(f.load().unwrap().runtime.users.is_empty());
    }

    #[test]
    fn username_rules() {
        with_users(&format!("- {{username: '', password_hash: '{PHC}'}}\n"))
            .expect("users.yaml: [0].username: must not be empty");
        with_users(&format!(
            "- {{username: alice, password_hash: '{PHC}'}}\n- {{username: bob, password_hash: '{PHC}'}}\n- {{username: alice, password_hash: '{PHC}'}}\n"
        ))
        .expect("users.yaml: [2].username: duplicate username `alice` (first at [0])");
    }

    #[test]
    fn password_hash_rule() {
        with_users("- {username: alice, password_hash: secret}\n").expect(
            "users.yaml: [0].password_hash: not an argon2id PHC string (make one with `tollgate hash-secret`)",
        );
    }

    #[test]
    fn user_scopes_and_claims_rules() {
        with_users(&format!("- {{username: a, password_hash: '{PHC}', scopes: ['x y']}}\n")).expect(
            "users.yaml: [0].scopes[0]: `x y` is not a valid scope (visible ASCII characters except `\"` and `\\`, no spaces)",
        );
        with_users(&format!("- {{username: a, password_hash: '{PHC}', claims: {{aud: x}}}}\n"))
            .expect("users.yaml: [0].claims.aud: claim `aud` is set by the gateway and cannot be configured");
    }

    #[test]
    fn users_file_shape() {
        with_users("{username: alice}\n")
            .expect("users.yaml: invalid type: map, expected a sequence");
        with_users(&format!("- {{username: a, password_hash: '{PHC}', role: admin}}\n")).expect(
            "users.yaml: [0].role: unknown field `role`, expected one of `username`, `password_hash`, `scopes`, `claims`, `disabled`",
        );
        with_users("- {username: a}\n").expect("users.yaml: [0]: missing field `password_hash`");
    }

    #[test]
    fn policies_parsed() {
        let f = with_policies(
            "- id: gold\n  rate_limit: {rate: 100, per: 1s}\n  quota: {max: 1000, period: 1d}\n  scopes: [read]\n  access: [echo]\n- {id: open}\n",
        );
        let c = f.load().unwrap();
        let p = &c.runtime.policies;
        assert_eq!(p[0].id, "gold");
        assert_eq!(
            p[0].rate_limit,
            Some(RateLimit {
                rate: 100,
                per: Duration::from_secs(1),
                on_storage_error: OnStorageError::Local,
                exact: false,
            })
        );
        assert_eq!(
            p[0].quota,
            Some(Quota {
                max: 1000,
                period: Duration::from_secs(86_400)
            })
        );
        assert_eq!(p[0].scopes, Some(vec!["read".to_owned()]));
        assert_eq!(p[0].access, vec!["echo"]);
        assert_eq!(p[1].scopes, None);
        assert!(p[1].access.is_empty());
    }

    #[test]
    fn policy_id_rules() {
        with_policies("- {id: ''}\n").expect("policies.yaml: [0].id: must not be empty");
        with_policies("- {id: gold}\n- {id: gold}\n")
            .expect("policies.yaml: [1].id: duplicate policy id `gold` (first at [0])");
    }

    #[test]
    fn policy_limit_and_scope_rules() {
        with_policies("- {id: gold, rate_limit: {rate: 0, per: 1s}}\n")
            .expect("policies.yaml: [0].rate_limit.rate: must be greater than 0");
        with_policies("- {id: gold, quota: {max: 0, period: 1d}}\n")
            .expect("policies.yaml: [0].quota.max: must be greater than 0");
        with_policies("- {id: gold, scopes: [ok, 'a\"b']}\n").expect(
            "policies.yaml: [0].scopes[1]: `a\"b` is not a valid scope (visible ASCII characters except `\"` and `\\`, no spaces)",
        );
        with_policies("- {id: gold, scopes: read}\n").expect(
            "policies.yaml: [0].scopes: invalid type: string \"read\", expected a sequence",
        );
    }
}
