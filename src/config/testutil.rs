//! Test fixtures: a config folder in a temp dir, loaded with a fake environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::ConfigErrors;
use super::load::load_with_env;
use super::model::Config;

/// A valid argon2id PHC string (from the argon2 crate's known-answer tests).
pub(crate) const PHC: &str =
    "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";

/// The smallest valid API definition; `Fixture::new` writes it as `api-definitions/echo.yaml`.
pub(crate) const ECHO_API: &str =
    "listen_path: /echo/\nupstream: {mock: {status: 200}}\nauth: {type: none}\n";

pub(crate) struct Fixture {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Fixture {
    /// A folder with `gateway.yaml` (generated signing key) and one API.
    pub(crate) fn new() -> Self {
        let f = Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            env: HashMap::new(),
        };
        f.write("gateway.yaml", "signing: {generate: true}\n");
        f.write("api-definitions/echo.yaml", ECHO_API);
        f
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn gateway_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub(crate) fn set_env(&mut self, name: &str, value: &str) {
        self.env.insert(name.to_owned(), value.to_owned());
    }

    pub(crate) fn write(&self, rel: &str, contents: &str) {
        let path = self.dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write");
    }

    pub(crate) fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.path().join(rel)).expect("remove");
    }

    pub(crate) fn load(&self) -> Result<Config, ConfigErrors> {
        let env = |name: &str| self.env.get(name).cloned();
        load_with_env(&self.gateway_path(), &env)
    }

    /// Problem lines with the temp dir prefix removed (`api-definitions/x.yaml: path: message`);
    /// empty when the config loads.
    pub(crate) fn problems(&self) -> Vec<String> {
        match self.load() {
            Ok(_) => Vec::new(),
            Err(e) => {
                let prefix = format!("{}/", self.dir.path().display());
                e.lines()
                    .into_iter()
                    .map(|l| l.replace(&prefix, ""))
                    .collect()
            }
        }
    }

    /// Asserts that `line` is among the problems.
    pub(crate) fn expect(&self, line: &str) {
        let lines = self.problems();
        assert!(
            lines.iter().any(|l| l == line),
            "expected {line:?} in {lines:#?}"
        );
    }
}
