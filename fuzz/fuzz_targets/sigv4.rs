//! AWS Signature V4 as Lambda clients send it, in the `Authorization`
//! header. Any input is answered with a verdict, never a panic; and a
//! forged signature never verifies. (The S3 API's signatures are the
//! `s3s` crate's, outside this target.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use wisp_gateway::sigv4::{self, Received};

const NOW: i64 = 1_764_633_600; // 2025-12-02T00:00:00Z

fuzz_target!(|input: (&str, &str, &str, Vec<(String, String)>, &[u8])| {
    let (authorization, raw_path, raw_query, headers, body) = input;
    let mut h = http::HeaderMap::new();
    for (k, v) in &headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            h.append(k, v);
        }
    }
    let r = Received {
        method: "GET",
        raw_path,
        raw_query,
        headers: &h,
        body,
    };
    let secret = |_: &str| Some("wisp-fuzz-secret".to_string());
    let _ = sigv4::parse(authorization);
    // The fuzzer cannot compute HMACs: nothing it makes may verify.
    assert!(sigv4::verify(authorization, &r, NOW, secret).is_err());
});
