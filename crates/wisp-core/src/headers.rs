//! Headers Wisp itself sets on the requests it hands to functions
//! (`x-wisp-path-params`, `x-wisp-route`, `x-wisp-api-key-name`,
//! `x-wisp-jwt-claims`, …). A function trusts them, so a client must never
//! be able to send one: every path into a function (user routes, direct
//! URLs, the Lambda Invoke API, events) calls [`strip_wisp_headers`] on
//! what the client sent before Wisp adds its own.

use http::HeaderMap;

/// The prefix of every header Wisp sets for a function.
pub const WISP_HEADER_PREFIX: &str = "x-wisp-";
/// The route's path parameters as a JSON object.
pub const PATH_PARAMS: &str = "x-wisp-path-params";
/// The route's label (`GET /items/{id}`).
pub const ROUTE: &str = "x-wisp-route";
/// The name (never the value) of the API key that was checked.
pub const API_KEY_NAME: &str = "x-wisp-api-key-name";
/// The claims of the JWT that was verified, as JSON.
pub const JWT_CLAIMS: &str = "x-wisp-jwt-claims";

/// Removes every `x-wisp-*` header (header names are lower-case in
/// `http`). Returns how many were removed.
pub fn strip_wisp_headers(headers: &mut HeaderMap) -> usize {
    let forged: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(WISP_HEADER_PREFIX))
        .cloned()
        .collect();
    let n = forged.len();
    for k in forged {
        headers.remove(&k);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_every_wisp_header_and_only_those() {
        let mut h = HeaderMap::new();
        h.insert("x-wisp-jwt-claims", "{\"sub\":\"admin\"}".parse().unwrap());
        h.append("X-Wisp-Api-Key-Name", "a".parse().unwrap());
        h.append("x-wisp-api-key-name", "b".parse().unwrap());
        h.insert("x-wisp-anything", "1".parse().unwrap());
        h.insert("x-wispy", "kept".parse().unwrap());
        h.insert("authorization", "Bearer t".parse().unwrap());
        assert_eq!(strip_wisp_headers(&mut h), 3);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("x-wispy") && h.contains_key("authorization"));
    }
}
