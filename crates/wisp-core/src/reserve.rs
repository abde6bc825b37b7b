//! Disk space kept back so that deletes still work on a full disk.
//!
//! SQLite needs room to delete (a delete appends pages to the WAL), so on
//! a disk that writes have filled, deleting a key, an object's row or a
//! function would fail like the writes do. At start the node writes a
//! reserve file (`<data-dir>/reserve`, 8 MiB by default, `--disk-reserve`)
//! and keeps it. A delete that fails for lack of space frees the reserve
//! and runs once more ([`deleting`]); a background thread makes the
//! reserve again once the disk has room for it and a margin.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

static RESERVE: OnceLock<Reserve> = OnceLock::new();

/// How often a freed reserve is made again when there is room.
const RESTORE_EVERY: Duration = Duration::from_secs(5);

struct Reserve {
    path: PathBuf,
    size: u64,
    /// Whether the file is there, whole.
    held: Mutex<bool>,
}

/// Keeps `size` bytes at `path` (0: no reserve) for the rest of the
/// process. Without room for it now, the reserve is made once there is.
pub fn install(path: &Path, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    let r = Reserve {
        path: path.to_path_buf(),
        size,
        held: Mutex::new(false),
    };
    if RESERVE.set(r).is_err() {
        return Ok(());
    }
    restore();
    std::thread::Builder::new()
        .name("wisp-reserve".into())
        .spawn(|| {
            loop {
                std::thread::sleep(RESTORE_EVERY);
                restore();
            }
        })?;
    Ok(())
}

/// Frees the reserve; true when that gave space back (so a failed delete
/// is worth trying again).
pub fn release() -> bool {
    let Some(r) = RESERVE.get() else {
        return false;
    };
    let mut held = r.held.lock().unwrap_or_else(|p| p.into_inner());
    if !*held {
        return false;
    }
    *held = false;
    match std::fs::remove_file(&r.path) {
        Ok(()) => {
            tracing::warn!(path = %r.path.display(), bytes = r.size, "the disk is full: freed the reserve so that deletes can be stored");
            true
        }
        Err(e) => {
            tracing::error!(path = %r.path.display(), error = %e, "freeing the disk reserve failed");
            false
        }
    }
}

/// Makes the reserve again if it was freed and the disk has room for it
/// twice over (so that making it does not fill the disk itself).
pub fn restore() {
    let Some(r) = RESERVE.get() else {
        return;
    };
    let mut held = r.held.lock().unwrap_or_else(|p| p.into_inner());
    if *held {
        return;
    }
    let dir = r.path.parent().unwrap_or(Path::new("."));
    let have = std::fs::metadata(&r.path).map(|m| m.len()).unwrap_or(0);
    if have < r.size && free_bytes(dir).is_none_or(|f| f < 2 * (r.size - have)) {
        return;
    }
    match write_reserve(&r.path, r.size) {
        Ok(()) => *held = true,
        Err(e) => {
            let _ = std::fs::remove_file(&r.path);
            tracing::debug!(error = %e, "the disk reserve could not be made yet");
        }
    }
}

fn write_reserve(path: &Path, size: u64) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map(io::BufWriter::new)?;
    let chunk = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a NUL-terminated path and `st` a zeroed statvfs the
    // call fills in; nothing is kept past the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Runs a delete; when it fails because the disk is full (`is_full`) and
/// freeing the reserve gave space back, runs it once more.
pub fn deleting<T, E>(
    is_full: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    match op() {
        Err(e) if is_full(&e) && release() => op(),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_freed_for_a_failed_delete_and_made_again() {
        let dir = std::env::temp_dir().join(format!("wisp-reserve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("reserve");
        install(&path, 64 * 1024).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * 1024);
        // A delete that fails for lack of space runs once more after the
        // reserve is freed; one that fails otherwise does not.
        let mut runs = 0;
        let r: Result<(), &str> = deleting(
            |e| *e == "full",
            || {
                runs += 1;
                if runs == 1 { Err("full") } else { Ok(()) }
            },
        );
        assert_eq!((r, runs), (Ok(()), 2));
        assert!(!path.exists());
        // Nothing left to free: no second try.
        let mut runs = 0;
        let r: Result<(), &str> = deleting(
            |e| *e == "full",
            || {
                runs += 1;
                Err("full")
            },
        );
        assert_eq!((r, runs), (Err("full"), 1));
        restore();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * 1024);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
