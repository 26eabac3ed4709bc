//! Accounting assistant: turns the receipts in one mail label into an expense
//! report, writes a summary into its folder, and tells #accounting.
//!
//! Granted: QuickBooks read invoices + create expense reports; Gmail read on
//! the "receipts" label only; Slack post to #accounting; one files folder.

use clancy_sdk::{Employee, Report, Task, chat, files, ledger, mail, note};

struct AccountingAssistant;

/// A receipt found in a mail: what, how much, which category.
struct Receipt {
    mail_id: String,
    description: String,
    currency: String,
    amount_cents: i64,
    category: &'static str,
}

/// Find the first "CUR 12.34" amount (three capital letters, then a decimal number).
fn find_amount(text: &str) -> Option<(String, i64)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    for pair in words.windows(2) {
        let (cur, num) = (pair[0], pair[1].trim_end_matches(['.', ',', ';']));
        if cur.len() == 3
            && cur.chars().all(|c| c.is_ascii_uppercase())
            && let Some(cents) = parse_cents(num)
        {
            return Some((cur.to_string(), cents));
        }
    }
    None
}

fn parse_cents(num: &str) -> Option<i64> {
    let (whole, frac) = num.split_once('.').unwrap_or((num, "0"));
    if whole.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) || frac.len() > 2 {
        return None;
    }
    let frac = format!("{frac:0<2}");
    Some(whole.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}

fn category(message: &mail::Message) -> &'static str {
    let text = format!("{} {} {}", message.from, message.subject, message.body).to_lowercase();
    if ["ticket", "rail", "travel", "flight", "taxi", "hotel"]
        .iter()
        .any(|w| text.contains(w))
    {
        "travel"
    } else if ["subscription", "plan", "saas", "hosting", "cloud"]
        .iter()
        .any(|w| text.contains(w))
    {
        "software"
    } else if ["keyboard", "order", "supplies", "equipment"]
        .iter()
        .any(|w| text.contains(w))
    {
        "equipment"
    } else {
        "other"
    }
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

impl Employee for AccountingAssistant {
    fn run(task: Task) -> Result<Report, String> {
        note(&format!(
            "Asked: \"{}\". I will match receipt mails to expense lines, file one expense report, and report to the team.",
            task.instruction
        ));
        let receipts_box = mail::mailboxes()
            .into_iter()
            .next()
            .ok_or("no receipts label is granted")?;
        let books = ledger::companies()
            .into_iter()
            .next()
            .ok_or("no company books are granted")?;

        let mut receipts = Vec::new();
        let mut skipped = Vec::new();
        for message in receipts_box.list("", 50).map_err(|e| e.describe())? {
            match find_amount(&message.body) {
                Some((currency, amount_cents)) => receipts.push(Receipt {
                    description: message.subject.clone(),
                    category: category(&message),
                    mail_id: message.id,
                    currency,
                    amount_cents,
                }),
                None => skipped.push(message.id),
            }
        }
        if receipts.is_empty() {
            return Ok(Report {
                summary: format!("no receipts with an amount under {}", receipts_box.name()),
            });
        }
        let currency = receipts[0].currency.clone();
        let (same, other): (Vec<Receipt>, Vec<Receipt>) =
            receipts.into_iter().partition(|r| r.currency == currency);
        skipped.extend(other.into_iter().map(|r| r.mail_id));
        let total: i64 = same.iter().map(|r| r.amount_cents).sum();

        let report = ledger::ExpenseReport {
            title: format!(
                "Receipts from {} ({})",
                receipts_box.name(),
                task.instruction.chars().take(60).collect::<String>()
            ),
            currency: currency.clone(),
            lines: same
                .iter()
                .map(|r| ledger::ExpenseLine {
                    description: r.description.clone(),
                    amount_cents: r.amount_cents,
                    category: r.category.to_string(),
                    receipt_ref: format!("mail:{}", r.mail_id),
                })
                .collect(),
        };
        let reason = format!(
            "Filing {} receipts totalling {currency} {} found in {}; each line points at its receipt mail.",
            same.len(),
            money(total),
            receipts_box.name()
        );
        let outcome = books
            .create_expense_report(&report, &reason)
            .map_err(|e| e.describe())?;

        let overdue = books
            .list_invoices(Some("overdue"))
            .map_err(|e| e.describe())?;

        let mut summary = format!(
            "# Expense summary\n\nTask: {}\n\n| receipt | description | category | amount |\n|---|---|---|---|\n",
            task.instruction
        );
        for r in &same {
            summary.push_str(&format!(
                "| {} | {} | {} | {} {} |\n",
                r.mail_id,
                r.description,
                r.category,
                r.currency,
                money(r.amount_cents)
            ));
        }
        summary.push_str(&format!(
            "\nTotal: {currency} {}\nExpense report: {outcome}\n",
            money(total)
        ));
        if !skipped.is_empty() {
            summary.push_str(&format!(
                "Not included (no amount or other currency): {}\n",
                skipped.join(", ")
            ));
        }
        if !overdue.is_empty() {
            summary.push_str("\nOverdue invoices to chase:\n");
            for i in &overdue {
                summary.push_str(&format!(
                    "- {} {} {} {} (due {})\n",
                    i.id,
                    i.customer,
                    i.currency,
                    money(i.amount_cents),
                    i.due_on
                ));
            }
        }
        let mut written = String::from("no folder granted");
        if let Some(folder) = files::folders().into_iter().next() {
            let path = format!("expense-summary-{}.md", &task.id[..8.min(task.id.len())]);
            folder
                .write(
                    &path,
                    summary.as_bytes(),
                    "Keeping a readable summary of the expense report next to the books.",
                )
                .map_err(|e| e.describe())?;
            written = format!("{}/{path}", folder.name());
        }

        if let Some(channel) = chat::channels().into_iter().next() {
            let text = format!(
                "Expense report filed: {} receipts, {currency} {} ({outcome}). {} overdue invoice(s) need chasing. Summary: {written}",
                same.len(),
                money(total),
                overdue.len()
            );
            channel
                .post(
                    &text,
                    "Letting the accounting team know the expense report is ready for review.",
                )
                .map_err(|e| e.describe())?;
        }
        Ok(Report {
            summary: format!(
                "expense report with {} lines, {currency} {} ({outcome}); summary at {written}; {} overdue invoices",
                same.len(),
                money(total),
                overdue.len()
            ),
        })
    }
}

clancy_sdk::export!(AccountingAssistant);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_found_in_receipt_text() {
        assert_eq!(
            find_amount("Amount paid: GBP 86.40. Date"),
            Some(("GBP".into(), 8640))
        );
        assert_eq!(
            find_amount("Total charged: GBP 119.98 including VAT."),
            Some(("GBP".into(), 11998))
        );
        assert_eq!(find_amount("EUR 12"), Some(("EUR".into(), 1200)));
        assert_eq!(find_amount("no money here"), None);
        assert_eq!(find_amount("VAT 12.345"), None);
    }
}
