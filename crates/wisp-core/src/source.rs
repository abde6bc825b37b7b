//! Where an invocation came from. Every run carries one: it is recorded
//! with the activation (its `trigger`), labels the throttle and usage
//! records, decides what an anonymous caller may see of a failure, and
//! tells a process function which event shape to expect (the Lambda
//! Invoke API sends Lambda's).

use crate::event::Origin;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// The management API's invoke (`wisp invoke`,
    /// `POST /v1/functions/{name}/invoke`): the namespace's own caller,
    /// who sees a failure's detail.
    Api,
    /// A user route (`route`: its template) or a function's direct URL
    /// (`None`): callers may be anyone.
    Http { route: Option<Arc<str>> },
    /// The AWS Lambda Invoke API (`aws lambda invoke`, boto3).
    Lambda,
    /// A delivery of the durable queue: an async invoke, a cron tick, a
    /// topic message, a destination, an object or KV change.
    Queued(Origin),
}

impl Source {
    /// The name recorded with the activation (`trigger`), as the API and
    /// the CLI show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Http { .. } => "http",
            Source::Lambda => "lambda",
            Source::Queued(o) => o.as_str(),
        }
    }

    /// A direct URL.
    pub fn direct_url() -> Self {
        Source::Http { route: None }
    }

    /// Whether the caller may be anyone (a user route or direct URL): a
    /// failure's detail stays in the activation.
    pub fn is_public(&self) -> bool {
        matches!(self, Source::Http { .. })
    }
}

impl From<Origin> for Source {
    fn from(o: Origin) -> Self {
        Source::Queued(o)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_those_recorded_before_sources_were_typed() {
        assert_eq!(Source::Api.as_str(), "api");
        assert_eq!(Source::direct_url().as_str(), "http");
        assert_eq!(
            Source::Http {
                route: Some("/users/{id}".into())
            }
            .as_str(),
            "http"
        );
        assert_eq!(Source::Lambda.as_str(), "lambda");
        assert_eq!(Source::from(Origin::Cron).as_str(), "cron");
        assert!(Source::direct_url().is_public() && !Source::Api.is_public());
    }
}
