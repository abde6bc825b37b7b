//! Secrets at rest: ChaCha20-Poly1305 with a 256-bit key kept in its own
//! file in the data dir (mode 0600), a fresh random nonce per value, and
//! the secret's namespace and name as associated data, so a ciphertext
//! cannot be moved to another name.

use crate::io_err;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use wisp_core::StoreError;

pub struct SecretKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

const KEY_LEN: usize = 32;

impl SecretKey {
    /// Reads the key file, creating it with a random key on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        let rng = SystemRandom::new();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; KEY_LEN];
                rng.fill(&mut b)
                    .map_err(|_| StoreError::Secrets("no system randomness".into()))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| io_err(path, e))?;
                f.write_all(&b).map_err(|e| io_err(path, e))?;
                f.sync_all().map_err(|e| io_err(path, e))?;
                b
            }
            Err(e) => return Err(io_err(path, e)),
        };
        if bytes.len() != KEY_LEN {
            return Err(StoreError::Secrets(format!(
                "{} holds {} bytes, not a {KEY_LEN}-byte key; restore it from a backup (secrets stored with another key cannot be read)",
                path.display(),
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| StoreError::Secrets("invalid key".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng,
        })
    }

    /// Returns (nonce, ciphertext with tag).
    pub(crate) fn seal(&self, aad: &str, plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| StoreError::Secrets("no system randomness".into()))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| StoreError::Secrets("encryption failed".into()))?;
        Ok((nonce.to_vec(), buf))
    }

    pub(crate) fn open(
        &self,
        aad: &str,
        nonce: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| StoreError::Corrupt(format!("secret {aad}: bad nonce")))?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| {
                StoreError::Secrets(format!(
                    "secret {aad} cannot be decrypted: the data dir's secret key is not the one it was stored with"
                ))
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let dir = std::env::temp_dir().join(format!("wisp-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret.key");
        let _ = std::fs::remove_file(&path);
        let k = SecretKey::load_or_create(&path).unwrap();
        let (n, c) = k.seal("shop/STRIPE", b"sk_live_1").unwrap();
        assert!(!c.windows(9).any(|w| w == b"sk_live_1"));
        assert_eq!(k.open("shop/STRIPE", &n, &c).unwrap(), b"sk_live_1");
        assert!(k.open("other/STRIPE", &n, &c).is_err());
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("shop/STRIPE", &n, &c).unwrap(), b"sk_live_1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
