//! Writes over a real socket: `POST /v1/invoices` validation and creation, `DELETE`, 413.

use http::{Method, StatusCode};

use super::support::{config, start, TestClient};
use crate::mock::store::customer_id;

#[tokio::test]
async fn invalid_invoice_bodies_are_rejected_naming_the_field() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let cust = customer_id(1);
    let item = r#"{"description":"Colocation","quantity":2,"unitPrice":75}"#;
    let cases = [
        ("{not json".to_string(), "JSON"),
        (format!(r#"{{"customerId":"{cust}","dueDate":"2026-07-01"}}"#), "items"),
        (format!(r#"{{"customerId":"{cust}","items":[],"dueDate":"2026-07-01"}}"#), "items"),
        (
            format!(
                r#"{{"customerId":"{cust}","items":[{{"description":"x","quantity":0,"unitPrice":1}}],"dueDate":"2026-07-01"}}"#
            ),
            "items[0].quantity",
        ),
        (format!(r#"{{"customerId":"{cust}","items":[{item}],"dueDate":"2026-02-30"}}"#), "dueDate"),
        (format!(r#"{{"customerId":"cust_nothere","items":[{item}],"dueDate":"2026-07-01"}}"#), "customerId"),
    ];
    for (body, field) in cases {
        let a = client.call(Method::POST, "/v1/invoices", Some(&body)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.error_type(), "validation_error");
        let message = a.json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{message:?} names {field}");
    }
}

#[tokio::test]
async fn created_invoice_can_be_read_back_then_deleted() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let body = format!(
        r#"{{"customerId":"{}","items":[{{"description":"Rack","quantity":3,"unitPrice":10.5}},{{"description":"Power","quantity":1,"unitPrice":4}}],"dueDate":"2028-02-29"}}"#,
        customer_id(2)
    );
    let created = client.call(Method::POST, "/v1/invoices", Some(&body)).await;
    assert_eq!((created.status, created.json["code"].as_u64()), (StatusCode::CREATED, Some(201)));
    let id = created.json["data"]["id"].as_str().expect("new id").to_string();
    assert!(id.starts_with("inv_") && id.len() == 12);
    assert_eq!(created.header("location"), Some(format!("/v1/invoices/{id}").as_str()));
    assert_eq!(created.json["data"]["amount"].as_f64(), Some(35.5));
    assert_eq!(created.json["data"]["status"], "PENDING");

    let read = client.get(&format!("/v1/invoices/{id}")).await;
    assert_eq!(read.json["data"], created.json["data"]);
    assert_eq!(client.get("/v1/invoices").await.json["pagination"]["total"].as_u64(), Some(251));

    let deleted = client.call(Method::DELETE, &format!("/v1/invoices/{id}"), None).await;
    assert_eq!(
        (deleted.json["data"]["id"].as_str(), deleted.json["data"]["deleted"].as_bool()),
        (Some(&*id), Some(true))
    );
    assert_eq!(client.get(&format!("/v1/invoices/{id}")).await.status, StatusCode::NOT_FOUND);
    let again = client.call(Method::DELETE, &format!("/v1/invoices/{id}"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let server = start(config()).await;
    let client = TestClient::new(&server);
    let big = "x".repeat(1024 * 1024 + 1);
    let a = client.call(Method::POST, "/v1/invoices", Some(&big)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.error_type(), "payload_too_large");
}
