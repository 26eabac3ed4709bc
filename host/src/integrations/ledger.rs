//! Books (QuickBooks Online and the sandbox), the `ledger` interface: one
//! handle per granted company. Expense reports carry an amount (what
//! `over_amount` policies and amount budgets look at) and can be voided
//! while still as created.

use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;

use super::{Action, EditError, Interface, Spec, quote};
use crate::human;
use crate::providers::{Done, ProviderError, Response, money};
use crate::runtime::TaskState;
use crate::runtime::bindings::ledger::{self as wit, ExpenseReport, Invoice};
use crate::runtime::guest_calls::CallResult;

crate::grant_handle!(
    /// A `ledger.company` handle: one granted scope.
    CompanyHandle
);

/// The facts of the ledger integration.
pub const SPEC: Spec = Spec {
    name: "quickbooks",
    interface: Interface::Ledger,
    scope_kind: "company",
    actions: &[Action::ReadInvoices, Action::CreateExpenseReports],
};

/// A call on a company's books (the WIT method's parameters, minus the reason).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum LedgerOp {
    /// `company.list-invoices`
    #[serde(rename = "ledger-list-invoices")]
    ListInvoices { status: Option<String> },
    /// `company.create-expense-report`
    #[serde(rename = "ledger-create-expense-report")]
    CreateExpenseReport { report: ExpenseReport },
}

/// The money a report moves: the sum of its lines' sizes, if it fits.
fn moved(report: &ExpenseReport) -> Option<i64> {
    report.lines.iter().try_fold(0i64, |sum, l| {
        sum.checked_add(l.amount_cents.checked_abs()?)
    })
}

/// A report's net total for display (saturating; amounts that overflow are
/// rejected before anything is shown to an approver).
fn total(report: &ExpenseReport) -> i64 {
    report
        .lines
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(l.amount_cents))
}

impl LedgerOp {
    /// The grant action it needs.
    pub fn action(&self) -> Action {
        match self {
            LedgerOp::ListInvoices { .. } => Action::ReadInvoices,
            LedgerOp::CreateExpenseReport { .. } => Action::CreateExpenseReports,
        }
    }

    /// The contract method.
    pub fn method(&self) -> &'static str {
        match self {
            LedgerOp::ListInvoices { .. } => "list-invoices",
            LedgerOp::CreateExpenseReport { .. } => "create-expense-report",
        }
    }

    /// The money it moves, in cents: every line counts by its size, so a
    /// negative line cannot bring a report under a threshold or a budget.
    /// `None` for operations without an amount; an amount that overflows
    /// counts as the largest there is (and [`LedgerOp::check_amounts`]
    /// rejects it before any gate is asked).
    pub fn amount_cents(&self) -> Option<i64> {
        match self {
            LedgerOp::CreateExpenseReport { report } => Some(moved(report).unwrap_or(i64::MAX)),
            _ => None,
        }
    }

    /// Reject amounts whose arithmetic overflows: a report's total and the
    /// money it moves must be exact.
    pub fn check_amounts(&self) -> Result<(), String> {
        match self {
            LedgerOp::CreateExpenseReport { report } => {
                let net = report
                    .lines
                    .iter()
                    .try_fold(0i64, |sum, l| sum.checked_add(l.amount_cents));
                if net.is_none() || moved(report).is_none() {
                    return Err(
                        "the expense lines' amounts overflow; each amount must be an ordinary sum of money"
                            .into(),
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The audit log's summary of the arguments.
    pub fn summary(&self) -> String {
        match self {
            LedgerOp::ListInvoices { status } => match status {
                Some(s) => format!("status {}", quote(s)),
                None => "all".into(),
            },
            LedgerOp::CreateExpenseReport { report } => format!(
                "title {}, {} lines, total {} {}",
                quote(&report.title),
                report.lines.len(),
                money(total(report)),
                report.currency
            ),
        }
    }

    /// What the approver reads: every line of a report.
    pub fn preview(&self, _scope: &str) -> String {
        match self {
            LedgerOp::CreateExpenseReport { report } => {
                let mut s = format!(
                    "create expense report \"{}\": {} {}",
                    human::line(&report.title),
                    human::line(&report.currency),
                    money(total(report))
                );
                for l in &report.lines {
                    s.push_str(&format!(
                        "\n    - {} [{}] {} ({})",
                        human::line(&l.description),
                        human::line(&l.category),
                        money(l.amount_cents),
                        human::line(&l.receipt_ref)
                    ));
                }
                s
            }
            other => format!("{} {}", other.method(), other.summary()),
        }
    }

    /// Guest-supplied bytes in the arguments.
    pub fn argument_bytes(&self) -> usize {
        match self {
            LedgerOp::ListInvoices { status } => status.as_ref().map_or(0, String::len),
            LedgerOp::CreateExpenseReport { report } => {
                report.title.len()
                    + report.currency.len()
                    + report
                        .lines
                        .iter()
                        .map(|l| l.description.len() + l.category.len() + l.receipt_ref.len() + 8)
                        .sum::<usize>()
            }
        }
    }

    /// The fields an approver may edit.
    pub fn editable_fields(&self) -> &'static [&'static str] {
        match self {
            LedgerOp::CreateExpenseReport { .. } => &["title"],
            _ => &[],
        }
    }

    /// The operation with `field` set to `value`; `None` if no such field.
    pub fn edited(&self, field: &str, value: &str) -> Result<Option<LedgerOp>, EditError> {
        Ok(match (self, field) {
            (LedgerOp::CreateExpenseReport { report }, "title") => {
                let mut report = report.clone();
                report.title = value.into();
                Some(LedgerOp::CreateExpenseReport { report })
            }
            _ => None,
        })
    }

    /// Run it against the ledger provider in `company`.
    pub fn run(
        &self,
        provider: &dyn LedgerProvider,
        company: &str,
        key: Option<&str>,
    ) -> Result<Response, ProviderError> {
        Ok(match self {
            LedgerOp::ListInvoices { status } => {
                Response::Invoices(provider.list_invoices(company, status.as_deref())?)
            }
            LedgerOp::CreateExpenseReport { report } => {
                Response::Done(provider.create_expense_report(company, report, key)?)
            }
        })
    }
}

/// How a ledger write is undone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum LedgerInverse {
    /// Void a created expense report.
    VoidExpenseReport {
        /// Report id.
        id: String,
        /// Fingerprint of the report as created.
        after: String,
    },
}

impl LedgerInverse {
    /// The grant action undoing needs (the write's).
    pub fn action(&self) -> Action {
        Action::CreateExpenseReports
    }

    /// The method, for the audit log.
    pub fn method(&self) -> &'static str {
        "void-expense-report"
    }

    /// What undoing does.
    pub fn summary(&self) -> String {
        match self {
            LedgerInverse::VoidExpenseReport { id, .. } => {
                format!("void expense report {}", quote(id))
            }
        }
    }

    /// Run it against the ledger provider in `company`.
    pub fn run(&self, provider: &dyn LedgerProvider, company: &str) -> Result<(), ProviderError> {
        match self {
            LedgerInverse::VoidExpenseReport { id, after } => {
                provider.void_expense_report(company, id, after)
            }
        }
    }
}

/// Books (QuickBooks Online and the sandbox). `company` is the scope's value.
pub trait LedgerProvider: Send + Sync {
    /// Invoices, optionally with one status.
    fn list_invoices(
        &self,
        company: &str,
        status: Option<&str>,
    ) -> Result<Vec<Invoice>, ProviderError>;
    /// Create an expense report.
    fn create_expense_report(
        &self,
        company: &str,
        report: &ExpenseReport,
        key: Option<&str>,
    ) -> Result<Done, ProviderError>;
    /// Undo a report: void it if it is still as created (`after`).
    fn void_expense_report(
        &self,
        company: &str,
        id: &str,
        after: &str,
    ) -> Result<(), ProviderError>;
}

impl wit::Host for TaskState {
    fn companies(&mut self) -> wasmtime::Result<Vec<Resource<CompanyHandle>>> {
        self.handles(Interface::Ledger)
    }
}

impl wit::HostCompany for TaskState {
    fn name(&mut self, h: Resource<CompanyHandle>) -> wasmtime::Result<String> {
        self.scope_name(&h)
    }

    fn list_invoices(
        &mut self,
        h: Resource<CompanyHandle>,
        status: Option<String>,
    ) -> CallResult<Vec<Invoice>> {
        let op = super::Operation::Ledger(LedgerOp::ListInvoices { status });
        expect_response!(self.mediate(&h, op, ""), Invoices)
    }

    fn create_expense_report(
        &mut self,
        h: Resource<CompanyHandle>,
        report: ExpenseReport,
        reason: String,
    ) -> CallResult<wit::Outcome> {
        let op = super::Operation::Ledger(LedgerOp::CreateExpenseReport { report });
        written!(self.mediate(&h, op, &reason))
    }

    fn drop(&mut self, h: Resource<CompanyHandle>) -> wasmtime::Result<()> {
        self.drop_handle(h)
    }
}
