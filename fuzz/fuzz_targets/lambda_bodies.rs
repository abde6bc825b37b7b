//! What a process function sends back on the Lambda Runtime API: its
//! response (maybe an API Gateway v2 proxy answer, JSON or not) becomes the
//! HTTP answer. Any bytes give a well-formed response, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wisp_exec_process::shape;

fuzz_target!(|body: &[u8]| {
    let resp = shape::api_gateway_response(body);
    let _ = resp.status();
    // And the event shape a request is turned into, with that body.
    let (parts, ()) = http::Request::builder()
        .method("POST")
        .uri("/fn/x/a?b=c")
        .header("content-type", "application/json")
        .body(())
        .expect("a request we build")
        .into_parts();
    let _ = shape::cloud_event(&parts, body);
});
