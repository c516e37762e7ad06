//! The mock's data: 25 customers and 250 invoices from a deterministic seed, plus writes.
//!
//! Ids are `cust_` / `inv_` and 8 hex digits from a bijective mix of the record's index, so
//! they look random, never collide, and are the same on every run.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::clock::rfc3339;

/// Seeded customers.
pub(crate) const CUSTOMERS: u32 = 25;
/// Seeded invoices.
pub(crate) const INVOICES: u32 = 250;

/// 2025-01-01T00:00:00Z, the first seeded `createdAt`.
const SEED_EPOCH: u64 = 1_735_689_600;
const DAY: u64 = 86_400;

const NAME_FIRST: [&str; 5] = ["Northwind", "Blue Harbor", "Summit", "Redwood", "Atlas"];
const NAME_SECOND: [&str; 5] = ["Hosting", "Networks", "Labs", "Systems", "Cloud"];
const PRODUCTS: [(&str, f64); 8] = [
    ("Dedicated server rental", 189.0),
    ("Colocation 1U (month)", 75.0),
    ("Bandwidth overage (TB)", 12.5),
    ("Managed backup (100 GB)", 19.99),
    ("IPv4 address block /29", 40.0),
    ("Remote hands (hour)", 95.0),
    ("Cloud VM instance (month)", 34.9),
    ("TLS certificate (year)", 49.0),
];

/// A customer as the API shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Customer {
    pub id: String,
    pub name: String,
    pub email: String,
    pub created_at: String,
}

/// An invoice line.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Item {
    pub description: String,
    pub quantity: u64,
    pub unit_price: f64,
}

/// Invoice status, upper case on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Status {
    Paid,
    Pending,
    Overdue,
}

/// An invoice as the API shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Invoice {
    pub id: String,
    pub customer_id: String,
    pub amount: f64,
    pub currency: &'static str,
    pub status: Status,
    pub items: Vec<Item>,
    pub due_date: String,
    pub created_at: String,
}

/// A validated `POST /v1/invoices` body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NewInvoice {
    pub customer_id: String,
    pub items: Vec<Item>,
    pub due_date: String,
}

/// The whole data set.
#[derive(Debug)]
pub(crate) struct Store {
    customers: Vec<Customer>,
    invoices: Vec<Invoice>,
    next_invoice: u32,
}

impl Store {
    /// The deterministic seed.
    pub fn seeded() -> Self {
        let customers: Vec<Customer> = (0..CUSTOMERS).map(seed_customer).collect();
        let invoices = (0..INVOICES).map(|i| seed_invoice(i, &customers)).collect();
        Self { customers, invoices, next_invoice: INVOICES }
    }

    /// All customers, in seed order.
    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }

    /// One customer.
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.iter().find(|c| c.id == id)
    }

    /// Invoices in creation order, optionally of one customer.
    pub fn invoices(&self, customer_id: Option<&str>) -> Vec<&Invoice> {
        let wanted = |inv: &&Invoice| customer_id.is_none_or(|c| inv.customer_id == c);
        self.invoices.iter().filter(wanted).collect()
    }

    /// One invoice.
    pub fn invoice(&self, id: &str) -> Option<&Invoice> {
        self.invoices.iter().find(|i| i.id == id)
    }

    /// Store a new invoice (status PENDING) and return it.
    pub fn create_invoice(&mut self, new: NewInvoice, created_at: String) -> Invoice {
        let index = self.next_invoice;
        self.next_invoice += 1;
        let invoice = Invoice {
            id: invoice_id(index),
            customer_id: new.customer_id,
            amount: total(&new.items),
            currency: "USD",
            status: Status::Pending,
            items: new.items,
            due_date: new.due_date,
            created_at,
        };
        self.invoices.push(invoice.clone());
        invoice
    }

    /// Remove an invoice; false if there was none.
    pub fn delete_invoice(&mut self, id: &str) -> bool {
        let before = self.invoices.len();
        self.invoices.retain(|i| i.id != id);
        self.invoices.len() != before
    }
}

/// Σ quantity × unitPrice, in cents precision.
pub(crate) fn total(items: &[Item]) -> f64 {
    let sum: f64 = items.iter().map(|i| i.quantity as f64 * i.unit_price).sum();
    (sum * 100.0).round() / 100.0
}

/// The id of customer number `index`.
pub(crate) fn customer_id(index: u32) -> String {
    format!("cust_{:08x}", mix(index, 0x5eed_c057))
}

/// The id of invoice number `index`.
pub(crate) fn invoice_id(index: u32) -> String {
    format!("inv_{:08x}", mix(index, 0x1a01_ce55))
}

fn seed_customer(index: u32) -> Customer {
    let i = index as usize;
    let (first, second) = (NAME_FIRST[i % 5], NAME_SECOND[(i / 5) % 5]);
    let slug: String = format!("{first}{second}").chars().filter(|c| !c.is_whitespace()).collect();
    Customer {
        id: customer_id(index),
        name: format!("{first} {second}"),
        email: format!("billing@{}.example", slug.to_ascii_lowercase()),
        created_at: timestamp(SEED_EPOCH + u64::from(index) * 3 * DAY + u64::from(mix(index, 7) % DAY as u32)),
    }
}

fn seed_invoice(index: u32, customers: &[Customer]) -> Invoice {
    let r = mix(index, 0xb111);
    let customer = &customers[(r as usize) % customers.len()];
    let items: Vec<Item> = (0..1 + r % 3).map(|n| seed_item(mix(index, n))).collect();
    let created = SEED_EPOCH + 90 * DAY + u64::from(index) * 17 * 3600;
    Invoice {
        id: invoice_id(index),
        customer_id: customer.id.clone(),
        amount: total(&items),
        currency: "USD",
        status: match (r >> 8) % 10 {
            0..=5 => Status::Paid,
            6 | 7 => Status::Pending,
            _ => Status::Overdue,
        },
        items,
        due_date: timestamp(created + 30 * DAY)[..10].to_string(),
        created_at: timestamp(created),
    }
}

fn seed_item(r: u32) -> Item {
    let (description, unit_price) = PRODUCTS[(r as usize) % PRODUCTS.len()];
    Item { description: description.to_string(), quantity: u64::from(1 + (r >> 4) % 5), unit_price }
}

fn timestamp(epoch_secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(epoch_secs))
}

/// A bijection on `u32` (xor, odd multiplies and xor-shifts), so distinct indices give
/// distinct ids.
fn mix(index: u32, salt: u32) -> u32 {
    let mut x = index ^ salt;
    x = x.wrapping_mul(0x9e37_79b1);
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^ (x >> 16)
}
