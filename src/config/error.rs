//! Configuration problems: every one names the file and, when there is one, the field path.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file as the user would name it: joined onto the folder of the `gateway.yaml` path they gave.
    pub file: PathBuf,
    /// Field path inside the file, e.g. `oauth.clients[1].redirect_uris[0]`; empty when the problem is
    /// with the file as a whole (unreadable, YAML syntax).
    pub path: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(
        file: impl Into<PathBuf>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigProblem {
            file: file.into(),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.path,
                self.message
            )
        }
    }
}

/// Every problem found in one load, in the order the files were read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.0
    }

    /// Lines as `tollgate check` prints them (and as `POST /reload` returns them).
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigProblem> for ConfigErrors {
    fn from(problem: ConfigProblem) -> Self {
        ConfigErrors(vec![problem])
    }
}

/// Field paths in the `a.b[1].c` form used in every message.
pub(crate) fn field(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// Collects problems while loading.
///
/// Fields whose `${VAR}` could not be interpolated are remembered so that validation does not add a
/// second, misleading message about the placeholder value left in their place.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<ConfigProblem>,
    muted: Vec<(PathBuf, String)>,
}

impl Problems {
    pub(crate) fn push(&mut self, file: &Path, path: &str, message: impl Into<String>) {
        if self.muted.iter().any(|(f, p)| f == file && p == path) {
            return;
        }
        self.list.push(ConfigProblem::new(file, path, message));
    }

    /// Reports a problem and silences any later one at the same place.
    pub(crate) fn push_and_mute(&mut self, file: &Path, path: &str, message: impl Into<String>) {
        self.push(file, path, message);
        self.muted.push((file.to_owned(), path.to_owned()));
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Ends a load that cannot produce a config. Every such path reports a problem first; should one
    /// ever not, the load must still fail rather than yield a half-empty config.
    pub(crate) fn fail<T>(mut self, file: &Path) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            self.list.push(ConfigProblem::new(
                file,
                "",
                "internal error: configuration incomplete",
            ));
        }
        Err(ConfigErrors(self.list))
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.list))
        }
    }
}

/// Problems of one file: saves passing the file name to every check.
pub(crate) struct FileProblems<'a> {
    pub(crate) file: &'a Path,
    pub(crate) problems: &'a mut Problems,
}

impl FileProblems<'_> {
    pub(crate) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(self.file, path, message);
    }

    /// Runs a check and reports its error at `path`; `None` when it failed.
    pub(crate) fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.push(path, message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_with_path() {
        let p = ConfigProblem::new(
            "api-definitions/movies.yaml",
            "oauth.clients[1].redirect_uris[0]",
            "not an absolute URL",
        );
        assert_eq!(
            p.to_string(),
            "api-definitions/movies.yaml: oauth.clients[1].redirect_uris[0]: not an absolute URL"
        );
    }

    #[test]
    fn problem_without_path() {
        let p = ConfigProblem::new("gateway.yaml", "", "cannot read: no such file");
        assert_eq!(p.to_string(), "gateway.yaml: cannot read: no such file");
    }

    #[test]
    fn errors_one_line_each() {
        let e = ConfigErrors(vec![
            ConfigProblem::new("a.yaml", "x", "bad"),
            ConfigProblem::new("b.yaml", "", "worse"),
        ]);
        assert_eq!(e.to_string(), "a.yaml: x: bad\nb.yaml: worse");
        assert_eq!(e.lines(), vec!["a.yaml: x: bad", "b.yaml: worse"]);
    }

    #[test]
    fn muted_paths_are_skipped() {
        let mut p = Problems::default();
        let f = Path::new("g.yaml");
        p.push_and_mute(f, "admin.secret", "environment variable `S` is not set");
        p.push(f, "admin.secret", "must be at least 16 characters");
        p.push(f, "listen", "bad");
        let lines = p.into_result(()).unwrap_err().lines();
        assert_eq!(
            lines,
            vec![
                "g.yaml: admin.secret: environment variable `S` is not set",
                "g.yaml: listen: bad"
            ]
        );
    }

    #[test]
    fn paths() {
        assert_eq!(field("", "oauth"), "oauth");
        assert_eq!(index(&field("oauth", "clients"), 1), "oauth.clients[1]");
        assert_eq!(field(&index("", 0), "username"), "[0].username");
    }
}
