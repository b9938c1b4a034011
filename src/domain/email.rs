//! A syntactically valid e-mail address. Built only through [`EmailAddress::parse`],
//! so every value of this type in the program is normalised and valid.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Accepts `local@domain.tld`, trims surrounding space and lowercases it so that
    /// lookups (login, duplicate detection) do not depend on how a user typed it.
    pub fn parse(input: &str) -> Result<Self, String> {
        let s = input.trim().to_lowercase();
        if s.len() > 254 {
            return Err("an email address is at most 254 characters".into());
        }
        let (local, domain) = s
            .split_once('@')
            .ok_or_else(|| format!("'{}' is not an email address: it has no '@'", input.trim()))?;
        if local.is_empty() || local.len() > 64 {
            return Err(format!("'{}' is not an email address: bad local part", input.trim()));
        }
        let local_ok = local.chars().all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(format!("'{}' is not an email address: bad local part", input.trim()));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(format!("'{}' is not an email address: bad domain", input.trim()));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_addresses_are_normalised_to_lowercase() {
        let e = EmailAddress::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "ada.lovelace@example.com");
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in [
            "",
            "plain",
            "@x.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@-b.com",
            "a..b@c.com",
            "a@b..com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
