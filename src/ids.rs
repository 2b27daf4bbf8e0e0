//! Says what the gateway accepts as a mailbox, folder or item id, before any of it reaches an upstream URL.
//!
//! Every id a client sends is checked against a strict character set and length here. Upstream URLs are
//! then built by percent-encoding these values as single path segments, so nothing a client sends can
//! change an upstream path, query or host.

use std::fmt;

/// Longest mailbox reference accepted (an SMTP address is at most 254 characters).
const MAX_MAILBOX_LEN: usize = 320;
/// Longest folder or item id accepted; Exchange ids are far shorter.
const MAX_ID_LEN: usize = 512;

/// Graph's well-known folder names (docs/upstream.md section 4).
pub const WELL_KNOWN_FOLDERS: &[&str] = &[
    "archive",
    "clutter",
    "conflicts",
    "conversationhistory",
    "deleteditems",
    "drafts",
    "inbox",
    "junkemail",
    "localfailures",
    "msgfolderroot",
    "outbox",
    "recoverableitemsdeletions",
    "scheduled",
    "searchfolders",
    "sentitems",
    "serverfailures",
    "syncissues",
];

/// A mailbox, as a client may name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MailboxRef {
    /// A mailbox id, `MBX:{guid}@{guid}`.
    Id(String),
    /// A user's address (UPN), resolved through the user's Exchange settings. Stored lower-case.
    Address(String),
    /// `me`: the signed-in user's own mailbox (delegated mode only).
    Me,
}

/// A folder, as a client may name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FolderRef {
    /// An Exchange folder id.
    Id(String),
    /// A well-known name such as `inbox`, resolved per mailbox. Stored lower-case.
    WellKnown(&'static str),
}

/// Why an id was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

impl MailboxRef {
    /// Parses a mailbox id (`MBX:...@...`) or a user's address.
    pub fn parse(value: &str) -> Result<MailboxRef, InvalidId> {
        if value.eq_ignore_ascii_case("me") {
            return Ok(MailboxRef::Me);
        }
        if value.is_empty() || value.len() > MAX_MAILBOX_LEN {
            return Err(InvalidId(format!(
                "a mailbox must be 1 to {MAX_MAILBOX_LEN} characters long"
            )));
        }
        if let Some(rest) = value.strip_prefix("MBX:") {
            let valid = rest
                .split_once('@')
                .is_some_and(|(mailbox, tenant)| is_guidish(mailbox) && is_guidish(tenant));
            return if valid {
                Ok(MailboxRef::Id(value.to_owned()))
            } else {
                Err(InvalidId(
                    "a mailbox id must look like MBX:{mailbox guid}@{tenant guid}".into(),
                ))
            };
        }
        let valid_address = value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !local.starts_with('.')
                && !local.ends_with('.')
                && !local.contains("..")
                && local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
                && is_domain(domain)
        });
        if valid_address {
            Ok(MailboxRef::Address(value.to_ascii_lowercase()))
        } else {
            Err(InvalidId(
                "a mailbox must be a mailbox id (MBX:...@...), a user's address \
                 (letters, digits, '.', '_', '+', '-' before the @, a domain after it)"
                    .into(),
            ))
        }
    }
}

impl fmt::Display for MailboxRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxRef::Id(id) | MailboxRef::Address(id) => f.write_str(id),
            MailboxRef::Me => f.write_str("me"),
        }
    }
}

impl FolderRef {
    /// Parses a well-known folder name (any case) or a folder id.
    pub fn parse(value: &str) -> Result<FolderRef, InvalidId> {
        if let Some(name) = WELL_KNOWN_FOLDERS
            .iter()
            .find(|name| name.eq_ignore_ascii_case(value))
        {
            return Ok(FolderRef::WellKnown(name));
        }
        check_exchange_id(value, "folder").map_err(|InvalidId(problem)| {
            InvalidId(format!(
                "{problem}, or a well-known name such as inbox or archive; a folder's display name \
                 (like {value:?}) is not its id: GET /v1/mailboxes/{{mailbox}}/folders lists the ids"
            ))
        })?;
        Ok(FolderRef::Id(value.to_owned()))
    }
}

impl fmt::Display for FolderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FolderRef::Id(id) => f.write_str(id),
            FolderRef::WellKnown(name) => f.write_str(name),
        }
    }
}

/// Checks an Exchange item or folder id, or a change key: base64 (standard or URL-safe alphabet).
pub fn check_exchange_id(value: &str, what: &str) -> Result<(), InvalidId> {
    let charset_ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b));
    if value.is_empty() || value.len() > MAX_ID_LEN || !charset_ok {
        return Err(InvalidId(format!(
            "a {what} id must be 1 to {MAX_ID_LEN} characters of base64 \
             (letters, digits, '+', '/', '=', '_', '-')"
        )));
    }
    Ok(())
}

/// The parts of a mailbox id: a GUID, or the shortened hex forms the documentation shows.
fn is_guidish(value: &str) -> bool {
    (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn is_domain(domain: &str) -> bool {
    (1..=253).contains(&domain.len())
        && domain.contains('.')
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn mailbox_ids_and_addresses_are_told_apart() {
        assert_eq!(
            MailboxRef::parse("MBX:e0643f21-0000-4000-8000-000000000001@a7809c93").unwrap(),
            MailboxRef::Id("MBX:e0643f21-0000-4000-8000-000000000001@a7809c93".into())
        );
        assert_eq!(
            MailboxRef::parse("Adele.Vance@Contoso.com").unwrap(),
            MailboxRef::Address("adele.vance@contoso.com".into())
        );
    }

    #[test]
    fn hostile_mailboxes_are_refused() {
        for bad in [
            "",
            "adele",
            "MBX:",
            "MBX:abc",
            "MBX:zz@yy",
            "../admin@contoso.com",
            "adele@contoso.com/../x",
            "adele@contoso.com?x=1",
            "a\"b@contoso.com",
            "a'b@contoso.com",
            "adele@contoso",
            "adele@-contoso.com",
            "ad\nele@contoso.com",
            "adele%40contoso.com",
            "a..b@contoso.com",
        ] {
            assert!(MailboxRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(MailboxRef::parse(&format!("{}@contoso.com", "a".repeat(400))).is_err());
    }

    #[test]
    fn well_known_folders_match_in_any_case() {
        assert_eq!(
            FolderRef::parse("Inbox").unwrap(),
            FolderRef::WellKnown("inbox")
        );
        assert_eq!(
            FolderRef::parse("AAMkAGI2TG93AAA=").unwrap(),
            FolderRef::Id("AAMkAGI2TG93AAA=".into())
        );
        for bad in ["", "..", "a b", "a\"b", "a%2Fb", "a?b", "a\u{0}b"] {
            assert!(FolderRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(FolderRef::parse(&"A".repeat(513)).is_err());
    }

    proptest! {
        #[test]
        fn accepted_ids_never_hold_path_or_query_characters(value in "\\PC{0,80}") {
            if let Ok(folder) = FolderRef::parse(&value) {
                let text = folder.to_string();
                prop_assert!(!text.contains(['?', '#', '%', '\\', '"', '\'', ' ']) && text != "..");
            }
            if let Ok(mailbox) = MailboxRef::parse(&value) {
                let text = mailbox.to_string();
                prop_assert!(!text.contains(['/', '?', '#', '%', '\\', '"', '\'', ' ']));
                prop_assert!(!text.contains(".."));
            }
        }
    }
}
