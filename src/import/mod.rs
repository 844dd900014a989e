//! `tollgate import`: other gateways' configuration → tollgate's files.
//!
//! The conversion itself is pure ([`tyk::convert`]); this module reads the input files, decides where
//! the output goes and writes it. Nothing is written unless every input file parsed and no output file
//! would be overwritten (without `--force`), so a failed import leaves the folder as it was.
//!
//! May import: `config` only (it writes files that `tollgate check` then reads). A command-line tool;
//! nothing in the gateway imports it.

pub mod tyk;

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use tyk::{Dropped, Source};

/// Input files are operator-supplied, but a wrong path (a log, a dump) should not be read whole into
/// memory: Tyk definitions are kilobytes, a Dashboard export of hundreds of APIs a few megabytes.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Name of the report written beside the output.
pub const REPORT_FILE: &str = "import-report.txt";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than {} MiB; not a Tyk definition?", path.display(), MAX_INPUT_BYTES / 1024 / 1024)]
    TooLarge { path: PathBuf },
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: already exists (use --force to overwrite)", path.display())]
    Exists { path: PathBuf },
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an import wrote and what it could not carry over.
#[derive(Debug)]
pub struct ImportSummary {
    /// gateway.yaml in the output folder (written when it was missing), to check the result with.
    pub gateway_yaml: PathBuf,
    pub wrote_gateway_yaml: bool,
    pub api_files: Vec<PathBuf>,
    pub policies_file: Option<PathBuf>,
    pub policy_count: usize,
    pub report_file: PathBuf,
    pub dropped: Vec<Dropped>,
    /// Things the operator must do by hand (e.g. name the policies file in an existing gateway.yaml).
    pub notes: Vec<String>,
}

impl ImportSummary {
    /// The text printed by `tollgate import tyk`: the report, then what was written.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.dropped {
            let _ = writeln!(out, "{d}");
        }
        for f in &self.api_files {
            let _ = writeln!(out, "wrote {}", f.display());
        }
        if let Some(f) = &self.policies_file {
            let _ = writeln!(
                out,
                "wrote {} ({} policies)",
                f.display(),
                self.policy_count
            );
        }
        if self.wrote_gateway_yaml {
            let _ = writeln!(out, "wrote {}", self.gateway_yaml.display());
        }
        let _ = writeln!(
            out,
            "imported {} apis, {} policies; {} Tyk fields not carried over (listed above and in {})",
            self.api_files.len(),
            self.policy_count,
            self.dropped.len(),
            self.report_file.display()
        );
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// Reads Tyk API definitions `files` and the optional Tyk policies file, writes the tollgate files
/// into `out`: the API definitions into the folder the gateway.yaml there names (`api-definitions`
/// when there is none; then a gateway.yaml is written too), the policies into the policies file it
/// names (`policies.yaml`), and the report into `import-report.txt`.
pub fn import_tyk(
    files: &[PathBuf],
    policies: Option<&Path>,
    out: &Path,
    force: bool,
) -> Result<ImportSummary, ImportError> {
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        sources.push(read_json(path)?);
    }
    let policy_source = policies.map(read_json).transpose()?;
    let conversion = tyk::convert(&sources, policy_source.as_ref());

    let gateway_yaml = out.join("gateway.yaml");
    let existing = existing_layout(&gateway_yaml)?;
    let mut notes = Vec::new();
    let (api_dir, policies_rel) = match &existing {
        Some(layout) => {
            if conversion.policies_yaml.is_some() && layout.policies.is_none() {
                notes.push(format!(
                    "{} names no policies file: add `policies: policies.yaml` to it",
                    gateway_yaml.display()
                ));
            }
            (
                out.join(&layout.api_definitions),
                layout
                    .policies
                    .clone()
                    .unwrap_or_else(|| "policies.yaml".to_owned()),
            )
        }
        None => (out.join("api-definitions"), "policies.yaml".to_owned()),
    };

    // Every target is known before anything is written: refuse the whole import, not half of it.
    let api_files: Vec<PathBuf> = conversion
        .apis
        .iter()
        .map(|api| api_dir.join(format!("{}.yaml", api.id)))
        .collect();
    let policies_file = conversion
        .policies_yaml
        .as_ref()
        .map(|_| out.join(&policies_rel));
    if !force {
        for path in api_files.iter().chain(policies_file.iter()) {
            if path.exists() {
                return Err(ImportError::Exists { path: path.clone() });
            }
        }
    }

    create_dir(&api_dir)?;
    for (api, path) in conversion.apis.iter().zip(&api_files) {
        write(path, &api.yaml)?;
    }
    if let (Some(text), Some(path)) = (&conversion.policies_yaml, &policies_file) {
        write(path, text)?;
    }
    let wrote_gateway_yaml = existing.is_none();
    if wrote_gateway_yaml {
        write(
            &gateway_yaml,
            &sample_gateway_yaml(conversion.policies_yaml.is_some()),
        )?;
    }
    let report_file = out.join(REPORT_FILE);
    let mut report = String::from(
        "# Tyk fields that `tollgate import tyk` did not carry over: FILE: json.path: why\n",
    );
    for d in &conversion.dropped {
        let _ = writeln!(report, "{d}");
    }
    write(&report_file, &report)?;

    Ok(ImportSummary {
        gateway_yaml,
        wrote_gateway_yaml,
        api_files,
        policies_file,
        policy_count: conversion.policy_count,
        report_file,
        dropped: conversion.dropped,
        notes,
    })
}

fn read_json(path: &Path) -> Result<Source, ImportError> {
    let read_error = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    // One byte more than the bound, to tell "exactly at the bound" from "over it".
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(ImportError::TooLarge {
            path: path.to_owned(),
        });
    }
    let json = serde_json::from_str(&text).map_err(|source| ImportError::Json {
        path: path.to_owned(),
        source,
    })?;
    Ok(Source {
        name: path.display().to_string(),
        json,
    })
}

/// Where an existing gateway.yaml reads API definitions and policies from.
struct Layout {
    api_definitions: String,
    policies: Option<String>,
}

fn existing_layout(gateway_yaml: &Path) -> Result<Option<Layout>, ImportError> {
    let text = match std::fs::read_to_string(gateway_yaml) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ImportError::Read {
                path: gateway_yaml.to_owned(),
                source,
            });
        }
    };
    // Only two locations are read; whether the rest is valid is for the check that follows.
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null);
    let text_of = |key: &str| {
        value
            .get(key)
            .and_then(serde_yaml::Value::as_str)
            .filter(|s| !s.contains("${"))
            .map(str::to_owned)
    };
    Ok(Some(Layout {
        api_definitions: text_of("api_definitions").unwrap_or_else(|| "api-definitions".to_owned()),
        policies: text_of("policies"),
    }))
}

/// A gateway.yaml for a folder that has none, like the repository's sample.
fn sample_gateway_yaml(with_policies: bool) -> String {
    let policies = if with_policies {
        "policies: policies.yaml\n"
    } else {
        ""
    };
    format!(
        "# Written by `tollgate import tyk` for a folder without a gateway.yaml; every field is in\n\
         # docs/configuration.md. Set TOLLGATE_ADMIN_SECRET in any real deployment.\n\
         listen: 0.0.0.0:8080\n\
         api_definitions: api-definitions\n\
         {policies}\
         storage:\n  backend: memory\n\
         signing:\n  algorithm: ES256\n  key_file: keys/signing.pem\n  generate: true\n\
         admin:\n  listen: 127.0.0.1:8081\n  secret: ${{TOLLGATE_ADMIN_SECRET:-quickstart-admin-secret-change-me}}\n"
    )
}

fn create_dir(path: &Path) -> Result<(), ImportError> {
    std::fs::create_dir_all(path).map_err(|source| ImportError::Write {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), ImportError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    std::fs::write(path, text).map_err(|source| ImportError::Write {
        path: path.to_owned(),
        source,
    })
}
