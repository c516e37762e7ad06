//! Validation of `POST /v1/invoices` bodies and of paging parameters (pure).
//!
//! Every rejection is a sentence naming the offending field, as the 400 envelope's message.

use serde_json::{Map, Value};

use super::store::{Item, NewInvoice, Store};

/// Default page size.
pub(crate) const DEFAULT_LIMIT: usize = 10;
/// Largest page size.
pub(crate) const MAX_LIMIT: usize = 100;

/// `offset` and `limit` of a list request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Paging {
    pub offset: usize,
    pub limit: usize,
}

/// Read paging from query pairs: offset ≥ 0 (default 0), 1 ≤ limit ≤ 100 (default 10).
pub(crate) fn parse_paging(query: &[(String, String)]) -> Result<Paging, String> {
    let get = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let offset = match get("offset") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| "offset must be a non-negative integer".to_string())?,
    };
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(format!("limit must be an integer from 1 to {MAX_LIMIT}")),
        },
    };
    Ok(Paging { offset, limit })
}

/// Parse and check a new invoice against the store's customers.
pub(crate) fn parse_new_invoice(body: &[u8], store: &Store) -> Result<NewInvoice, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let obj = value.as_object().ok_or("body must be a JSON object")?;
    let customer_id = customer_id(obj, store)?;
    let items = items(obj)?;
    let due_date = due_date(obj)?;
    Ok(NewInvoice { customer_id, items, due_date })
}

fn customer_id(obj: &Map<String, Value>, store: &Store) -> Result<String, String> {
    let id = obj.get("customerId").and_then(Value::as_str).ok_or("customerId is required and must be a string")?;
    store.customer(id).map(|c| c.id.clone()).ok_or_else(|| format!("customerId {id:?} is not a known customer"))
}

fn items(obj: &Map<String, Value>) -> Result<Vec<Item>, String> {
    let items = obj.get("items").and_then(Value::as_array).ok_or("items is required and must be an array")?;
    if items.is_empty() {
        return Err("items must not be empty".into());
    }
    items.iter().enumerate().map(|(i, v)| item(i, v)).collect()
}

fn item(i: usize, v: &Value) -> Result<Item, String> {
    let obj = v.as_object().ok_or_else(|| format!("items[{i}] must be an object"))?;
    let description = match obj.get("description").and_then(Value::as_str) {
        Some(d) if !d.trim().is_empty() => d.to_string(),
        _ => return Err(format!("items[{i}].description must be a non-empty string")),
    };
    let quantity = match obj.get("quantity").and_then(Value::as_u64) {
        Some(q) if q > 0 => q,
        _ => return Err(format!("items[{i}].quantity must be a positive integer")),
    };
    let unit_price = match obj.get("unitPrice").and_then(Value::as_f64) {
        Some(p) if p.is_finite() && p >= 0.0 => p,
        _ => return Err(format!("items[{i}].unitPrice must be a number >= 0")),
    };
    Ok(Item { description, quantity, unit_price })
}

fn due_date(obj: &Map<String, Value>) -> Result<String, String> {
    let date = obj.get("dueDate").and_then(Value::as_str).ok_or("dueDate is required (YYYY-MM-DD)")?;
    if is_calendar_date(date) {
        Ok(date.to_string())
    } else {
        Err(format!("dueDate {date:?} is not a valid YYYY-MM-DD date"))
    }
}

/// `YYYY-MM-DD` naming a day that exists (leap years included).
pub(crate) fn is_calendar_date(s: &str) -> bool {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
