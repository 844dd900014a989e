//! The `tollgate` command line: argument parsing only; the work is in the library.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use tollgate::config::{Config, SigningAlgorithm};

/// mimalloc instead of glibc's malloc: a proxied request allocates and frees a few dozen small objects
/// (headers, futures, buffers), and per-connection buffers come and go with keep-alive connections.
/// Measured (docs/benchmarks.md): a lower peak RSS over 1,000 connections, and memory that is reused
/// from burst to burst where glibc's heap kept growing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  tollgate [run] [--config PATH]     start the gateway (default: $TOLLGATE_CONFIG or ./gateway.yaml)
  tollgate check [--config PATH]     validate every configuration file and exit
  tollgate hash-secret               read a secret from stdin, print its argon2id PHC string
  tollgate keygen --alg ES256|EdDSA|RS256 --out PATH   write a new PKCS#8 PEM private key (0600)";

fn main() -> ExitCode {
    // Transparent huge pages off for this process (where the kernel has them "always" on): mimalloc
    // maps its memory in large aligned segments that the kernel would back with 2 MiB pages as soon
    // as one object in them is touched, which made the idle gateway 10 MiB larger and a burst over
    // 1,000 connections 30 MiB larger (docs/benchmarks.md). Best effort: an old kernel without the
    // flag keeps the default.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.first().map(String::as_str) {
        None => ("run", &args[..]),
        Some(arg) if arg.starts_with("--") => ("run", &args[..]),
        Some(cmd) => (cmd, &args[1..]),
    };
    let result = match command {
        "run" => flags(rest, &["--config"]).and_then(|f| run(config_path(&f))),
        "check" => flags(rest, &["--config"]).and_then(|f| check(config_path(&f))),
        "hash-secret" => flags(rest, &[]).and_then(|_| hash_secret()),
        "keygen" => flags(rest, &["--alg", "--out"]).and_then(|f| keygen(&f)),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command '{other}'\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

type Flags = Vec<(String, String)>;

/// `--name value` and `--name=value` pairs, each name one of `allowed`.
fn flags(args: &[String], allowed: &[&str]) -> Result<Flags, String> {
    let mut out = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => {
                let value = iter
                    .next()
                    .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
                (arg.clone(), value.clone())
            }
        };
        if !allowed.contains(&name.as_str()) {
            return Err(format!("unknown option '{name}'\n{USAGE}"));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn flag<'a>(flags: &'a Flags, name: &str) -> Option<&'a str> {
    flags
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn config_path(flags: &Flags) -> PathBuf {
    flag(flags, "--config")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TOLLGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("gateway.yaml"))
}

fn run(path: PathBuf) -> Result<(), String> {
    let config = Config::load(&path).map_err(|errors| errors.to_string())?;
    // Declared before the runtime, so dropped after it: lines logged while the runtime shuts down
    // are written out too.
    let _logs = tollgate::logging::init(&config.gateway.log);
    // The multi-thread scheduler sizes itself to the CPUs this process may use (affinity and cgroup
    // quota included): pinned to one CPU it runs one worker. A current-thread runtime for that case
    // was measured too (docs/benchmarks.md) and made no difference outside the noise, so there is
    // one configuration to test.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let listeners = tollgate::Listeners::bind(&config)
            .await
            .map_err(|e| format!("cannot bind listeners: {e}"))?;
        tollgate::run(config, listeners, tollgate::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}

fn check(path: PathBuf) -> Result<(), String> {
    let config = Config::load(&path).map_err(|errors| errors.to_string())?;
    let problems: Vec<String> = tollgate::oauth::keys::KeySet::check(&config.gateway.signing)
        .iter()
        .map(|problem| format!("{}: {problem}", config.source.display()))
        .collect();
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    println!(
        "ok: {} apis, {} clients",
        config.api_count(),
        config.client_count()
    );
    Ok(())
}

fn hash_secret() -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    // A trailing newline from `echo` is not part of the secret.
    let secret = input.strip_suffix('\n').unwrap_or(&input);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err("hash-secret: empty input; pipe the secret on stdin".into());
    }
    let phc = tollgate::oauth::secrets::hash_secret(secret).map_err(|e| e.to_string())?;
    println!("{phc}");
    Ok(())
}

fn keygen(flags: &Flags) -> Result<(), String> {
    let alg = flag(flags, "--alg").unwrap_or("ES256");
    let alg = SigningAlgorithm::parse(alg)
        .ok_or_else(|| format!("keygen: unknown --alg '{alg}' (ES256, EdDSA or RS256)"))?;
    let out =
        flag(flags, "--out").ok_or_else(|| format!("keygen: --out PATH is required\n{USAGE}"))?;
    let pem = tollgate::oauth::keys::generate_pkcs8_pem(alg).map_err(|e| e.to_string())?;
    tollgate::oauth::keys::write_private_key(std::path::Path::new(out), &pem)
        .map_err(|e| e.to_string())?;
    println!("wrote {} key to {out}", alg.as_str());
    Ok(())
}
