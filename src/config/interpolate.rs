//! `${VAR}` and `${VAR:-default}` in string values.
//!
//! Interpolation runs on the parsed YAML tree, not on the file text, so a value from the environment
//! can never change the structure of the document (a secret containing `: ` or a newline stays one
//! string). Mapping keys are left alone. `$${` stands for a literal `${`.

use serde_yaml::Value;

use super::error::{FileProblems, field, index};

/// Looks up an environment variable; `None` when it is unset.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Replaces placeholders in every string of `value`. A string that cannot be interpolated is reported
/// at its field path, becomes empty, and has later problems at that path muted (they would only be
/// about the placeholder).
pub(crate) fn interpolate_tree(
    value: &mut Value,
    path: &str,
    env: Env<'_>,
    out: &mut FileProblems<'_>,
) {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                match interpolate(s, env) {
                    Ok(new) => *s = new,
                    Err(message) => {
                        out.problems.push_and_mute(out.file, path, message);
                        s.clear();
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &index(path, i), env, out);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key_text(key);
                interpolate_tree(item, &field(path, &key), env, out);
            }
        }
        Value::Tagged(tagged) => interpolate_tree(&mut tagged.value, path, env, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A mapping key as it appears in a field path.
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => "?".to_owned(),
    }
}

pub(crate) fn interpolate(s: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(expr_start) = after.strip_prefix("${") {
            let Some(end) = expr_start.find('}') else {
                return Err("unterminated `${` (write `$${` for a literal `${`)".to_owned());
            };
            let expr = &expr_start[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if !valid_name(name) {
                return Err(format!(
                    "invalid variable name `{name}` in `${{{expr}}}` (letters, digits and `_`, not starting with a digit)"
                ));
            }
            // As in the shell, `:-` also replaces a variable that is set but empty.
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &expr_start[end + 1..];
        } else {
            // A `$` not followed by `{` is ordinary text (argon2 PHC strings are full of them).
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::Problems;
    use std::path::Path;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".to_owned()),
            "EMPTY" => Some(String::new()),
            "WEIRD" => Some("a: b\n- c ${NOT_EXPANDED}".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn present_variable() {
        assert_eq!(
            interpolate("redis://${HOST}:6379", &env),
            Ok("redis://db.internal:6379".to_owned())
        );
    }

    #[test]
    fn missing_variable() {
        assert_eq!(
            interpolate("${NOPE}", &env),
            Err("environment variable `NOPE` is not set".to_owned())
        );
    }

    #[test]
    fn default_value() {
        assert_eq!(interpolate("${NOPE:-info}", &env), Ok("info".to_owned()));
        assert_eq!(
            interpolate("${HOST:-x}", &env),
            Ok("db.internal".to_owned())
        );
        assert_eq!(interpolate("${EMPTY:-x}", &env), Ok("x".to_owned()));
        assert_eq!(interpolate("${EMPTY}", &env), Ok(String::new()));
        assert_eq!(interpolate("${NOPE:-}", &env), Ok(String::new()));
    }

    #[test]
    fn values_are_not_reinterpolated() {
        assert_eq!(
            interpolate("${WEIRD}", &env),
            Ok("a: b\n- c ${NOT_EXPANDED}".to_owned())
        );
    }

    #[test]
    fn dollars_and_escapes() {
        let phc = "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$abc";
        assert_eq!(interpolate(phc, &env), Ok(phc.to_owned()));
        assert_eq!(
            interpolate("$${HOST} ${HOST}$", &env),
            Ok("${HOST} db.internal$".to_owned())
        );
    }

    #[test]
    fn malformed_placeholders() {
        assert_eq!(
            interpolate("x${HOST", &env),
            Err("unterminated `${` (write `$${` for a literal `${`)".to_owned())
        );
        assert_eq!(
            interpolate("${1A}", &env),
            Err("invalid variable name `1A` in `${1A}` (letters, digits and `_`, not starting with a digit)".to_owned())
        );
        assert_eq!(
            interpolate("${A-b}", &env),
            Err("invalid variable name `A-b` in `${A-b}` (letters, digits and `_`, not starting with a digit)".to_owned())
        );
    }

    #[test]
    fn tree_reports_field_paths() {
        let mut v: Value = serde_yaml::from_str(
            "admin: {secret: '${NOPE}'}\nlist: [ok, '${HOST}', '${GONE}']\nn: 5\n",
        )
        .unwrap();
        let mut problems = Problems::default();
        let mut out = FileProblems {
            file: Path::new("g.yaml"),
            problems: &mut problems,
        };
        interpolate_tree(&mut v, "", &env, &mut out);
        assert_eq!(v["list"][1], Value::String("db.internal".to_owned()));
        assert_eq!(v["admin"]["secret"], Value::String(String::new()));
        let lines = problems.into_result(()).unwrap_err().lines();
        assert_eq!(
            lines,
            vec![
                "g.yaml: admin.secret: environment variable `NOPE` is not set",
                "g.yaml: list[2]: environment variable `GONE` is not set",
            ]
        );
    }
}
