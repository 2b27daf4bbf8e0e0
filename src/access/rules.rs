//! What each client may touch: mailbox patterns and operations, denied unless a rule allows.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::ids::MailboxRef;

/// Something a client can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Create,
    Update,
    ListFolders,
    /// Reading items back: get, list, folder export and exportItems.
    Read,
    Delete,
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "create" => Ok(Operation::Create),
            "update" => Ok(Operation::Update),
            "list-folders" => Ok(Operation::ListFolders),
            "read" => Ok(Operation::Read),
            "delete" => Ok(Operation::Delete),
            other => Err(format!(
                "unknown operation {other:?} (use create, update, list-folders, read, delete)"
            )),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::ListFolders => "list-folders",
            Operation::Read => "read",
            Operation::Delete => "delete",
        })
    }
}

/// Which mailboxes a rule covers.
///
/// Address patterns match only mailboxes named by address, and id patterns only mailboxes named by
/// `MBX:` id: a client allowed `*@restore.contoso.com` cannot reach the same mailboxes, or others, by
/// writing their ids, because the gateway cannot tell an id's address without asking Graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailboxPattern {
    /// `*`: every mailbox, however named.
    Any,
    /// An address or address pattern such as `*@restore.contoso.com` (`*` matches any run of characters;
    /// case-insensitive).
    Address(String),
    /// A mailbox id or id pattern such as `MBX:*@{tenant guid}` (case-insensitive).
    MailboxId(String),
}

impl FromStr for MailboxPattern {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let charset_ok = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"*@.:_+-".contains(&b));
        if value == "*" {
            Ok(MailboxPattern::Any)
        } else if !charset_ok || !value.contains('@') {
            Err(format!(
                "mailbox pattern {value:?} must be *, an address pattern like *@restore.contoso.com, \
                 or an id pattern like MBX:*@<tenant>"
            ))
        } else if value.len() > 4 && value[..4].eq_ignore_ascii_case("MBX:") {
            Ok(MailboxPattern::MailboxId(value.to_ascii_lowercase()))
        } else {
            Ok(MailboxPattern::Address(value.to_ascii_lowercase()))
        }
    }
}

impl MailboxPattern {
    fn matches(&self, mailbox: &MailboxRef) -> bool {
        match (self, mailbox) {
            (MailboxPattern::Any, _) => true,
            (MailboxPattern::Address(pattern), MailboxRef::Address(address)) => {
                glob(pattern, address)
            }
            (MailboxPattern::MailboxId(pattern), MailboxRef::Id(id)) => {
                glob(pattern, &id.to_ascii_lowercase())
            }
            _ => false,
        }
    }
}

/// One rule: these operations on these mailboxes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub client: String,
    pub mailboxes: Vec<MailboxPattern>,
    pub operations: BTreeSet<Operation>,
}

/// A rule as written in `MAILBOX_GATEWAY_ACCESS_RULES`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    client: String,
    mailboxes: Vec<String>,
    operations: Vec<String>,
}

/// Parses `[{"client": "...", "mailboxes": ["..."], "operations": ["create", ...]}, ...]`.
pub fn parse_rules(json: &str) -> Result<Vec<Rule>, String> {
    let texts: Vec<RuleText> =
        serde_json::from_str(json).map_err(|e| format!("not a JSON list of rules: {e}"))?;
    texts
        .into_iter()
        .map(|text| {
            if text.client.trim().is_empty() {
                return Err("a rule has an empty client name".to_owned());
            }
            Ok(Rule {
                mailboxes: text
                    .mailboxes
                    .iter()
                    .map(|m| m.parse())
                    .collect::<Result<_, _>>()?,
                operations: text
                    .operations
                    .iter()
                    .map(|o| o.parse())
                    .collect::<Result<_, _>>()?,
                client: text.client,
            })
        })
        .collect()
}

/// Whether any of `rules` lets `client` do `operation` on `mailbox`.
pub fn allows(rules: &[Rule], client: &str, mailbox: &MailboxRef, operation: Operation) -> bool {
    rules.iter().any(|rule| {
        rule.client == client
            && rule.operations.contains(&operation)
            && rule
                .mailboxes
                .iter()
                .any(|pattern| pattern.matches(mailbox))
    })
}

/// `*`-only glob match, iterative, linear in practice for the short patterns used here.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_p, star_t)) = star {
            pi = star_p + 1;
            ti = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(value: &str) -> MailboxRef {
        MailboxRef::parse(value).unwrap()
    }

    fn rules() -> Vec<Rule> {
        parse_rules(
            r#"[
                {"client": "appliance", "mailboxes": ["*@restore.contoso.com"], "operations": ["create", "update"]},
                {"client": "ops", "mailboxes": ["MBX:*@a7809c93"], "operations": ["list-folders"]},
                {"client": "admin", "mailboxes": ["*"], "operations": ["create", "update", "list-folders"]}
            ]"#,
        )
        .unwrap()
    }

    #[test]
    fn address_rules_allow_matching_addresses_for_their_operations_only() {
        let rules = rules();
        let alice = mailbox("Alice@Restore.Contoso.com");
        assert!(allows(&rules, "appliance", &alice, Operation::Create));
        assert!(!allows(&rules, "appliance", &alice, Operation::ListFolders));
        assert!(!allows(
            &rules,
            "appliance",
            &mailbox("alice@contoso.com"),
            Operation::Create
        ));
        assert!(!allows(
            &rules,
            "appliance",
            &mailbox("alice@evilrestore.contoso.com.evil.com"),
            Operation::Create
        ));
        assert!(
            !allows(&rules, "stranger", &alice, Operation::Create),
            "deny by default"
        );
    }

    #[test]
    fn address_rules_are_not_bypassed_by_writing_a_mailbox_id() {
        let rules = rules();
        let id = mailbox("MBX:e0643f21@a7809c93");
        assert!(!allows(&rules, "appliance", &id, Operation::Create));
        assert!(allows(&rules, "ops", &id, Operation::ListFolders));
        assert!(!allows(
            &rules,
            "ops",
            &mailbox("MBX:e0643f21@ffff"),
            Operation::ListFolders
        ));
        assert!(!allows(
            &rules,
            "ops",
            &mailbox("ops@a7809c93.com"),
            Operation::ListFolders
        ));
        assert!(allows(&rules, "admin", &id, Operation::Update));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        for bad in [
            "{}",
            r#"[{"client": "x", "mailboxes": ["a/b@c"], "operations": ["create"]}]"#,
            r#"[{"client": "x", "mailboxes": ["*"], "operations": ["shred"]}]"#,
            r#"[{"client": "", "mailboxes": ["*"], "operations": ["create"]}]"#,
            r#"[{"client": "x", "mailboxes": ["*"], "operations": ["create"], "extra": 1}]"#,
        ] {
            assert!(parse_rules(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glob_handles_stars_anywhere() {
        assert!(glob("*@x.com", "a@x.com"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("*", ""));
        assert!(!glob("", "a"));
    }
}
