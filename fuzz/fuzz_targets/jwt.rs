//! Bearer tokens on `--auth jwt` routes: any string is answered with a
//! verdict, never a panic, and none the fuzzer makes verifies (it cannot
//! compute the HS256 signature, and `alg: none` is never accepted).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wisp_core::{JwtAuth, JwtKey};
use wisp_gateway::jwt::Verifier;

fuzz_target!(|input: (&str, i64)| {
    let (token, now) = input;
    let cfg = JwtAuth {
        issuer: Some("https://id.example".into()),
        audience: Some("shop".into()),
        keys: vec![JwtKey::HS256 {
            secret: "JWT_HS".into(),
        }],
        leeway_s: 60,
    };
    let v = Verifier::new(&cfg, Some("a shared secret the fuzzer does not know"))
        .expect("an HS256 verifier");
    assert!(v.verify(token, now).is_err(), "verified {token:?}");
});
