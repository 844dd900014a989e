//! The command line as an operator meets it (docs/design.md §1, §9d): `--help` and `--version` on
//! every command, usage errors that name the flag (exit 2), and each command's exit codes for
//! success (0) and failure (1). Every test spawns the real binary.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::ConfigDir;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn tollgate(args: &[&str]) -> Output {
    tollgate_in(args, None, &[])
}

/// Runs the binary with `args`, in `dir` when given, with `TOLLGATE_CONFIG` removed unless set in
/// `env`.
fn tollgate_in(args: &[&str], dir: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .stdin(Stdio::null());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run tollgate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A config folder whose gateway.yaml passes the check (one open API).
fn valid_config() -> ConfigDir {
    let config = ConfigDir::new("");
    config.api("open", &common::open_api("/open/", "http://127.0.0.1:9"));
    config
}

/// Every command line that has its own `--help` and `--version`.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["run"],
    &["check"],
    &["hash-secret"],
    &["keygen"],
    &["import"],
    &["import", "tyk"],
    &["completions"],
];

#[test]
fn help_on_every_command_shows_its_usage_and_exits_0() {
    for command in COMMANDS {
        for flag in ["--help", "-h"] {
            let args: Vec<&str> = command.iter().copied().chain([flag]).collect();
            let out = tollgate(&args);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
            let usage = ["Usage: tollgate"]
                .into_iter()
                .chain(command.iter().copied())
                .collect::<Vec<_>>()
                .join(" ");
            assert!(stdout(&out).contains(&usage), "{args:?}:\n{}", stdout(&out));
        }
    }
    let top = stdout(&tollgate(&["--help"]));
    for name in [
        "run",
        "check",
        "hash-secret",
        "keygen",
        "import",
        "completions",
    ] {
        assert!(
            top.contains(&format!("\n  {name} ")),
            "`{name}` missing from:\n{top}"
        );
    }
    assert!(top.contains("--config <PATH>"), "{top}");
    let keygen = stdout(&tollgate(&["keygen", "--help"]));
    assert!(
        keygen.contains("[possible values: ES256, EdDSA, RS256]"),
        "{keygen}"
    );
    let import = stdout(&tollgate(&["import", "tyk", "--help"]));
    for flag in ["--out <DIR>", "--policies <FILE>", "--force", "<FILE>..."] {
        assert!(import.contains(flag), "{flag} missing from:\n{import}");
    }
    // `tollgate help COMMAND` too.
    let out = tollgate(&["help", "check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Usage: tollgate check"));
}

#[test]
fn version_on_every_command_prints_the_crate_version_and_exits_0() {
    for command in COMMANDS {
        for flag in ["--version", "-V"] {
            let args: Vec<&str> = command.iter().copied().chain([flag]).collect();
            let out = tollgate(&args);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
            let name = ["tollgate"]
                .into_iter()
                .chain(command.iter().copied())
                .collect::<Vec<_>>()
                .join("-");
            assert_eq!(stdout(&out), format!("{name} {VERSION}\n"), "{args:?}");
        }
    }
}

#[test]
fn usage_errors_name_the_flag_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unexpected argument '--bogus'"),
        (&["check", "--bogus"], "unexpected argument '--bogus'"),
        (&["run", "--confg", "x"], "unexpected argument '--confg'"),
        (
            &["check", "--config"],
            "a value is required for '--config <PATH>'",
        ),
        (&["keygen"], "--out <PATH>"),
        (
            &["keygen", "--alg", "HS256", "--out", "k.pem"],
            "invalid value 'HS256' for '--alg <ALG>'",
        ),
        (&["hash-secret", "extra"], "unexpected argument 'extra'"),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["import"], "Usage: tollgate import <COMMAND>"),
        (
            &["import", "kong", "x.json"],
            "unrecognized subcommand 'kong'",
        ),
        (&["import", "tyk"], "<FILE>..."),
        (&["completions"], "<SHELL>"),
        (
            &["completions", "tcsh"],
            "invalid value 'tcsh' for '<SHELL>'",
        ),
    ];
    for (args, message) in cases {
        let out = tollgate(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(message),
            "{args:?}: `{message}` not in:\n{}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "{args:?}: errors go to stderr");
    }
}

#[test]
fn check_exits_0_with_a_summary_or_1_with_one_line_per_problem() {
    let config = valid_config();
    let path = config.gateway_yaml();
    let path = path.to_str().unwrap();
    let out = tollgate(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ok: 1 apis, 0 clients\n");
    // `--config=PATH`, `$TOLLGATE_CONFIG`, and the last of repeated flags, as before clap.
    assert_eq!(
        tollgate(&["check", &format!("--config={path}")])
            .status
            .code(),
        Some(0)
    );
    let by_env = tollgate_in(&["check"], None, &[("TOLLGATE_CONFIG", path)]);
    assert_eq!(by_env.status.code(), Some(0), "{}", stderr(&by_env));
    let repeated = tollgate(&["check", "--config", "/nonexistent.yaml", "--config", path]);
    assert_eq!(repeated.status.code(), Some(0), "{}", stderr(&repeated));
    // Without any: ./gateway.yaml.
    let in_dir = tollgate_in(&["check"], Some(config.path()), &[]);
    assert_eq!(in_dir.status.code(), Some(0), "{}", stderr(&in_dir));

    config.api(
        "broken",
        "listen_path: nope\nupstream: { url: \"ftp://x\" }\n",
    );
    let out = tollgate(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("api-definitions/broken.yaml: ")),
        "{err}"
    );
    assert!(err.contains(": listen_path: "), "{err}");
    assert!(err.contains(": upstream.url: "), "{err}");
}

#[test]
fn run_exits_1_on_a_configuration_problem_with_or_without_the_command_name() {
    let config = ConfigDir::new("");
    config.api(
        "broken",
        "listen_path: nope\nupstream: { url: \"http://127.0.0.1:9\" }\n",
    );
    let path = config.gateway_yaml();
    let path = path.to_str().unwrap();
    for args in [vec!["run", "--config", path], vec!["--config", path]] {
        let out = tollgate(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("api-definitions/broken.yaml: listen_path: "),
            "{}",
            stderr(&out)
        );
    }
    let missing = tollgate_in(
        &[],
        Some(config.path().join("api-definitions").as_path()),
        &[],
    );
    assert_eq!(missing.status.code(), Some(1), "no ./gateway.yaml");
    assert!(
        stderr(&missing).starts_with("gateway.yaml: cannot read"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn hash_secret_exits_0_with_a_phc_string_or_1_on_empty_input() {
    let hash = |input: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("hash-secret")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = hash("s3cret\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let phc = stdout(&out);
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(tollgate::secrets::verify_secret(phc.trim(), "s3cret"));
    let empty = hash("");
    assert_eq!(empty.status.code(), Some(1));
    assert!(stderr(&empty).contains("empty input"), "{}", stderr(&empty));
}

#[test]
fn keygen_exits_0_with_a_private_key_and_1_rather_than_overwrite_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/ed.pem");
    let key_arg = key.to_str().unwrap();
    let out = tollgate(&["keygen", "--alg", "EdDSA", "--out", key_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("wrote EdDSA key to {key_arg}\n"));
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = tollgate(&["keygen", "--out", key_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        pem,
        "the key is untouched"
    );
    // The default algorithm is ES256.
    let es = dir.path().join("es.pem");
    let out = tollgate(&["keygen", "--out", es.to_str().unwrap()]);
    assert!(
        stdout(&out).starts_with("wrote ES256 key"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn import_tyk_exits_0_when_the_result_passes_check_and_1_on_unreadable_input() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tyk");
    let out_dir = tempfile::tempdir().unwrap();
    let out_arg = out_dir.path().to_str().unwrap();
    let definition = format!("{fixtures}/oauth2-movies.json");
    let policies = format!("{fixtures}/policies.json");
    let args = [
        "import",
        "tyk",
        "--out",
        out_arg,
        "--policies",
        &policies,
        &definition,
    ];
    let out = tollgate(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("oauth2-movies.json: oauth_meta.allowed_authorize_types[1]: response type \"token\" is not supported"),
        "{text}"
    );
    assert!(text.contains("imported 1 apis, 2 policies;"), "{text}");
    // The last line is the check of the result.
    assert!(text.ends_with("ok: 1 apis, 0 clients\n"), "{text}");

    let again = tollgate(&args);
    assert_eq!(
        again.status.code(),
        Some(1),
        "existing files are not overwritten"
    );
    assert!(stderr(&again).contains("already exists (use --force to overwrite)"));
    let forced: Vec<&str> = args.iter().copied().chain(["--force"]).collect();
    assert_eq!(tollgate(&forced).status.code(), Some(0));

    let missing = tollgate(&["import", "tyk", "--out", out_arg, "/nonexistent/api.json"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).starts_with("/nonexistent/api.json: cannot read"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn completions_exit_0_with_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_tollgate()"),
        ("zsh", "#compdef tollgate"),
        ("fish", "complete -c tollgate"),
        ("elvish", "edit:completion:arg-completer[tollgate]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = tollgate(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(
            script.contains(marker),
            "{shell}: `{marker}` not in the script"
        );
        assert!(
            script.contains("hash-secret"),
            "{shell}: the commands are completed"
        );
    }
}

/// An OpenID Provider signing with the default ES256 key loads, and `check` still exits 0, but it
/// says why strict relying parties will refuse it (OpenID Connect Discovery requires RS256), naming
/// the file, the field and the API; with RS256 it says nothing.
#[test]
fn check_warns_when_an_openid_provider_cannot_sign_with_rs256() {
    let config = valid_config();
    config.api(
        "login",
        "listen_path: /login/\nupstream: { url: \"http://127.0.0.1:9\" }\nauth: { type: oauth2 }\n\
         oauth:\n  openid: true\n  grant_types: [authorization_code]\n  scopes: [read]\n",
    );
    let path = config.gateway_yaml();
    let path = path.to_str().unwrap();
    let out = tollgate(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("warning: "), "{err}");
    assert!(
        err.contains("gateway.yaml: signing.algorithm: ES256"),
        "{err}"
    );
    assert!(err.contains("API `login`"), "{err}");
    assert!(err.contains("set signing.algorithm: RS256"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line per OpenID API: {err}");

    let gateway = std::fs::read_to_string(config.gateway_yaml()).unwrap();
    let rs256 = gateway.replace(
        "signing: { key_file",
        "signing: { algorithm: RS256, key_file",
    );
    assert_ne!(
        rs256, gateway,
        "the test config has a signing block to change"
    );
    std::fs::write(config.gateway_yaml(), rs256).unwrap();
    let out = tollgate(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "RS256 needs no warning");
}
