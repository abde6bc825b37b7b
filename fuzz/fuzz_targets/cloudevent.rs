//! CloudEvents as publishers send them: binary mode (`ce-*` headers and a
//! body), structured mode and batches (JSON). Parsing never panics, and an
//! accepted event survives its own round trip through binary headers.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wisp_core::CloudEvent;

fuzz_target!(|input: (u8, Vec<(String, String)>, &[u8])| {
    let (mode, headers, body) = input;
    match mode % 3 {
        0 => {
            let mut h = http::HeaderMap::new();
            for (k, v) in &headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    h.append(k, v);
                }
            }
            if let Ok(ev) = CloudEvent::from_binary(&h, Bytes::copy_from_slice(body)) {
                let mut back = http::HeaderMap::new();
                for (k, v) in ev.binary_headers() {
                    back.append(
                        http::HeaderName::from_bytes(k.as_bytes()).expect("header name we made"),
                        http::HeaderValue::from_str(&v).expect("header value we made"),
                    );
                }
                let again = CloudEvent::from_binary(&back, ev.data.clone())
                    .expect("an accepted event parses again from its own headers");
                assert_eq!(again.id, ev.id);
                assert_eq!(again.source, ev.source);
                assert_eq!(again.ty, ev.ty);
            }
        }
        1 => {
            if let Ok(ev) = CloudEvent::from_structured(body) {
                // How the queue stores an event, and reads it back.
                let again = CloudEvent::from_attributes_json(&ev.attributes_json(), ev.data.clone())
                    .expect("an accepted event reads back from the queue's form");
                assert_eq!(again.id, ev.id);
                assert_eq!(again.extensions, ev.extensions);
            }
        }
        _ => {
            let _ = CloudEvent::from_batch(body);
        }
    }
});
