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
        write_file(&path, &mut f, mode, &mut total)?;
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
        write_file(&path, &mut e, mode, &mut total)?;
    }
    Ok(())
}

/// Writes one file of a bundle, read-only (executable when it was), and
/// keeps the running total under [`MAX_UNPACKED`].
fn write_file(
    path: &Path,
    from: &mut impl Read,
    mode: u32,
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
    std::fs::write(path, &data).map_err(io(path))?;
    set_mode(path, if mode & 0o111 != 0 { 0o555 } else { 0o444 })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ProcessError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// Unpacks `bytes` into `dir` (once: an existing `dir` is reused). The
/// directory appears whole or not at all (unpacked beside it, renamed).
pub fn unpack(bytes: &[u8], dir: &Path) -> Result<(), ProcessError> {
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
