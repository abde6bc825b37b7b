//! Bundles: a `.zip` or `.tar.gz` artifact unpacked once per artifact into
//! a read-only code directory. Entries that would land outside it (`..`,
//! absolute paths, links) are refused, so a bundle cannot write elsewhere.

use crate::ProcessError;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// What kind of archive the bytes are.
pub fn kind(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        Some("zip")
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Some("tar.gz")
    } else {
        None
    }
}

fn safe_path(root: &Path, name: &Path) -> Result<PathBuf, ProcessError> {
    let mut out = root.to_path_buf();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(ProcessError::Bundle(format!(
                    "entry {:?} points outside the bundle",
                    name.display()
                )));
            }
        }
    }
    Ok(out)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ProcessError + '_ {
    move |e| ProcessError::Bundle(format!("{}: {e}", path.display()))
}

/// Most bytes a bundle may unpack to (a zip bomb is refused).
const MAX_UNPACKED: u64 = 1 << 30;

fn unpack_zip(bytes: &[u8], dir: &Path) -> Result<(), ProcessError> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| ProcessError::Bundle(format!("not a valid zip: {e}")))?;
    let mut total = 0u64;
    for i in 0..z.len() {
        let mut f = z
            .by_index(i)
            .map_err(|e| ProcessError::Bundle(format!("zip entry {i}: {e}")))?;
        let name = f.enclosed_name().ok_or_else(|| {
            ProcessError::Bundle(format!("entry {:?} points outside the bundle", f.name()))
        })?;
        let path = safe_path(dir, &name)?;
        if f.is_dir() {
            std::fs::create_dir_all(&path).map_err(io(&path))?;
            continue;
        }
        if f.is_symlink() {
            return Err(ProcessError::Bundle(format!(
                "entry {:?} is a symbolic link; bundles hold files and directories only",
                f.name()
            )));
        }
        let mode = f.unix_mode().unwrap_or(0o644);
        let mtime = f.last_modified().and_then(|t| {
            wisp_core::time::utc_seconds(
                t.year().into(),
                t.month().into(),
                t.day().into(),
                t.hour().into(),
                t.minute().into(),
                t.second().into(),
            )
        });
        write_file(&path, &mut f, (mode, mtime), &mut total)?;
    }
    Ok(())
}

fn unpack_tar_gz(bytes: &[u8], dir: &Path) -> Result<(), ProcessError> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut total = 0u64;
    for entry in a
        .entries()
        .map_err(|e| ProcessError::Bundle(format!("not a valid tar.gz: {e}")))?
    {
        let mut e = entry.map_err(|e| ProcessError::Bundle(format!("tar entry: {e}")))?;
        let name = e
            .path()
            .map_err(|e| ProcessError::Bundle(format!("tar entry name: {e}")))?
            .into_owned();
        let path = safe_path(dir, &name)?;
        let ty = e.header().entry_type();
        if ty.is_dir() {
            std::fs::create_dir_all(&path).map_err(io(&path))?;
            continue;
        }
        if !ty.is_file() {
            return Err(ProcessError::Bundle(format!(
                "entry {:?} is not a file or directory; bundles hold files and directories only",
                name.display()
            )));
        }
        let mode = e.header().mode().unwrap_or(0o644);
        let mtime = e.header().mtime().ok().map(|t| t as i64);
        write_file(&path, &mut e, (mode, mtime), &mut total)?;
    }
    Ok(())
}

/// Writes one file of a bundle, read-only (executable when it was), with
/// its time from the archive (as `tar` and `unzip` do, so that caches keyed
/// on source times shipped in the bundle, like Python's `.pyc`, stay valid
/// in the read-only code dir), and keeps the running total under
/// [`MAX_UNPACKED`].
fn write_file(
    path: &Path,
    from: &mut impl Read,
    (mode, mtime): (u32, Option<i64>),
    total: &mut u64,
) -> Result<(), ProcessError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut data = Vec::new();
    from.take(MAX_UNPACKED - *total + 1)
        .read_to_end(&mut data)
        .map_err(io(path))?;
    *total += data.len() as u64;
    if *total > MAX_UNPACKED {
        return Err(ProcessError::Bundle(
            "the bundle unpacks to more than 1 GiB".into(),
        ));
    }
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    std::io::Write::write_all(&mut file, &data).map_err(io(path))?;
    if let Some(secs) = mtime.filter(|s| *s > 0) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
        file.set_modified(t).map_err(io(path))?;
    }
    drop(file);
    set_mode(path, if mode & 0o111 != 0 { 0o555 } else { 0o444 })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ProcessError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// Unpacks `bytes` into `dir` (once: an existing `dir` is reused). The
/// directory appears whole or not at all (unpacked beside it, renamed).
pub fn unpack(bytes: &[u8], dir: &Path, python: Option<&str>) -> Result<(), ProcessError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .ok_or_else(|| ProcessError::Bundle("no parent directory".into()))?;
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("bundle")
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let done = match kind(bytes) {
        Some("zip") => unpack_zip(bytes, &tmp),
        Some(_) => unpack_tar_gz(bytes, &tmp),
        None => Err(ProcessError::Bundle(
            "the artifact is neither a .zip nor a .tar.gz bundle".into(),
        )),
    };
    if let Err(e) = done {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Some(python) = python {
        compile_python(python, &tmp);
    }
    set_mode(&tmp, 0o555)?;
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(io(dir)(e)),
    }
}

/// Compiles the `.py` files under `dir` to bytecode (`__pycache__`) with
/// the function's own interpreter, so the cache matches it. Compiling runs
/// none of the code; isolated mode (`-I`) keeps the bundle's files and the
/// environment out of the interpreter's start. Best effort: without it
/// Python still runs, only its cold starts are slower.
fn compile_python(python: &str, dir: &Path) {
    let t = std::time::Instant::now();
    let out = std::process::Command::new(python)
        .args(["-I", "-m", "compileall", "-q", "-j", "0"])
        .arg(dir)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            tracing::debug!(
                ms = t.elapsed().as_millis() as u64,
                "bundle compiled to bytecode"
            )
        }
        Ok(o) => tracing::info!(
            status = %o.status,
            output = %String::from_utf8_lossy(&o.stdout).chars().take(500).collect::<String>(),
            "some of the bundle's Python modules did not compile; they will compile at each start"
        ),
        Err(e) => tracing::info!(python, error = %e, "cannot compile the bundle's Python modules"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tar_gz(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(1_700_000_001);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name to test the unpacker.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn tar_gz_unpacks_read_only_with_times_and_refuses_escapes() {
        let root = std::env::temp_dir().join(format!("wisp-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("code");
        let bytes = tar_gz(&[
            ("bootstrap", b"#!/bin/sh\n", 0o755),
            ("lib/a.py", b"x = 1\n", 0o644),
        ]);
        assert_eq!(kind(&bytes), Some("tar.gz"));
        unpack(&bytes, &dir, None).unwrap();
        let meta = std::fs::metadata(dir.join("lib/a.py")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        let secs = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(secs, 1_700_000_001);
        assert_eq!(
            std::fs::metadata(dir.join("bootstrap"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o555
        );
        let evil = tar_gz(&[("../escape", b"x", 0o644)]);
        let err = unpack(&evil, &root.join("evil"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the bundle"), "{err}");
        assert!(!root.join("escape").exists());
        assert!(unpack(b"not a bundle", &root.join("x"), None).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
