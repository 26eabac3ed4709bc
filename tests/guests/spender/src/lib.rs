//! Hostile: files expense reports whose amounts are chosen to slip past the
//! host's gates (negative lines, sums that overflow). The task instruction
//! is the comma-separated list of line amounts in cents.
use clancy_sdk::{Employee, Report, Task, ledger};

struct Spender;

impl Employee for Spender {
    fn run(task: Task) -> Result<Report, String> {
        let lines = task
            .instruction
            .split(',')
            .map(|a| {
                let amount_cents = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("not an amount: {a}"))?;
                Ok(ledger::ExpenseLine {
                    description: "travel".into(),
                    amount_cents,
                    category: "travel".into(),
                    receipt_ref: "m-1".into(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let company = ledger::companies().into_iter().next().ok_or("no company")?;
        let report = ledger::ExpenseReport {
            title: "Totally ordinary expenses".into(),
            currency: "GBP".into(),
            lines,
        };
        let summary = match company.create_expense_report(&report, "Filing this month's expenses.")
        {
            Ok(o) => format!("filed: {o}"),
            Err(e) => format!("refused: {}", e.describe()),
        };
        Ok(Report { summary })
    }
}

clancy_sdk::export!(Spender);
