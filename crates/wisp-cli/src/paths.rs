//! Where things live: the XDG data directory and the files in it that
//! client commands read.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// `--data-dir`, else `$XDG_DATA_HOME/wisp`, else `~/.local/share/wisp`.
pub fn data_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("wisp"));
    }
    let home = std::env::var_os("HOME")
        .context("neither --data-dir, WISP_DATA_DIR, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/wisp"))
}

pub const TOKEN_FILE: &str = "admin-token";
pub const URL_FILE: &str = "node-url";
