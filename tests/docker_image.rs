//! The Docker image starts as built: the files its final stage copies are exactly the files its
//! configuration needs. No Docker engine runs in CI, so this test reads the Dockerfile, lays out what
//! the `COPY` lines of the final stage put into the image (under a temporary root), sets the image's
//! `ENV`, and runs the binary's `check` there as the container's entry point would run `run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What the final stage of the Dockerfile does, as far as files and environment go.
#[derive(Debug, Default)]
struct Image {
    workdir: String,
    /// (sources in the build context, destination in the image)
    copies: Vec<(Vec<String>, String)>,
    env: BTreeMap<String, String>,
    exposed: Vec<u16>,
}

/// Instructions with their `\` continuations joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

fn final_stage(dockerfile: &str) -> Image {
    let mut image = Image::default();
    for instruction in instructions(dockerfile) {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        let rest = rest.trim();
        match keyword.to_ascii_uppercase().as_str() {
            // A new stage starts from scratch.
            "FROM" => image = Image::default(),
            "WORKDIR" => {
                image.workdir = if rest.starts_with('/') {
                    rest.to_owned()
                } else {
                    format!("{}/{rest}", image.workdir)
                }
            }
            "COPY" | "ADD" => {
                let words: Vec<String> = if rest.starts_with('[') {
                    serde_json::from_str(rest).expect("COPY in JSON form")
                } else {
                    rest.split_whitespace().map(str::to_owned).collect()
                };
                // Copies from another stage (the binary) are not files of the build context.
                if words.iter().any(|w| w.starts_with("--from")) {
                    continue;
                }
                let mut words: Vec<String> =
                    words.into_iter().filter(|w| !w.starts_with("--")).collect();
                let dest = words.pop().expect("COPY destination");
                image.copies.push((words, dest));
            }
            "ENV" => {
                if rest.contains('=') {
                    for pair in rest.split_whitespace() {
                        let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
                        image
                            .env
                            .insert(k.to_owned(), v.trim_matches('"').to_owned());
                    }
                } else if let Some((k, v)) = rest.split_once(char::is_whitespace) {
                    image.env.insert(k.to_owned(), v.trim().to_owned());
                }
            }
            "EXPOSE" => image.exposed.extend(
                rest.split_whitespace()
                    .filter_map(|p| p.parse::<u16>().ok()),
            ),
            _ => {}
        }
    }
    image
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

/// Lays the image's files out under `root` (the image's `/`) and returns the working directory.
fn lay_out(image: &Image, root: &Path) -> PathBuf {
    let inside = |path: &str| -> PathBuf {
        let absolute = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{}/{path}", image.workdir)
        };
        root.join(absolute.trim_start_matches('/'))
    };
    for (sources, dest) in &image.copies {
        let into_dir = dest.ends_with('/') || sources.len() > 1;
        for source in sources {
            let from = Path::new(REPO).join(source);
            assert!(
                from.exists(),
                "the Dockerfile copies {source}, which does not exist"
            );
            let to = if into_dir && from.is_file() {
                inside(dest).join(from.file_name().unwrap())
            } else {
                inside(dest)
            };
            copy_tree(&from, &to);
        }
    }
    let workdir = inside(&image.workdir);
    std::fs::create_dir_all(&workdir).unwrap();
    workdir
}

/// `tollgate check` in the laid-out image with its `ENV` (absolute paths moved under `root`) plus `extra`.
fn check_in_image(image: &Image, root: &Path, extra: &[(&str, &str)]) -> std::process::Output {
    let workdir = lay_out(image, root);
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.arg("check").current_dir(&workdir).env_clear();
    for (key, value) in &image.env {
        let value = if value.starts_with('/') {
            root.join(value.trim_start_matches('/'))
                .display()
                .to_string()
        } else {
            value.clone()
        };
        command.env(key, value);
    }
    for (key, value) in extra {
        command.env(key, value);
    }
    command.output().expect("run tollgate check")
}

fn dockerfile() -> Image {
    final_stage(&std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap())
}

#[test]
fn the_files_the_image_copies_pass_check_with_a_real_admin_secret() {
    let image = dockerfile();
    assert!(
        image.env.contains_key("TOLLGATE_CONFIG"),
        "the image says where its gateway.yaml is: {image:?}"
    );
    let root = tempfile::tempdir().unwrap();
    let output = check_in_image(
        &image,
        root.path(),
        &[(
            "TOLLGATE_ADMIN_SECRET",
            "a-real-secret-from-the-operator-7f3a9c",
        )],
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ok: 2 apis, 2 clients\n",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success());
}

#[test]
fn the_image_serves_the_admin_api_beyond_loopback_and_so_requires_a_real_secret() {
    let image = dockerfile();
    let listen: std::net::SocketAddr = image
        .env
        .get("TOLLGATE_ADMIN_LISTEN")
        .expect("the image sets TOLLGATE_ADMIN_LISTEN")
        .parse()
        .expect("a socket address");
    assert!(!listen.ip().is_loopback(), "{listen}");
    assert!(
        image.exposed.contains(&listen.port()),
        "{:?}",
        image.exposed
    );

    let root = tempfile::tempdir().unwrap();
    let output = check_in_image(&image, root.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.ends_with("gateway.yaml: admin.secret: is the quick-start sample secret, which may only be used with a loopback admin.listen; set TOLLGATE_ADMIN_SECRET\n"),
        "{stderr}"
    );
}

#[test]
fn the_dockerfile_reader_follows_stages_continuations_and_copy_forms() {
    let image = final_stage(
        "FROM rust AS build\nCOPY src ./src\nFROM debian\nWORKDIR /etc\nWORKDIR app\n\
         COPY --from=build /bin/x /usr/bin/x\nCOPY --chown=1:1 a.yaml \\\n  b.yaml ./conf/\n\
         COPY [\"c d.yaml\", \"/opt/\"]\nENV A=1 B=\"two\"\nENV C three\nEXPOSE 80 443\n",
    );
    assert_eq!(image.workdir, "/etc/app");
    assert_eq!(
        image.copies,
        [
            (
                vec!["a.yaml".to_owned(), "b.yaml".to_owned()],
                "./conf/".to_owned()
            ),
            (vec!["c d.yaml".to_owned()], "/opt/".to_owned()),
        ]
    );
    assert_eq!(image.env["A"], "1");
    assert_eq!(image.env["B"], "two");
    assert_eq!(image.env["C"], "three");
    assert_eq!(image.exposed, [80, 443]);
}
