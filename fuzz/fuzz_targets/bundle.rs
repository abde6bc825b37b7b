//! Bundles (`.zip`, `.tar.gz`) uploaded for process functions: any bytes
//! unpack or are refused, never panic, and nothing lands outside the
//! target directory (no `..`, absolute paths or links out).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wisp_exec_process::bundle;

fn walk(dir: &Path, root: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).expect("stat an unpacked entry");
        assert!(!meta.file_type().is_symlink(), "a link was unpacked: {}", p.display());
        assert!(p.starts_with(root));
        if meta.is_dir() {
            walk(&p, root);
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let base = std::env::temp_dir().join(format!("wisp-fuzz-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("root");
    std::fs::create_dir_all(&root).expect("a scratch dir");
    let code = root.join("code");
    if bundle::unpack(bytes, &code, None).is_ok() {
        walk(&code, &code);
    }
    // Only `code` (or nothing) may exist beside it.
    for e in std::fs::read_dir(&root).expect("scratch dir").flatten() {
        assert_eq!(e.file_name(), "code", "the bundle wrote {:?}", e.path());
    }
    // Unpacked code is read-only (0555); let the next run remove it.
    let _ = std::process::Command::new("chmod").args(["-R", "u+w"]).arg(&base).status();
    let _ = std::fs::remove_dir_all(&base);
});
