//! Email addresses as the host checks them: parsed by a maintained RFC 5322
//! parser (`mailparse`), never by substring. A recipient string such as
//! `a@evil.example, b@northwind.example` is two recipients; a display name
//! never counts as an address; anything that is not exactly one plain
//! address per mailbox is invalid.

/// Why a recipient is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The text is not an email address (or a list of them).
    #[error("{0:?} is not an email address")]
    NotAnAddress(String),
    /// The text parses but names nobody.
    #[error("{0:?} names no recipient")]
    NoRecipient(String),
    /// There is no recipient at all.
    #[error("there is no recipient")]
    Empty,
}

/// Parse every entry of `entries` as address lists and return the plain
/// addresses (lowercased domain), one per recipient, or why one is invalid.
pub fn parse_recipients(entries: &[String]) -> Result<Vec<String>, AddressError> {
    let mut out = Vec::new();
    for entry in entries {
        if entry.chars().any(char::is_control) {
            return Err(AddressError::NotAnAddress(entry.clone()));
        }
        let list =
            mailparse::addrparse(entry).map_err(|_| AddressError::NotAnAddress(entry.clone()))?;
        let mut found = 0;
        for addr in list.iter() {
            let singles: Vec<&mailparse::SingleInfo> = match addr {
                mailparse::MailAddr::Single(s) => vec![s],
                mailparse::MailAddr::Group(g) => g.addrs.iter().collect(),
            };
            for single in singles {
                out.push(canonical(&single.addr)?);
                found += 1;
            }
        }
        if found == 0 {
            return Err(AddressError::NoRecipient(entry.clone()));
        }
    }
    if out.is_empty() {
        return Err(AddressError::Empty);
    }
    Ok(out)
}

/// One plain address, with its domain lowercased, or why it is not one.
fn canonical(addr: &str) -> Result<String, AddressError> {
    let not_one = || AddressError::NotAnAddress(addr.to_string());
    let (local, domain) = addr.rsplit_once('@').ok_or_else(not_one)?;
    if local.is_empty()
        || local.contains('@')
        || local
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c == '<' || c == '>')
        || !valid_domain(domain)
    {
        return Err(not_one());
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// The domain of a canonical address.
pub fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Whether `domain` is a DNS domain name with at least two labels
/// (letters, digits and inner hyphens, 1-63 characters each).
pub fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[&str]) -> Result<Vec<String>, AddressError> {
        parse_recipients(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_comma_string_is_two_recipients_never_one() -> Result<(), AddressError> {
        assert_eq!(
            parse(&["a@evil.example, b@northwind.example"])?,
            ["a@evil.example", "b@northwind.example"]
        );
        Ok(())
    }

    #[test]
    fn a_display_name_is_not_an_address() -> Result<(), AddressError> {
        assert_eq!(
            parse(&["\"b@northwind.example\" <a@Evil.Example>"])?,
            ["a@evil.example"]
        );
        Ok(())
    }

    #[test]
    fn malformed_recipients_are_invalid() {
        for bad in [
            "",
            "nobody",
            "a@",
            "@northwind.example",
            "a@evil.example@northwind.example",
            "a@northwind",
            "a@-x.example",
            "a@evil.example\r\nBcc: b@x.example",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad:?} was accepted");
        }
        assert!(parse(&[]).is_err());
    }
}
