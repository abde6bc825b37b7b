//! JWT bearer validation for routes with `auth = jwt`: HS256 (a shared
//! secret kept as a namespace secret), RS256 and ES256 (PEM public keys).
//! The signature is checked with `ring`; then `exp` (required), `nbf`,
//! `iss` and `aud` against the route's settings, with a small leeway for
//! clock skew.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, signature};
use serde_json::Value;
use wisp_core::route::{JwtAuth, JwtKey};

/// A route's keys, ready to verify with.
pub struct Verifier {
    cfg: JwtAuth,
    keys: Vec<Key>,
}

enum Key {
    Hs256(hmac::Key),
    Rs256(Vec<u8>),
    Es256(Vec<u8>),
}

impl Key {
    fn alg(&self) -> &'static str {
        match self {
            Key::Hs256(_) => "HS256",
            Key::Rs256(_) => "RS256",
            Key::Es256(_) => "ES256",
        }
    }
}

/// Reads a tag-length-value item of DER; returns (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The key bytes inside a PEM `PUBLIC KEY` (SubjectPublicKeyInfo): for RSA
/// the PKCS#1 `RSAPublicKey`, for EC the uncompressed point — the forms
/// `ring` verifies with.
fn spki_key(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    if !pem.contains("BEGIN PUBLIC KEY") {
        return Err(
            "expected a PEM public key (-----BEGIN PUBLIC KEY-----, SubjectPublicKeyInfo)".into(),
        );
    }
    let der_bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the PEM body is not base64: {e}"))?;
    let bad = || "the PEM public key is not valid SubjectPublicKeyInfo DER".to_string();
    let (tag, spki, _) = der(&der_bytes).ok_or_else(bad)?;
    if tag != 0x30 {
        return Err(bad());
    }
    let (_, _alg, rest) = der(spki).ok_or_else(bad)?;
    let (tag, bits, _) = der(rest).ok_or_else(bad)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return Err(bad());
    }
    Ok(bits[1..].to_vec())
}

fn b64(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

impl Verifier {
    /// `hs256_secret`: the value of the secret named in the config.
    pub fn new(cfg: &JwtAuth, hs256_secret: Option<&str>) -> Result<Self, String> {
        let mut keys = Vec::new();
        for k in &cfg.keys {
            keys.push(match k {
                JwtKey::HS256 { secret } => {
                    let v = hs256_secret.ok_or_else(|| format!("secret {secret:?} is not set"))?;
                    Key::Hs256(hmac::Key::new(hmac::HMAC_SHA256, v.as_bytes()))
                }
                JwtKey::RS256 { pem } => Key::Rs256(spki_key(pem)?),
                JwtKey::ES256 { pem } => {
                    let point = spki_key(pem)?;
                    if point.len() != 65 || point[0] != 4 {
                        return Err("the ES256 key is not a P-256 public key".into());
                    }
                    Key::Es256(point)
                }
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            keys,
        })
    }

    /// Checks a compact JWT; returns its claims or what was wrong.
    pub fn verify(&self, token: &str, now_s: i64) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the token is not a JWT (header.payload.signature)".into());
        };
        let header: Value = b64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the token's header is not base64url JSON")?;
        let alg = header["alg"].as_str().unwrap_or("");
        let sig = b64(s).ok_or("the token's signature is not base64url")?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let mut tried = false;
        let mut ok = false;
        for k in self.keys.iter().filter(|k| k.alg() == alg) {
            tried = true;
            ok = match k {
                Key::Hs256(key) => hmac::verify(key, signed, &sig).is_ok(),
                Key::Rs256(der) => {
                    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
                        .verify(signed, &sig)
                        .is_ok()
                }
                Key::Es256(point) => {
                    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                        .verify(signed, &sig)
                        .is_ok()
                }
            };
            if ok {
                break;
            }
        }
        if !tried {
            return Err(format!(
                "the token's algorithm {alg:?} is not accepted by this route"
            ));
        }
        if !ok {
            return Err("the token's signature does not verify".into());
        }
        let claims: Value = b64(p)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the token's payload is not base64url JSON")?;
        let leeway = self.cfg.leeway_s as i64;
        let exp = claims["exp"].as_i64().ok_or("the token has no exp claim")?;
        if now_s > exp + leeway {
            return Err("the token has expired".into());
        }
        if let Some(nbf) = claims["nbf"].as_i64()
            && now_s + leeway < nbf
        {
            return Err("the token is not valid yet (nbf)".into());
        }
        if let Some(iss) = &self.cfg.issuer
            && claims["iss"].as_str() != Some(iss.as_str())
        {
            return Err(format!("the token's issuer is not {iss:?}"));
        }
        if let Some(aud) = &self.cfg.audience {
            let matches = match &claims["aud"] {
                Value::String(a) => a == aud,
                Value::Array(list) => list.iter().any(|a| a.as_str() == Some(aud.as_str())),
                _ => false,
            };
            if !matches {
                return Err(format!("the token's audience does not include {aud:?}"));
            }
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(secret: &str, claims: &Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let s = URL_SAFE_NO_PAD.encode(hmac::sign(&key, format!("{h}.{p}").as_bytes()));
        format!("{h}.{p}.{s}")
    }

    #[test]
    fn hs256_claims_are_checked() {
        let cfg = JwtAuth {
            issuer: Some("https://id.example".into()),
            audience: Some("shop".into()),
            keys: vec![JwtKey::HS256 {
                secret: "JWT_SECRET".into(),
            }],
            leeway_s: 60,
        };
        let v = Verifier::new(&cfg, Some("s3cret")).unwrap();
        let good = serde_json::json!({"iss": "https://id.example", "aud": ["x", "shop"], "exp": 2000, "sub": "u1"});
        assert_eq!(v.verify(&hs("s3cret", &good), 1000).unwrap()["sub"], "u1");
        assert!(
            v.verify(&hs("other", &good), 1000)
                .unwrap_err()
                .contains("signature")
        );
        assert!(
            v.verify(&hs("s3cret", &good), 2100)
                .unwrap_err()
                .contains("expired")
        );
        let mut wrong = good.clone();
        wrong["aud"] = "other".into();
        assert!(
            v.verify(&hs("s3cret", &wrong), 1000)
                .unwrap_err()
                .contains("audience")
        );
        let mut wrong = good.clone();
        wrong["iss"] = "evil".into();
        assert!(
            v.verify(&hs("s3cret", &wrong), 1000)
                .unwrap_err()
                .contains("issuer")
        );
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(
            v.verify(&hs("s3cret", &no_exp), 1000)
                .unwrap_err()
                .contains("exp")
        );
        assert!(v.verify("a.b", 1000).is_err());
    }
}
