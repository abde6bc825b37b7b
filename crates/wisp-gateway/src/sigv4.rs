//! AWS Signature Version 4 verification, for the Lambda Invoke API: boto3,
//! the AWS CLI and every AWS SDK sign requests this way, so they work
//! against Wisp with an endpoint URL and a Wisp-issued access key.
//!
//! The server rebuilds the canonical request from what it received (method,
//! path, query, the headers the client says it signed, the body's SHA-256),
//! derives the signing key from the key's secret and the credential scope,
//! and compares signatures in constant time. Requests more than 15 minutes
//! off the node's clock are refused (replay window).

use ring::{digest, hmac};
use wisp_core::time::percent_decode;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const MAX_SKEW_S: i64 = 15 * 60;

/// What the `Authorization` header says.
#[derive(Debug, PartialEq, Eq)]
pub struct Credential<'a> {
    pub key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SigError {
    /// The Authorization header is not SigV4 (400-ish, reported as 403).
    Malformed(String),
    /// No such access key.
    UnknownKey(String),
    /// The signature does not match, or the date is outside the window.
    Mismatch(String),
}

impl std::fmt::Display for SigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigError::Malformed(m) | SigError::Mismatch(m) => f.write_str(m),
            SigError::UnknownKey(k) => write!(
                f,
                "the access key {k:?} is not known to this node (create one with `wisp accesskey create`)"
            ),
        }
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=ID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse(header: &str) -> Result<Credential<'_>, SigError> {
    let bad = |m: &str| SigError::Malformed(format!("Authorization: {m}"));
    let rest = header
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| bad("expected an AWS Signature V4 (AWS4-HMAC-SHA256) header"))?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let cred = cred.ok_or_else(|| bad("no Credential"))?;
    let mut scope = cred.split('/');
    let (Some(key_id), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(bad("Credential is not ID/DATE/REGION/SERVICE/aws4_request"));
    };
    let signed_headers: Vec<&str> = signed
        .ok_or_else(|| bad("no SignedHeaders"))?
        .split(';')
        .collect();
    if !signed_headers.contains(&"host") {
        return Err(bad("SignedHeaders must include host"));
    }
    Ok(Credential {
        key_id,
        date,
        region,
        service,
        signed_headers,
        signature: sig.ok_or_else(|| bad("no Signature"))?,
    })
}

/// AWS URI encoding: unreserved characters stay, everything else `%XX`.
fn encode(s: &str, keep_slash: bool, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// The request as received, for verification.
pub struct Received<'a> {
    pub method: &'a str,
    /// The path as it arrived (percent-encoded).
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

fn canonical_request(r: &Received<'_>, c: &Credential<'_>) -> Result<String, SigError> {
    let mut out = String::with_capacity(512);
    out.push_str(r.method);
    out.push('\n');
    // Services other than S3 encode the (already encoded) path once more.
    encode(r.raw_path, true, &mut out);
    out.push('\n');
    let mut pairs: Vec<(String, String)> = r
        .raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut ek, mut ev) = (String::new(), String::new());
            encode(&percent_decode(k, false), false, &mut ek);
            encode(&percent_decode(v, false), false, &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&query.join("&"));
    out.push('\n');
    for name in &c.signed_headers {
        let values: Vec<String> = r
            .headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(SigError::Mismatch(format!(
                "the signed header {name:?} is missing from the request"
            )));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&c.signed_headers.join(";"));
    out.push('\n');
    let body_hash = hex_sha256(r.body);
    if let Some(claimed) = r.headers.get("x-amz-content-sha256")
        && claimed.as_bytes() != body_hash.as_bytes()
        && claimed.as_bytes() != b"UNSIGNED-PAYLOAD"
    {
        return Err(SigError::Mismatch(
            "x-amz-content-sha256 does not match the body".into(),
        ));
    }
    out.push_str(&body_hash);
    Ok(out)
}

fn hmac_sign(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// `X-Amz-Date` (`20261123T174500Z`) as seconds since the epoch.
fn amz_date_s(s: &str) -> Option<i64> {
    if s.len() != 16 {
        return None;
    }
    wisp_core::time::parse_utc(s, "%Y%m%dT%H%M%SZ")
}

/// Verifies a request; `secret_of` finds a key's secret by id. Returns
/// the key id.
pub fn verify<'a>(
    authorization: &'a str,
    r: &Received<'_>,
    now_s: i64,
    secret_of: impl FnOnce(&str) -> Option<String>,
) -> Result<&'a str, SigError> {
    verify_with(authorization, r, now_s, secret_of)
}

fn verify_with<'a>(
    authorization: &'a str,
    r: &Received<'_>,
    now_s: i64,
    secret_of: impl FnOnce(&str) -> Option<String>,
) -> Result<&'a str, SigError> {
    let c = parse(authorization)?;
    let secret = secret_of(c.key_id).ok_or_else(|| SigError::UnknownKey(c.key_id.to_string()))?;
    let date = r
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SigError::Malformed("X-Amz-Date is missing".into()))?;
    let t = amz_date_s(date).ok_or_else(|| {
        SigError::Malformed(format!("X-Amz-Date {date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if (now_s - t).abs() > MAX_SKEW_S {
        return Err(SigError::Mismatch(format!(
            "X-Amz-Date {date} is more than 15 minutes from the node's clock"
        )));
    }
    check(&c, date, canonical_request(r, &c)?, &secret)?;
    Ok(c.key_id)
}

/// Compares the signature with the one the canonical request gives.
fn check(c: &Credential<'_>, date: &str, canonical: String, secret: &str) -> Result<(), SigError> {
    if !date.starts_with(c.date) {
        return Err(SigError::Mismatch(
            "the credential's date is not the request's date".into(),
        ));
    }
    let scope = format!("{}/{}/{}/aws4_request", c.date, c.region, c.service);
    let to_sign = format!(
        "{ALGORITHM}\n{date}\n{scope}\n{}",
        hex_sha256(canonical.as_bytes())
    );
    let k_date = hmac_sign(format!("AWS4{secret}").as_bytes(), c.date.as_bytes());
    let k_region = hmac_sign(&k_date, c.region.as_bytes());
    let k_service = hmac_sign(&k_region, c.service.as_bytes());
    let k_signing = hmac_sign(&k_service, b"aws4_request");
    let expected = hex::encode(hmac_sign(&k_signing, to_sign.as_bytes()));
    if !crate::tenancy::same(expected.as_bytes(), c.signature.as_bytes()) {
        return Err(SigError::Mismatch(
            "the request signature does not match (check the secret access key, and that nothing rewrote the request on its way)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from AWS's SigV4 documentation ("GET /?Param2=value2&Param1=value1",
    /// service `service`, secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY).
    #[test]
    fn aws_documentation_example_verifies() {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500";
        let r = Received {
            method: "GET",
            raw_path: "/",
            raw_query: "Param2=value2&Param1=value1",
            headers: &headers,
            body: b"",
        };
        let now = amz_date_s("20150830T123600Z").unwrap();
        let secret = || Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string());
        assert_eq!(verify(auth, &r, now, |_| secret()), Ok("AKIDEXAMPLE"));
        let wrong = || Some("not-the-secret".to_string());
        assert!(matches!(
            verify(auth, &r, now, |_| wrong()),
            Err(SigError::Mismatch(_))
        ));
        assert!(matches!(
            verify(auth, &r, now + 3600, |_| secret()),
            Err(SigError::Mismatch(_))
        ));
        assert!(matches!(
            verify(auth, &r, now, |_| None),
            Err(SigError::UnknownKey(_))
        ));
        assert!(matches!(
            verify("Bearer x", &r, now, |_| secret()),
            Err(SigError::Malformed(_))
        ));
    }
}
