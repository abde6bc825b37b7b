//! `wisp deploy NAME DIR`: build a Rust crate for wasm32-wasip2 first.

use anyhow::{Context, bail};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

fn ensure_target() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match out {
        Ok(o)
            if String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("==> adding the {TARGET} target (rustup target add {TARGET})");
            let st = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()?;
            if !st.success() {
                bail!("`rustup target add {TARGET}` failed; install the target and retry");
            }
            Ok(())
        }
        Err(e) => {
            bail!("cannot run rustup ({e}); install Rust with rustup and add the {TARGET} target")
        }
    }
}

/// Builds the crate in `dir` in release mode and returns the component path.
pub fn build_crate(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} is a directory without a Cargo.toml: pass a .wasm file or a Rust crate directory",
            dir.display()
        );
    }
    ensure_target()?;
    eprintln!(
        "==> building {} for {TARGET} (cargo build --release)",
        dir.display()
    );
    let mut child = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running cargo")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut wasm = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" {
            let kinds = msg["target"]["kind"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let is_output = kinds.iter().any(|k| k == "bin" || k == "cdylib");
            if is_output {
                for f in msg["filenames"].as_array().into_iter().flatten() {
                    if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                        wasm.push(PathBuf::from(f));
                    }
                }
            }
        }
    }
    if !child.wait()?.success() {
        bail!("cargo build failed (see the errors above)");
    }
    match wasm.len() {
        0 => bail!("the build produced no .wasm: the crate needs a bin or cdylib target"),
        1 => Ok(wasm.remove(0)),
        _ => bail!("the build produced several .wasm files ({wasm:?}): pass the one to deploy"),
    }
}
