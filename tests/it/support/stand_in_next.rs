//! A sandbox template whose `next` is a stand-in (`stand_in_next.js`, a small Node server) for
//! the dev server at the network edge: tests of previews run the real local backend (its
//! `npm ci`, workspaces, jail, dev server start and the preview listener) in about a second,
//! with no registry. The stand-in is packed as a package named `next`, and the template depends
//! on that tarball, so `node_modules/next/dist/bin/next` is the stand-in.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

const STAND_IN: &str = include_str!("stand_in_next.js");

pub struct StandInTemplate {
    dir: TempDir,
}

impl StandInTemplate {
    pub fn build() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sandbox-tests");
        std::fs::create_dir_all(&root).unwrap();
        let dir = tempfile::tempdir_in(root).unwrap();
        let package = dir.path().join("next");
        std::fs::create_dir_all(package.join("dist/bin")).unwrap();
        std::fs::write(
            package.join("package.json"),
            r#"{ "name": "next", "version": "0.0.0-stand-in" }"#,
        )
        .unwrap();
        std::fs::write(package.join("dist/bin/next"), STAND_IN).unwrap();
        let cache = dir.path().join("npm-cache");
        npm(&package, &cache, &["pack", "--silent"]);
        let tarball = package.join("next-0.0.0-stand-in.tgz");
        assert!(tarball.exists(), "npm pack made no {}", tarball.display());

        let template = dir.path().join("template");
        std::fs::create_dir_all(template.join("app")).unwrap();
        let manifest = serde_json::json!({
            "name": "stand-in-app",
            "version": "0.1.0",
            "private": true,
            "dependencies": { "next": format!("file:{}", tarball.display()) },
        });
        std::fs::write(template.join("package.json"), manifest.to_string()).unwrap();
        npm(
            &template,
            &cache,
            &[
                "install",
                "--package-lock-only",
                "--offline",
                "--no-audit",
                "--no-fund",
            ],
        );
        Self { dir }
    }

    /// The template directory (`SANDBOX_TEMPLATE_DIR`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("template")
    }
}

fn npm(dir: &Path, cache: &Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("npm_config_cache", cache)
        .env("npm_config_update_notifier", "false")
        .output()
        .expect("run npm (the local sandbox backend needs it)");
    assert!(
        out.status.success(),
        "npm {args:?} in {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
