//! The `/v1` routes: matching, method checks and the invoice / customer handlers.
//!
//! Handlers are plain functions from an authorised request to a [`Reply`]; auth, rate
//! limiting and rendering happen around them in the handler module.

use bytes::Bytes;
use http::{header, Method, StatusCode};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};

use super::{
    reply::{Pagination, Reply},
    store::Store,
    validate::{parse_new_invoice, parse_paging},
};

/// A known resource path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v1/invoices`
    Invoices,
    /// `/v1/invoices/{id}`
    Invoice(String),
    /// `/v1/customers`
    Customers,
    /// `/v1/customers/{id}`
    Customer(String),
}

impl Route {
    /// Match a request path (no query).
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/")?;
        let (collection, id) = match rest.split_once('/') {
            Some((c, id)) if !id.is_empty() && !id.contains('/') => (c, Some(id.to_string())),
            Some(_) => return None,
            None => (rest, None),
        };
        match (collection, id) {
            ("invoices", None) => Some(Self::Invoices),
            ("invoices", Some(id)) => Some(Self::Invoice(id)),
            ("customers", None) => Some(Self::Customers),
            ("customers", Some(id)) => Some(Self::Customer(id)),
            _ => None,
        }
    }

    /// The route's template, for per-route counters.
    pub fn template(&self) -> &'static str {
        match self {
            Self::Invoices => "/v1/invoices",
            Self::Invoice(_) => "/v1/invoices/{id}",
            Self::Customers => "/v1/customers",
            Self::Customer(_) => "/v1/customers/{id}",
        }
    }

    /// Methods the route answers (`HEAD` wherever `GET` is).
    fn allowed(&self) -> &'static [Method] {
        match self {
            Self::Invoices => &[Method::GET, Method::HEAD, Method::POST],
            Self::Invoice(_) => &[Method::GET, Method::HEAD, Method::DELETE],
            Self::Customers | Self::Customer(_) => &[Method::GET, Method::HEAD],
        }
    }
}

/// An authorised request, as the routes need it.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a Bytes,
    /// The mock's now, RFC 3339 (a new invoice's `createdAt`).
    pub now: String,
}

/// Answer an authorised `/v1` request.
pub(crate) fn dispatch(call: Call<'_>, store: &Mutex<Store>) -> Reply {
    let Some(route) = Route::parse(call.path) else {
        return Reply::error(StatusCode::NOT_FOUND, "not_found", format!("No route for {}", call.path));
    };
    if !route.allowed().contains(call.method) {
        return method_not_allowed(&route, call.method);
    }
    let query = parse_query(call.query);
    let is_read = matches!(*call.method, Method::GET | Method::HEAD);
    match (route, is_read) {
        (Route::Invoices, true) => list_invoices(&query, &store.lock()),
        (Route::Invoices, false) => create_invoice(call.body, call.now, &mut store.lock()),
        (Route::Invoice(id), true) => get_invoice(&id, &store.lock()),
        (Route::Invoice(id), false) => delete_invoice(&id, &mut store.lock()),
        (Route::Customers, _) => list_customers(&query, &store.lock()),
        (Route::Customer(id), _) => get_customer(&id, &store.lock()),
    }
}

fn method_not_allowed(route: &Route, method: &Method) -> Reply {
    let allow: Vec<&str> = route.allowed().iter().map(Method::as_str).collect();
    let message = format!("Method {method} is not allowed on {}", route.template());
    Reply::error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
        .with_header(header::ALLOW, &allow.join(", "))
}

fn list_invoices(query: &[(String, String)], store: &Store) -> Reply {
    let customer = query.iter().rev().find(|(k, _)| k == "customerId").map(|(_, v)| v.as_str());
    page(query, &store.invoices(customer))
}

fn list_customers(query: &[(String, String)], store: &Store) -> Reply {
    page(query, &store.customers().iter().collect::<Vec<_>>())
}

/// One page of `all`, or a 400 for bad paging.
fn page<T: Serialize>(query: &[(String, String)], all: &[T]) -> Reply {
    let paging = match parse_paging(query) {
        Ok(p) => p,
        Err(message) => return Reply::error(StatusCode::BAD_REQUEST, "validation_error", message),
    };
    let items: Vec<&T> = all.iter().skip(paging.offset).take(paging.limit).collect();
    let pagination = Pagination { total: all.len(), offset: paging.offset, limit: paging.limit };
    Reply::list(to_json(&items), pagination)
}

fn get_invoice(id: &str, store: &Store) -> Reply {
    match store.invoice(id) {
        Some(inv) => Reply::data(StatusCode::OK, to_json(inv)),
        None => not_found("Invoice", id),
    }
}

fn get_customer(id: &str, store: &Store) -> Reply {
    match store.customer(id) {
        Some(c) => Reply::data(StatusCode::OK, to_json(c)),
        None => not_found("Customer", id),
    }
}

fn create_invoice(body: &Bytes, now: String, store: &mut Store) -> Reply {
    let new = match parse_new_invoice(body, store) {
        Ok(new) => new,
        Err(message) => return Reply::error(StatusCode::BAD_REQUEST, "validation_error", message),
    };
    let invoice = store.create_invoice(new, now);
    let location = format!("/v1/invoices/{}", invoice.id);
    Reply::data(StatusCode::CREATED, to_json(&invoice)).with_header(header::LOCATION, &location)
}

fn delete_invoice(id: &str, store: &mut Store) -> Reply {
    if store.delete_invoice(id) {
        Reply::data(StatusCode::OK, json!({ "id": id, "deleted": true }))
    } else {
        not_found("Invoice", id)
    }
}

fn not_found(what: &str, id: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, "not_found", format!("{what} {id} not found"))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Decode `a=1&b=x%20y` into pairs (`+` is a space); later duplicates win where read.
pub(crate) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned()
    };
    let pairs = query.unwrap_or_default().split('&').filter(|p| !p.is_empty());
    pairs.map(|p| p.split_once('=').unwrap_or((p, ""))).map(|(k, v)| (decode(k), decode(v))).collect()
}
