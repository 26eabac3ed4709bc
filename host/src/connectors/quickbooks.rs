//! QuickBooks Online Accounting API (`query` for invoices, `purchase`
//! create, read and void). A grant's `company:NAME` must be listed in the
//! provider's `ids` (name → realm id); every call names that realm, so
//! another company is refused without a request. Queries are written here
//! (no guest text reaches them). A purchase is created with a `requestid`
//! derived from the write's idempotency key (QuickBooks answers a repeat
//! with the first result), so it may be retried.

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;

use super::{Api, Call, MAX_PAGES, cents, check_id, fingerprint_of, text};
use crate::integrations::ledger::{LedgerInverse, LedgerProvider};
use crate::providers::{Done, ProviderError, money};
use crate::runtime::bindings::ledger::{ExpenseReport, Invoice};

/// The minor version of the API the connector speaks.
const MINOR_VERSION: &str = "75";
const PAGE: usize = 100;

/// QuickBooks Online, through one connection.
pub struct Quickbooks {
    api: Arc<Api>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueryAnswer {
    query_response: QueryResponse,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct QueryResponse {
    #[serde(default)]
    invoice: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PurchaseAnswer {
    purchase: Purchase,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Purchase {
    id: String,
    sync_token: String,
    #[serde(default)]
    total_amt: serde_json::Value,
    #[serde(default)]
    private_note: Option<String>,
}

fn invoice(v: &serde_json::Value, today: &str) -> Invoice {
    let get = |p: &str| v.pointer(p).map(text).unwrap_or_default();
    let balance = v.get("Balance").map(cents).unwrap_or(0);
    let due_on = get("/DueDate");
    let status = if balance == 0 {
        "paid"
    } else if !due_on.is_empty() && due_on.as_str() < today {
        "overdue"
    } else {
        "open"
    };
    Invoice {
        id: {
            let number = get("/DocNumber");
            if number.is_empty() {
                get("/Id")
            } else {
                number
            }
        },
        customer: {
            let name = get("/CustomerRef/name");
            if name.is_empty() {
                get("/CustomerRef/value")
            } else {
                name
            }
        },
        amount_cents: v.get("TotalAmt").map(cents).unwrap_or(0),
        currency: get("/CurrencyRef/value"),
        status: status.into(),
        issued_on: get("/TxnDate"),
        due_on,
    }
}

/// A decimal amount for QuickBooks (`12.34`).
fn amount(c: i64) -> serde_json::Value {
    serde_json::from_str(&money(c)).unwrap_or(serde_json::Value::Null)
}

impl Quickbooks {
    /// QuickBooks through `api`.
    pub fn new(api: Arc<Api>) -> Quickbooks {
        Quickbooks { api }
    }

    /// The realm of the grant's `company`, and the connector's settings.
    fn realm(
        &self,
        company: &str,
    ) -> Result<(String, crate::oauth::ProviderConfig), ProviderError> {
        let config = self.api.config()?;
        match super::configured_id(&config, company) {
            Some(realm) => {
                check_id("realm", &realm)?;
                Ok((realm, config))
            }
            None => Err(ProviderError::NotFound(format!(
                "company {} is not a connected QuickBooks company",
                crate::integrations::quote(company)
            ))),
        }
    }

    fn purchase(&self, realm: &str, id: &str) -> Result<Purchase, ProviderError> {
        check_id("purchase id", id)?;
        let p: PurchaseAnswer = self.api.fetch(
            Call::get(&["v3", "company", realm, "purchase", id])
                .query("minorversion", MINOR_VERSION),
        )?;
        Ok(p.purchase)
    }
}

impl LedgerProvider for Quickbooks {
    fn list_invoices(
        &self,
        company: &str,
        status: Option<&str>,
    ) -> Result<Vec<Invoice>, ProviderError> {
        let (realm, _) = self.realm(company)?;
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let mut out = Vec::new();
        for page in 0..MAX_PAGES {
            let query = format!(
                "SELECT * FROM Invoice ORDERBY TxnDate DESC STARTPOSITION {} MAXRESULTS {PAGE}",
                page * PAGE + 1
            );
            let answer: QueryAnswer = self.api.fetch(
                Call::get(&["v3", "company", &realm, "query"])
                    .query("query", query)
                    .query("minorversion", MINOR_VERSION),
            )?;
            let n = answer.query_response.invoice.len();
            out.extend(
                answer
                    .query_response
                    .invoice
                    .iter()
                    .map(|v| invoice(v, &today))
                    .filter(|i| status.is_none_or(|s| i.status == s)),
            );
            if n < PAGE {
                break;
            }
        }
        Ok(out)
    }

    fn create_expense_report(
        &self,
        company: &str,
        report: &ExpenseReport,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        let (realm, config) = self.realm(company)?;
        let setting = |name: &str| {
            config.settings.get(name).cloned().ok_or_else(|| {
                ProviderError::Failed(format!(
                    "the QuickBooks provider has no `{name}` setting in oauth.toml"
                ))
            })
        };
        let (payment, expense) = (setting("payment_account")?, setting("expense_account")?);
        if let Some(line) = report.lines.iter().find(|l| l.amount_cents <= 0) {
            return Err(ProviderError::Invalid(format!(
                "QuickBooks takes positive expense lines only ({} is {})",
                crate::integrations::quote(&line.description),
                money(line.amount_cents)
            )));
        }
        let lines: Vec<serde_json::Value> = report
            .lines
            .iter()
            .map(|l| {
                serde_json::json!({
                    "DetailType": "AccountBasedExpenseLineDetail",
                    "Amount": amount(l.amount_cents),
                    "Description": format!("{} [{}] receipt {}", l.description, l.category, l.receipt_ref),
                    "AccountBasedExpenseLineDetail": { "AccountRef": { "value": expense } },
                })
            })
            .collect();
        let body = serde_json::json!({
            "PaymentType": "Cash",
            "AccountRef": { "value": payment },
            "CurrencyRef": { "value": report.currency },
            "PrivateNote": report.title,
            "Line": lines,
        });
        let request_id = super::gcal::event_id(&realm, key);
        // QuickBooks answers a repeated requestid with the first result.
        let p: PurchaseAnswer = self.api.fetch(
            Call::new(Method::POST, &["v3", "company", &realm, "purchase"])
                .query("requestid", request_id)
                .query("minorversion", MINOR_VERSION)
                .json(body)
                .repeatable(),
        )?;
        Ok(Done {
            id: p.purchase.id.clone(),
            inverse: Some(crate::integrations::Inverse::Ledger(
                LedgerInverse::VoidExpenseReport {
                    after: fingerprint_of(&(&p.purchase.id, &p.purchase.sync_token)),
                    id: p.purchase.id,
                },
            )),
        })
    }

    fn void_expense_report(
        &self,
        company: &str,
        id: &str,
        after: &str,
    ) -> Result<(), ProviderError> {
        let (realm, _) = self.realm(company)?;
        let now = self.purchase(&realm, id)?;
        if fingerprint_of(&(&now.id, &now.sync_token)) != after {
            return Err(ProviderError::Conflict(format!(
                "purchase {} changed since it was created",
                crate::integrations::quote(id)
            )));
        }
        // A void of this SyncToken happens once (a repeat is refused as
        // stale): safe to retry.
        let _: PurchaseAnswer = self.api.fetch(
            Call::new(Method::POST, &["v3", "company", &realm, "purchase"])
                .query("operation", "void")
                .query("minorversion", MINOR_VERSION)
                .json(serde_json::json!({ "Id": now.id, "SyncToken": now.sync_token, "sparse": true }))
                .repeatable(),
        )?;
        Ok(())
    }
}
