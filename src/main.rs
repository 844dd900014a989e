//! The `tollgate` command line: argument parsing only; the work is in the library.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use tollgate::config::{Config, SigningAlgorithm};

/// mimalloc instead of glibc's malloc: a proxied request allocates and frees a few dozen small objects
/// (headers, futures, buffers), and per-connection buffers come and go with keep-alive connections.
/// Measured (docs/benchmarks.md): a lower peak RSS over 1,000 connections, and memory that is reused
/// from burst to burst where glibc's heap kept growing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The command line (docs/design.md §1, §9d). `run` is the default: `tollgate` and `tollgate --config PATH`
/// start the gateway as they always did.
#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An API gateway with a built-in OAuth 2.0 authorization server",
    propagate_version = true,
    args_conflicts_with_subcommands = true,
    after_help = "Without a command, `tollgate` runs the gateway (the same as `tollgate run`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `run`, for `tollgate --config PATH` without the command name.
    #[command(flatten)]
    run: ConfigArg,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway (the default command)
    Run(ConfigArg),
    /// Load and validate every configuration file, print `ok: N apis, M clients`, exit 0 (or 1 with
    /// one line per problem)
    Check(ConfigArg),
    /// Read a secret or password from stdin and print its argon2id PHC string (for the YAML files)
    HashSecret,
    /// Write a new PKCS#8 PEM signing key (mode 0600)
    Keygen {
        /// Signature algorithm of the key
        #[arg(long, default_value = "ES256", value_parser = ["ES256", "EdDSA", "RS256"], overrides_with = "alg")]
        alg: String,
        /// Where to write the key; an existing file is not overwritten
        #[arg(long, value_name = "PATH", overrides_with = "out")]
        out: PathBuf,
    },
    /// Convert another gateway's configuration into tollgate's
    #[command(subcommand)]
    Import(ImportCommand),
    /// Print a shell completion script to stdout
    Completions {
        /// The shell to complete in
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Tyk classic API definitions (JSON) and Tyk policies → API definitions and policies.yaml
    #[command(
        after_help = "Writes DIR/api-definitions/<id>.yaml, DIR/policies.yaml (with --policies) \
and DIR/gateway.yaml when DIR has none, lists every Tyk field that was not carried over \
(FILE: json.path: why), then checks the result like `tollgate check`. See docs/import-tyk.md."
    )]
    Tyk {
        /// Tyk API definition files: one definition, a list of them, or a Dashboard export
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Folder to write into
        #[arg(long, value_name = "DIR", default_value = ".", overrides_with = "out")]
        out: PathBuf,
        /// Tyk policies file (policies.json: an object keyed by policy id, or a list)
        #[arg(long, value_name = "FILE", overrides_with = "policies")]
        policies: Option<PathBuf>,
        /// Overwrite API definition files and policies.yaml that already exist in DIR
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
struct ConfigArg {
    /// Path of gateway.yaml
    #[arg(
        long,
        value_name = "PATH",
        env = "TOLLGATE_CONFIG",
        default_value = "gateway.yaml",
        overrides_with = "config"
    )]
    config: PathBuf,
}

fn main() -> ExitCode {
    // Transparent huge pages off for this process (where the kernel has them "always" on): mimalloc
    // maps its memory in large aligned segments that the kernel would back with 2 MiB pages as soon
    // as one object in them is touched, which made the idle gateway 10 MiB larger and a burst over
    // 1,000 connections 30 MiB larger (docs/benchmarks.md). Best effort: an old kernel without the
    // flag keeps the default.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    // Usage errors exit with 2 (clap's convention, like most Unix tools); failures of the work with 1.
    let cli = Cli::parse();
    let result = match cli.command {
        None => run(cli.run.config),
        Some(Command::Run(args)) => run(args.config),
        Some(Command::Check(args)) => check(args.config),
        Some(Command::HashSecret) => hash_secret(),
        Some(Command::Keygen { alg, out }) => keygen(&alg, &out),
        Some(Command::Import(ImportCommand::Tyk {
            files,
            out,
            policies,
            force,
        })) => import_tyk(&files, &out, policies.as_deref(), force),
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tollgate",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
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
    let problems: Vec<String> = tollgate::token::keys::KeySet::check(&config.gateway.signing)
        .iter()
        .map(|problem| format!("{}: {problem}", config.source.display()))
        .collect();
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
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
    let phc = tollgate::secrets::hash_secret(secret).map_err(|e| e.to_string())?;
    println!("{phc}");
    Ok(())
}

fn keygen(alg: &str, out: &Path) -> Result<(), String> {
    // clap has checked the value against the same three names.
    let alg = SigningAlgorithm::parse(alg)
        .ok_or_else(|| format!("keygen: unknown --alg '{alg}' (ES256, EdDSA or RS256)"))?;
    let pem = tollgate::token::keys::generate_pkcs8_pem(alg).map_err(|e| e.to_string())?;
    tollgate::token::keys::write_private_key(out, &pem).map_err(|e| e.to_string())?;
    println!("wrote {} key to {}", alg.as_str(), out.display());
    Ok(())
}

fn import_tyk(
    files: &[PathBuf],
    out: &Path,
    policies: Option<&Path>,
    force: bool,
) -> Result<(), String> {
    let summary =
        tollgate::import::import_tyk(files, policies, out, force).map_err(|e| e.to_string())?;
    print!("{}", summary.render());
    // The result must pass `tollgate check`; the same function says so here.
    check(summary.gateway_yaml.clone())
}
