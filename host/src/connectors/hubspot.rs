//! HubSpot CRM v3 (contacts search and read, deals read, a deal's stage
//! update). A connection reaches one portal: a grant's `portal:NAME` must
//! be listed in the provider's `ids` (name → portal id), and the token's
//! portal is checked against it (`account-info/v3/details`, once per
//! connection) before any other call; any other portal is refused without a request. A stage
//! update sets a value, so it may be retried.

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;

use super::{Api, Call, MAX_PAGES, cents, check_id, fingerprint_of, text};
use crate::integrations::crm::{CrmInverse, CrmProvider};
use crate::providers::{Done, ProviderError};
use crate::runtime::bindings::crm::{Contact, Deal};

/// The most contacts one search returns.
const MAX_CONTACTS: usize = 200;
const CONTACT_PROPERTIES: [&str; 6] = [
    "firstname",
    "lastname",
    "email",
    "company",
    "phone",
    "notes",
];
const DEAL_PROPERTIES: &str = "dealname,dealstage,amount";

/// HubSpot, through one connection.
pub struct Hubspot {
    api: Arc<Api>,
}

#[derive(Deserialize)]
struct Object {
    id: String,
    #[serde(default)]
    properties: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    associations: serde_json::Value,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    results: Vec<Object>,
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    next: Option<Next>,
}

#[derive(Deserialize)]
struct Next {
    after: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountInfo {
    portal_id: serde_json::Value,
}

fn next_after(paging: Option<Paging>) -> Option<String> {
    paging.and_then(|p| p.next).map(|n| n.after)
}

fn prop(o: &Object, name: &str) -> String {
    o.properties.get(name).map(text).unwrap_or_default()
}

fn contact(o: &Object) -> Contact {
    let name = format!("{} {}", prop(o, "firstname"), prop(o, "lastname"))
        .trim()
        .to_string();
    Contact {
        id: o.id.clone(),
        name,
        email: prop(o, "email"),
        company: prop(o, "company"),
        phone: prop(o, "phone"),
        notes: prop(o, "notes"),
    }
}

fn deal(o: &Object) -> Deal {
    let contact_id = o
        .associations
        .pointer("/contacts/results/0/id")
        .map(text)
        .unwrap_or_default();
    Deal {
        id: o.id.clone(),
        name: prop(o, "dealname"),
        contact_id,
        stage: prop(o, "dealstage"),
        amount_cents: o.properties.get("amount").map(cents).unwrap_or(0),
    }
}

impl Hubspot {
    /// HubSpot through `api`.
    pub fn new(api: Arc<Api>) -> Hubspot {
        Hubspot { api }
    }

    /// Check that `portal` is this connection's portal and the token's.
    fn portal(&self, portal: &str) -> Result<(), ProviderError> {
        let config = self.api.config()?;
        let Some(expected) = super::configured_id(&config, portal) else {
            return Err(ProviderError::NotFound(format!(
                "portal {} is not the connected HubSpot portal",
                crate::integrations::quote(portal)
            )));
        };
        // Checked once per connection and configured portal.
        let fact = format!("portal {expected}");
        if self.api.has_checked(&fact) {
            return Ok(());
        }
        let info: AccountInfo = self
            .api
            .fetch(Call::get(&["account-info", "v3", "details"]))?;
        if text(&info.portal_id) != expected {
            return Err(ProviderError::Failed(format!(
                "the connection's token is for HubSpot portal {}, not {} ({portal})",
                crate::integrations::quote(&text(&info.portal_id)),
                crate::integrations::quote(&expected)
            )));
        }
        self.api.checked(&fact);
        Ok(())
    }

    fn get_deal(&self, id: &str) -> Result<Deal, ProviderError> {
        check_id("deal id", id)?;
        let o: Object = self.api.fetch(
            Call::get(&["crm", "v3", "objects", "deals", id])
                .query("properties", DEAL_PROPERTIES)
                .query("associations", "contacts"),
        )?;
        Ok(deal(&o))
    }

    fn set_stage(&self, id: &str, stage: &str) -> Result<Deal, ProviderError> {
        // Setting a property twice sets it once: safe to retry.
        let o: Object = self.api.fetch(
            Call::new(Method::PATCH, &["crm", "v3", "objects", "deals", id])
                .json(serde_json::json!({ "properties": { "dealstage": stage } }))
                .repeatable(),
        )?;
        // The answer carries no associations: keep the deal's.
        let mut after = self.get_deal(id)?;
        if after.stage.is_empty() {
            after.stage = prop(&o, "dealstage");
        }
        Ok(after)
    }
}

impl CrmProvider for Hubspot {
    fn find_contacts(&self, portal: &str, query: &str) -> Result<Vec<Contact>, ProviderError> {
        self.portal(portal)?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut body = serde_json::json!({
                "query": query,
                "limit": 100,
                "properties": CONTACT_PROPERTIES,
            });
            if let Some(a) = &after {
                body["after"] = serde_json::Value::String(a.clone());
            }
            // A search reads: safe to retry.
            let page: Page = self.api.fetch(
                Call::new(
                    Method::POST,
                    &["crm", "v3", "objects", "contacts", "search"],
                )
                .json(body)
                .repeatable(),
            )?;
            out.extend(page.results.iter().map(contact));
            after = next_after(page.paging);
            if after.is_none() || out.len() >= MAX_CONTACTS {
                break;
            }
        }
        out.truncate(MAX_CONTACTS);
        Ok(out)
    }

    fn get_contact(&self, portal: &str, id: &str) -> Result<Contact, ProviderError> {
        check_id("contact id", id)?;
        self.portal(portal)?;
        let o: Object = self.api.fetch(
            Call::get(&["crm", "v3", "objects", "contacts", id])
                .query("properties", CONTACT_PROPERTIES.join(",")),
        )?;
        Ok(contact(&o))
    }

    fn list_deals(
        &self,
        portal: &str,
        contact_id: Option<&str>,
    ) -> Result<Vec<Deal>, ProviderError> {
        if let Some(c) = contact_id {
            check_id("contact id", c)?;
        }
        self.portal(portal)?;
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut call = Call::get(&["crm", "v3", "objects", "deals"])
                .query("limit", "100")
                .query("properties", DEAL_PROPERTIES)
                .query("associations", "contacts");
            if let Some(a) = &after {
                call = call.query("after", a.clone());
            }
            let page: Page = self.api.fetch(call)?;
            out.extend(
                page.results
                    .iter()
                    .map(deal)
                    .filter(|d| contact_id.is_none_or(|c| d.contact_id == c)),
            );
            after = next_after(page.paging);
            if after.is_none() {
                break;
            }
        }
        Ok(out)
    }

    fn update_deal_stage(
        &self,
        portal: &str,
        deal_id: &str,
        stage: &str,
        key: Option<&str>,
    ) -> Result<Done, ProviderError> {
        if let Some(done) = self.api.replay(key)? {
            return Ok(done);
        }
        self.portal(portal)?;
        let before = self.get_deal(deal_id)?;
        let after = self.set_stage(deal_id, stage)?;
        let done = Done {
            id: deal_id.to_string(),
            inverse: Some(crate::integrations::Inverse::Crm(
                CrmInverse::SetDealStage {
                    deal_id: deal_id.to_string(),
                    stage: before.stage,
                    after: fingerprint_of(&after),
                },
            )),
        };
        self.api.remember(key, done)
    }

    fn restore_deal_stage(
        &self,
        portal: &str,
        deal_id: &str,
        stage: &str,
        after: &str,
    ) -> Result<(), ProviderError> {
        self.portal(portal)?;
        let now = self.get_deal(deal_id)?;
        if fingerprint_of(&now) != after {
            return Err(ProviderError::Conflict(format!(
                "deal {} changed since the stage was set",
                crate::integrations::quote(deal_id)
            )));
        }
        self.set_stage(deal_id, stage).map(|_| ())
    }
}
