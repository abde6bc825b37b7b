//! Gateway routes: method + path template + optional host → function, with
//! per-route auth, CORS and rate limit.

use crate::ids::{FunctionName, Namespace};
use crate::tenancy::{Rate, TenancyError};
use serde::{Deserialize, Serialize};

/// How callers of a route prove who they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAuth {
    /// Anyone may call it.
    #[default]
    None,
    /// An `x-api-key` header with a key of the route's namespace.
    ApiKey,
    /// An `Authorization: Bearer <JWT>` header, verified with the route's
    /// `jwt` settings.
    Jwt,
}

impl RouteAuth {
    pub fn parse(s: &str) -> Result<Self, TenancyError> {
        match s {
            "none" | "public" => Ok(Self::None),
            "api-key" | "apikey" => Ok(Self::ApiKey),
            "jwt" => Ok(Self::Jwt),
            _ => Err(TenancyError::Invalid(format!(
                "auth {s:?} is not one of none, api-key, jwt"
            ))),
        }
    }
}

/// JWT validation settings of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// Required `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// A value the `aud` claim must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Keys a token may be signed with (any one verifies).
    pub keys: Vec<JwtKey>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u32,
}

fn default_leeway() -> u32 {
    60
}

/// A key to verify JWT signatures with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alg", deny_unknown_fields)]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtKey {
    /// HMAC-SHA256 with the value of a namespace secret (by name), so the
    /// shared key is encrypted at rest like every secret.
    HS256 { secret: String },
    /// RSA PKCS#1 v1.5 with SHA-256: a PEM public key (SubjectPublicKeyInfo).
    RS256 { pem: String },
    /// ECDSA P-256 with SHA-256: a PEM public key (SubjectPublicKeyInfo).
    ES256 { pem: String },
}

/// Cross-origin settings of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Origins allowed to call (`https://shop.example`), or `*`.
    pub origins: Vec<String>,
    /// Request headers a browser may send; empty: whatever it asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Whether cookies and credentials may be sent (not with `*`).
    #[serde(default)]
    pub credentials: bool,
    /// How long a browser may cache a preflight answer, in seconds.
    #[serde(default = "default_max_age")]
    pub max_age_s: u32,
}

fn default_max_age() -> u32 {
    600
}

impl Cors {
    /// Whether `origin` may call the route.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == "*" || o == origin)
    }
}

/// A route as the user asks for it and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Upper-case method (`GET`), or `None` for any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path template: `/items/{id}`, `/files/{*rest}`.
    pub path: String,
    /// Host (custom domain) the route answers on; `None`: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub function: FunctionName,
    #[serde(default)]
    pub auth: RouteAuth,
    /// With `auth = jwt`: how tokens are verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Requests per period for the whole route (all callers together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

/// Most parameters in one path template (the route table's matcher takes
/// at most 26; more made it panic, found by the route_match fuzz target).
pub const MAX_PARAMS: usize = 16;
/// Longest path template, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Path prefixes the node itself serves; routes cannot take them.
pub const RESERVED_PREFIXES: &[&str] = &[
    "/v1",
    "/fn",
    "/ns",
    "/healthz",
    "/metrics",
    "/2015-03-31",
    "/ui",
];

impl RouteSpec {
    /// Checks and normalizes the spec (upper-case method, lower-case host).
    pub fn normalize(&mut self) -> Result<(), TenancyError> {
        let bad = |m: String| Err(TenancyError::Invalid(m));
        if let Some(m) = &mut self.method {
            m.make_ascii_uppercase();
            if m == "ANY" || m == "*" {
                self.method = None;
            } else if m.is_empty() || !m.bytes().all(|c| c.is_ascii_uppercase()) {
                return bad(format!(
                    "method {m:?} is not an HTTP method like GET or POST"
                ));
            }
        }
        if let Some(h) = &mut self.host {
            *h = normalize_host(h)?;
        }
        let p = &self.path;
        if !p.starts_with('/') {
            return bad(format!("path {p:?} must start with '/'"));
        }
        for r in RESERVED_PREFIXES {
            if p == r || p.starts_with(&format!("{r}/")) {
                return bad(format!(
                    "path {p:?} is under {r}, which Wisp itself serves; pick another prefix"
                ));
            }
        }
        if p.len() > MAX_PATH_LEN {
            return bad(format!(
                "path template is {} bytes long; at most {MAX_PATH_LEN} are allowed",
                p.len()
            ));
        }
        let segments: Vec<&str> = p[1..].split('/').collect();
        let params = segments.iter().filter(|s| s.starts_with('{')).count();
        if params > MAX_PARAMS {
            return bad(format!(
                "path {p:?} has {params} parameters; at most {MAX_PARAMS} are allowed"
            ));
        }
        for (i, seg) in segments.iter().enumerate() {
            if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (catch_all, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                let ok_name = !name.is_empty()
                    && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
                if !ok_name {
                    return bad(format!(
                        "path {p:?}: parameter {seg:?} needs a name of letters, digits and '_'"
                    ));
                }
                if catch_all && i + 1 != segments.len() {
                    return bad(format!(
                        "path {p:?}: the catch-all {seg:?} must be the last segment"
                    ));
                }
            } else if seg.contains(['{', '}', '?', '#', '*']) {
                return bad(format!(
                    "path {p:?}: segment {seg:?} may not contain '{{', '}}', '*', '?' or '#' (parameters are whole segments like {{id}})"
                ));
            }
        }
        match (&self.auth, &self.jwt) {
            (RouteAuth::Jwt, None) => {
                return bad("auth jwt needs jwt settings with at least one key".to_string());
            }
            (RouteAuth::Jwt, Some(j)) if j.keys.is_empty() => {
                return bad(
                    "jwt: give at least one key (HS256 secret, RS256 or ES256 PEM)".to_string(),
                );
            }
            (RouteAuth::Jwt, Some(j)) => {
                for k in &j.keys {
                    if let JwtKey::HS256 { secret } = k {
                        crate::tenancy::check_secret_name(secret)?;
                    }
                }
            }
            (_, Some(_)) => {
                return bad("jwt settings are given but auth is not jwt".to_string());
            }
            _ => {}
        }
        if let Some(c) = &self.cors {
            if c.origins.is_empty() {
                return bad("cors: give at least one origin, or * for any".to_string());
            }
            for o in &c.origins {
                let rest = o
                    .strip_prefix("https://")
                    .or_else(|| o.strip_prefix("http://"));
                let ok = o == "*" || rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', ' ']));
                if !ok {
                    return bad(format!(
                        "cors origin {o:?} must be scheme://host[:port] (no path), or *"
                    ));
                }
            }
            if c.credentials && c.origins.iter().any(|o| o == "*") {
                return bad(
                    "cors: credentials cannot be allowed for any origin (*); list the origins"
                        .to_string(),
                );
            }
        }
        Ok(())
    }

    /// The id of a route: stable for the same host, method and path.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let key = format!(
            "{}|{}|{}",
            self.host.as_deref().unwrap_or(""),
            self.method.as_deref().unwrap_or("ANY"),
            self.path
        );
        hex::encode(&Sha256::digest(key.as_bytes())[..8])
    }

    /// `GET api.shop.example/items/{id}` — how the route is shown.
    pub fn label(&self) -> String {
        format!(
            "{} {}{}",
            self.method.as_deref().unwrap_or("ANY"),
            self.host.as_deref().unwrap_or(""),
            self.path
        )
    }
}

/// One segment of a path template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Static(&'a str),
    /// `{name}`: any one segment (matchit also lets it match an empty
    /// one: `/{a}//x` answers `///x`, as the route_match fuzz target found).
    Param,
    /// `{*name}`: the rest of the path.
    CatchAll,
}

fn segments(template: &str) -> Vec<Segment<'_>> {
    template
        .strip_prefix('/')
        .unwrap_or(template)
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(inner) if inner.starts_with('*') => Segment::CatchAll,
                Some(_) => Segment::Param,
                None => Segment::Static(seg),
            },
        )
        .collect()
}

/// Whether some concrete path could match both templates: the same
/// template, a more or a less specific one (`/a/{id}` and `/a/new`,
/// `/a/{*rest}` and `/a/b/c`). Conservative at the edges: a catch-all is
/// taken to match any rest of the path, even an empty one.
pub fn templates_overlap(a: &str, b: &str) -> bool {
    fn go(a: &[Segment<'_>], b: &[Segment<'_>]) -> bool {
        match (a.first(), b.first()) {
            (None, None) => true,
            (Some(Segment::CatchAll), _) | (_, Some(Segment::CatchAll)) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(x), Some(y)) => {
                let one = match (x, y) {
                    (Segment::Static(p), Segment::Static(q)) => p == q,
                    // A parameter matches any segment, an empty one too.
                    _ => true,
                };
                one && go(&a[1..], &b[1..])
            }
        }
    }
    go(&segments(a), &segments(b))
}

/// Checks and normalizes a host (custom domain): lower case, letters,
/// digits, `-` and `.`, no scheme or port.
pub fn normalize_host(host: &str) -> Result<String, TenancyError> {
    let h = host.to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
    if ok {
        Ok(h)
    } else {
        Err(TenancyError::Invalid(format!(
            "host {h:?} is not a domain name like api.shop.example (no scheme, no port)"
        )))
    }
}

/// A stored route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub id: String,
    pub namespace: Namespace,
    #[serde(flatten)]
    pub spec: RouteSpec,
    pub created_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, path: &str) -> RouteSpec {
        RouteSpec {
            method: Some(method.into()),
            path: path.into(),
            host: None,
            function: FunctionName::new("f").unwrap(),
            auth: RouteAuth::None,
            jwt: None,
            cors: None,
            rate: None,
        }
    }

    #[test]
    fn paths_are_checked() {
        assert!(spec("get", "/items/{id}").normalize().is_ok());
        assert!(spec("GET", "/files/{*rest}").normalize().is_ok());
        assert!(spec("GET", "items").normalize().is_err());
        assert!(spec("GET", "/v1/functions").normalize().is_err());
        assert!(spec("GET", "/fn").normalize().is_err());
        assert!(spec("GET", "/a/{*rest}/b").normalize().is_err());
        assert!(spec("GET", "/a/x{id}").normalize().is_err());
        assert!(spec("GE T", "/a").normalize().is_err());
        let many = |n: usize| (0..n).map(|i| format!("/{{p{i}}}")).collect::<String>();
        assert!(spec("GET", &many(MAX_PARAMS)).normalize().is_ok());
        let e = spec("GET", &many(MAX_PARAMS + 1)).normalize().unwrap_err();
        assert!(e.to_string().contains("at most 16"), "{e}");
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(spec("GET", &long).normalize().is_err());
        let mut s = spec("any", "/a");
        s.normalize().unwrap();
        assert_eq!(s.method, None);
    }

    #[test]
    fn overlapping_templates() {
        let yes = [
            ("/a", "/a"),
            ("/items/{id}", "/items/{name}"),
            ("/items/{id}", "/items/new"),
            ("/items/new", "/items/{id}"),
            ("/files/{*rest}", "/files/a/b/c"),
            ("/files/a/b", "/files/{*rest}"),
            ("/{*all}", "/anything/at/all"),
            ("/files/{*rest}", "/files"),
            ("/a/{x}/c", "/a/b/{y}"),
            ("/{x}", "/shop"),
            ("/{x}", "/"),
            ("/{a}//x", "///x"),
        ];
        for (a, b) in yes {
            assert!(templates_overlap(a, b), "{a} and {b} overlap");
            assert!(templates_overlap(b, a), "{b} and {a} overlap");
        }
        let no = [
            ("/a", "/b"),
            ("/a", "/a/b"),
            ("/items/{id}", "/items/{id}/edit"),
            ("/items/{id}", "/orders/{id}"),
            ("/a/{x}/c", "/a/b/d"),
            ("/files/{*rest}", "/other/x"),
            ("/shop", "/shop/"),
        ];
        for (a, b) in no {
            assert!(!templates_overlap(a, b), "{a} and {b} do not overlap");
            assert!(!templates_overlap(b, a), "{b} and {a} do not overlap");
        }
    }

    #[test]
    fn cors_origins_are_checked() {
        let mut s = spec("GET", "/a");
        s.cors = Some(Cors {
            origins: vec!["https://shop.example".into()],
            headers: vec![],
            credentials: false,
            max_age_s: 600,
        });
        assert!(s.normalize().is_ok());
        s.cors.as_mut().unwrap().origins = vec!["shop.example".into()];
        assert!(s.normalize().is_err());
        s.cors.as_mut().unwrap().origins = vec!["https://shop.example/path".into()];
        assert!(s.normalize().is_err());
    }
}
