//! Artifacts as files: `<dir>/sha256/<hex>`, written to a temporary file,
//! fsynced, then renamed into place, so a reader never sees a partial file,
//! also after a crash.

use crate::io_err;
use std::fs;
use std::path::PathBuf;
use wisp_core::{ArtifactStore, Digest, StoreError};

pub struct FileArtifacts {
    dir: PathBuf,
}

impl FileArtifacts {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = dir.into();
        let dir = root.join("sha256");
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        // Code of every tenant: readable by the node's user only.
        for d in [&root, &dir] {
            wisp_core::durable::private_dir(d).map_err(|e| io_err(d, e))?;
        }
        Ok(Self { dir })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }
}

impl ArtifactStore for FileArtifacts {
    fn put_artifact(&self, bytes: &[u8]) -> Result<(Digest, bool), StoreError> {
        let digest = Digest::of(bytes);
        let path = self.path_of(&digest);
        if path.exists() {
            return Ok((digest, false));
        }
        wisp_core::durable::write_atomic(&path, bytes).map_err(|e| io_err(&path, e))?;
        Ok((digest, true))
    }

    fn get_artifact(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(digest);
        match fs::read(&path) {
            Ok(b) => {
                if Digest::of(&b) != *digest {
                    return Err(StoreError::Corrupt(format!(
                        "artifact file {} does not match its digest",
                        path.display()
                    )));
                }
                Ok(b)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::ArtifactNotFound(digest.clone()))
            }
            Err(e) => Err(io_err(&path, e)),
        }
    }

    fn has_artifact(&self, digest: &Digest) -> bool {
        self.path_of(digest).exists()
    }

    fn delete_artifact(&self, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.path_of(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_idempotent_and_verified() {
        let dir =
            std::env::temp_dir().join(format!("wisp-art-{}", wisp_core::ActivationId::generate()));
        let store = FileArtifacts::open(&dir).unwrap();
        let (d1, new1) = store.put_artifact(b"hello").unwrap();
        let (d2, new2) = store.put_artifact(b"hello").unwrap();
        assert_eq!(d1, d2);
        assert!(new1 && !new2);
        assert_eq!(store.get_artifact(&d1).unwrap(), b"hello");
        fs::write(store.path_of(&d1), b"tampered").unwrap();
        assert!(matches!(
            store.get_artifact(&d1),
            Err(StoreError::Corrupt(_))
        ));
        let missing = Digest::of(b"nope");
        assert!(matches!(
            store.get_artifact(&missing),
            Err(StoreError::ArtifactNotFound(_))
        ));
        fs::remove_dir_all(dir).unwrap();
    }
}
