//! Turns what clients name into Exchange ids: an address into its mailbox id, a well-known folder name
//! into its folder id (both cached, concurrent look-ups coalesced), and lists a mailbox's folders across
//! Graph's pages.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{CallContext, Endpoint, ErrorKind, GraphClient, GraphError};
use crate::ids::{FolderRef, MailboxRef};

/// Most pages of folders followed, so a misbehaving `@odata.nextLink` cannot loop forever.
const MAX_FOLDER_PAGES: usize = 1000;

/// A folder of a mailbox, as Graph describes it (the fields the gateway passes on).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MailboxFolder {
    pub id: String,
    pub display_name: Option<String>,
    pub parent_folder_id: Option<String>,
    pub well_known_name: Option<String>,
    #[serde(rename = "type")]
    pub folder_type: Option<String>,
    pub total_item_count: Option<u64>,
    pub child_folder_count: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeSettings {
    primary_mailbox_id: Option<String>,
}

#[derive(Deserialize)]
struct FolderPage {
    value: Vec<MailboxFolder>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

impl GraphClient {
    /// The mailbox id for a mailbox reference; addresses are resolved once and cached.
    pub async fn resolve_mailbox(
        &self,
        mailbox: &MailboxRef,
        context: &CallContext,
    ) -> Result<String, GraphError> {
        let address = match mailbox {
            MailboxRef::Id(id) => return Ok(id.clone()),
            MailboxRef::Address(address) => address,
        };
        self.mailboxes
            .try_get_with_by_ref(address, async {
                let action = format!("looking up the mailbox of {address}");
                let url = self.graph_endpoint(&["users", address, "settings", "exchange"]);
                let settings: ExchangeSettings = self
                    .graph_json(Method::GET, url, &action, Endpoint::Users, None, context)
                    .await?;
                match settings
                    .primary_mailbox_id
                    .as_deref()
                    .map(MailboxRef::parse)
                {
                    Some(Ok(MailboxRef::Id(id))) => Ok(id),
                    _ => Err(GraphError::new(
                        action,
                        ErrorKind::InvalidResponse("no valid primaryMailboxId".into()),
                    )),
                }
            })
            .await
            .map_err(std::sync::Arc::unwrap_or_clone)
    }

    /// The folder id for a folder reference; well-known names are resolved once per mailbox and cached.
    pub async fn resolve_folder(
        &self,
        mailbox_id: &str,
        folder: &FolderRef,
        context: &CallContext,
    ) -> Result<String, GraphError> {
        let name = match folder {
            FolderRef::Id(id) => return Ok(id.clone()),
            FolderRef::WellKnown(name) => *name,
        };
        self.folders
            .try_get_with((mailbox_id.to_owned(), name), async {
                let action = format!("looking up the {name} folder of {mailbox_id}");
                let url = self.graph_endpoint(&[
                    "admin",
                    "exchange",
                    "mailboxes",
                    mailbox_id,
                    "folders",
                    name,
                ]);
                let folder: MailboxFolder = self
                    .graph_json(
                        Method::GET,
                        url,
                        &action,
                        Endpoint::Folder,
                        Some(mailbox_id),
                        context,
                    )
                    .await?;
                Ok(folder.id)
            })
            .await
            .map_err(std::sync::Arc::unwrap_or_clone)
    }

    /// Every folder of the mailbox, following `@odata.nextLink` to the last page.
    pub async fn list_folders(
        &self,
        mailbox_id: &str,
        context: &CallContext,
    ) -> Result<Vec<MailboxFolder>, GraphError> {
        let action = format!("listing the folders of {mailbox_id}");
        let mut url =
            self.graph_endpoint(&["admin", "exchange", "mailboxes", mailbox_id, "folders"]);
        let mut folders = Vec::new();
        for _ in 0..MAX_FOLDER_PAGES {
            let page: FolderPage = self
                .graph_json(
                    Method::GET,
                    url,
                    &action,
                    Endpoint::Folders,
                    Some(mailbox_id),
                    context,
                )
                .await?;
            folders.extend(page.value);
            let Some(next) = page.next_link else {
                return Ok(folders);
            };
            // The bearer token goes wherever nextLink points: only ever to Graph itself.
            url = match Url::parse(&next) {
                Ok(next) if next.origin() == self.graph_url.origin() => next,
                _ => {
                    return Err(GraphError::new(
                        action,
                        ErrorKind::InvalidResponse("@odata.nextLink points away from Graph".into()),
                    ))
                }
            };
        }
        Err(GraphError::new(
            action,
            ErrorKind::InvalidResponse(format!("more than {MAX_FOLDER_PAGES} pages of folders")),
        ))
    }
}
