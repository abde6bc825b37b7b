//! Data processing: POST a JSON array of orders, get a summary back.
//!
//! In:  `[{"item":"apple","qty":3,"price":0.5}, ...]`
//! Out: `{"orders":N,"total":T,"by_item":{"apple":{"qty":Q,"revenue":R}}}`

use serde::Deserialize;
use std::collections::BTreeMap;
use wstd::http::{Body, Error, Method, Request, Response, StatusCode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Order {
    item: String,
    qty: u64,
    price: f64,
}

fn json(status: StatusCode, v: serde_json::Value) -> Result<Response<Body>, Error> {
    let body = v.to_string();
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body.into())?)
}

#[wstd::http_server]
async fn main(mut req: Request<Body>) -> Result<Response<Body>, Error> {
    if req.method() != Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "POST a JSON array of orders"}),
        );
    }
    let bytes = req.body_mut().contents().await?.to_vec();
    let orders: Vec<Order> = match serde_json::from_slice(&bytes) {
        Ok(o) => o,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("invalid orders: {e}")}),
            );
        }
    };
    let mut by_item: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut total = 0.0;
    for o in &orders {
        let revenue = o.qty as f64 * o.price;
        total += revenue;
        let e = by_item.entry(o.item.clone()).or_default();
        e.0 += o.qty;
        e.1 += revenue;
    }
    let by_item: serde_json::Map<String, serde_json::Value> = by_item
        .into_iter()
        .map(|(k, (qty, revenue))| (k, serde_json::json!({"qty": qty, "revenue": revenue})))
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({"orders": orders.len(), "total": total, "by_item": by_item}),
    )
}
