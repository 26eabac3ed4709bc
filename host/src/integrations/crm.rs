//! CRM (HubSpot and the sandbox), the `crm` interface: one handle per
//! granted portal. A stage change can be undone while the deal is still as
//! the change left it.

use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;

use super::{Action, EditError, Interface, Spec, quote};
use crate::human;
use crate::providers::{Done, ProviderError, Response};
use crate::runtime::TaskState;
use crate::runtime::bindings::crm::{self as wit, Contact, Deal};
use crate::runtime::guest_calls::CallResult;

crate::grant_handle!(
    /// A `crm.portal` handle: one granted scope.
    PortalHandle
);

/// The facts of the CRM integration.
pub const SPEC: Spec = Spec {
    name: "hubspot",
    interface: Interface::Crm,
    scope_kind: "portal",
    actions: &[Action::Read, Action::UpdateDeals],
};

/// A call on a portal (the WIT method's parameters, minus the reason).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum CrmOp {
    /// `portal.find-contacts`
    #[serde(rename = "crm-find-contacts")]
    FindContacts { query: String },
    /// `portal.get-contact`
    #[serde(rename = "crm-get-contact")]
    GetContact { id: String },
    /// `portal.list-deals`
    #[serde(rename = "crm-list-deals")]
    ListDeals { contact_id: Option<String> },
    /// `portal.update-deal-stage`
    #[serde(rename = "crm-update-deal-stage")]
    UpdateDealStage { deal_id: String, stage: String },
}

impl CrmOp {
    /// The grant action it needs.
    pub fn action(&self) -> Action {
        match self {
            CrmOp::UpdateDealStage { .. } => Action::UpdateDeals,
            _ => Action::Read,
        }
    }

    /// The contract method.
    pub fn method(&self) -> &'static str {
        match self {
            CrmOp::FindContacts { .. } => "find-contacts",
            CrmOp::GetContact { .. } => "get-contact",
            CrmOp::ListDeals { .. } => "list-deals",
            CrmOp::UpdateDealStage { .. } => "update-deal-stage",
        }
    }

    /// The audit log's summary of the arguments.
    pub fn summary(&self) -> String {
        match self {
            CrmOp::FindContacts { query } => format!("query {}", quote(query)),
            CrmOp::GetContact { id } => format!("id {}", quote(id)),
            CrmOp::ListDeals { contact_id } => match contact_id {
                Some(c) => format!("contact {}", quote(c)),
                None => "all".into(),
            },
            CrmOp::UpdateDealStage { deal_id, stage } => {
                format!("deal {}, stage {}", quote(deal_id), quote(stage))
            }
        }
    }

    /// What the approver reads.
    pub fn preview(&self, _scope: &str) -> String {
        match self {
            CrmOp::UpdateDealStage { deal_id, stage } => format!(
                "move deal {} to stage \"{}\"",
                human::line(deal_id),
                human::line(stage)
            ),
            other => format!("{} {}", other.method(), other.summary()),
        }
    }

    /// Guest-supplied bytes in the arguments.
    pub fn argument_bytes(&self) -> usize {
        match self {
            CrmOp::FindContacts { query } => query.len(),
            CrmOp::GetContact { id } => id.len(),
            CrmOp::ListDeals { contact_id } => contact_id.as_ref().map_or(0, String::len),
            CrmOp::UpdateDealStage { deal_id, stage } => deal_id.len() + stage.len(),
        }
    }

    /// The fields an approver may edit.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        match self {
            CrmOp::UpdateDealStage { .. } => &["stage"],
            _ => &[],
        }
    }

    /// The operation with `field` set to `value`; `None` if no such field.
    pub fn edited(&self, field: &str, value: &str) -> Result<Option<CrmOp>, EditError> {
        Ok(match (self, field) {
            (CrmOp::UpdateDealStage { deal_id, .. }, "stage") => Some(CrmOp::UpdateDealStage {
                deal_id: deal_id.clone(),
                stage: value.into(),
            }),
            _ => None,
        })
    }

    /// Run it against the CRM provider in `portal`.
    pub fn run(
        &self,
        provider: &dyn CrmProvider,
        portal: &str,
        key: Option<&str>,
    ) -> Result<Response, ProviderError> {
        Ok(match self {
            CrmOp::FindContacts { query } => {
                Response::Contacts(provider.find_contacts(portal, query)?)
            }
            CrmOp::GetContact { id } => Response::Contact(provider.get_contact(portal, id)?),
            CrmOp::ListDeals { contact_id } => {
                Response::Deals(provider.list_deals(portal, contact_id.as_deref())?)
            }
            CrmOp::UpdateDealStage { deal_id, stage } => {
                Response::Done(provider.update_deal_stage(portal, deal_id, stage, key)?)
            }
        })
    }
}

/// How a CRM write is undone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum CrmInverse {
    /// Put a deal back in the stage it had.
    SetDealStage {
        /// Deal id.
        deal_id: String,
        /// The stage before the change.
        stage: String,
        /// Fingerprint of the deal after the change.
        after: String,
    },
}

impl CrmInverse {
    /// The grant action undoing needs (the write's).
    pub fn action(&self) -> Action {
        Action::UpdateDeals
    }

    /// The method, for the audit log.
    pub fn method(&self) -> &'static str {
        "update-deal-stage"
    }

    /// What undoing does.
    pub fn summary(&self) -> String {
        match self {
            CrmInverse::SetDealStage { deal_id, stage, .. } => format!(
                "move deal {} back to stage {}",
                quote(deal_id),
                quote(stage)
            ),
        }
    }

    /// Run it against the CRM provider in `portal`.
    pub fn run(&self, provider: &dyn CrmProvider, portal: &str) -> Result<(), ProviderError> {
        match self {
            CrmInverse::SetDealStage {
                deal_id,
                stage,
                after,
            } => provider.restore_deal_stage(portal, deal_id, stage, after),
        }
    }
}

/// CRM (HubSpot and the sandbox). `portal` is the granted scope's value.
pub trait CrmProvider: Send + Sync {
    /// Contacts matching `query`.
    fn find_contacts(&self, portal: &str, query: &str) -> Result<Vec<Contact>, ProviderError>;
    /// One contact.
    fn get_contact(&self, portal: &str, id: &str) -> Result<Contact, ProviderError>;
    /// Deals, optionally of one contact.
    fn list_deals(
        &self,
        portal: &str,
        contact_id: Option<&str>,
    ) -> Result<Vec<Deal>, ProviderError>;
    /// Move a deal to `stage`.
    fn update_deal_stage(
        &self,
        portal: &str,
        deal_id: &str,
        stage: &str,
        key: Option<&str>,
    ) -> Result<Done, ProviderError>;
    /// Undo a stage change: put the deal back in `stage` if it is still as
    /// the change left it (`after`).
    fn restore_deal_stage(
        &self,
        portal: &str,
        deal_id: &str,
        stage: &str,
        after: &str,
    ) -> Result<(), ProviderError>;
}

impl wit::Host for TaskState {
    fn portals(&mut self) -> wasmtime::Result<Vec<Resource<PortalHandle>>> {
        self.handles(Interface::Crm)
    }
}

impl wit::HostPortal for TaskState {
    fn name(&mut self, h: Resource<PortalHandle>) -> wasmtime::Result<String> {
        self.scope_name(&h)
    }

    fn find_contacts(
        &mut self,
        h: Resource<PortalHandle>,
        query: String,
    ) -> CallResult<Vec<Contact>> {
        let op = super::Operation::Crm(CrmOp::FindContacts { query });
        expect_response!(self.mediate(&h, op, ""), Contacts)
    }

    fn get_contact(&mut self, h: Resource<PortalHandle>, id: String) -> CallResult<Contact> {
        let op = super::Operation::Crm(CrmOp::GetContact { id });
        expect_response!(self.mediate(&h, op, ""), Contact)
    }

    fn list_deals(
        &mut self,
        h: Resource<PortalHandle>,
        contact_id: Option<String>,
    ) -> CallResult<Vec<Deal>> {
        let op = super::Operation::Crm(CrmOp::ListDeals { contact_id });
        expect_response!(self.mediate(&h, op, ""), Deals)
    }

    fn update_deal_stage(
        &mut self,
        h: Resource<PortalHandle>,
        deal_id: String,
        stage: String,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        let op = super::Operation::Crm(CrmOp::UpdateDealStage { deal_id, stage });
        written!(self.mediate(&h, op, &reason))
    }

    fn drop(&mut self, h: Resource<PortalHandle>) -> wasmtime::Result<()> {
        self.drop_handle(h)
    }
}
