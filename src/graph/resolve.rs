//! Turns what clients name into Exchange ids: an address into its mailbox id, a well-known folder name
//! into its folder id (both cached, concurrent look-ups coalesced), and lists a mailbox's folders across
//! Graph's pages.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{CallContext, Endpoint, ErrorKind, GraphClient, GraphError};
use crate::ids::{FolderRef, MailboxRef};

/// The primary mailbox id in a user's Exchange settings.
fn primary(settings: &ExchangeSettings) -> Option<String> {
    match settings
        .primary_mailbox_id
        .as_deref()
        .map(MailboxRef::parse)
    {
        Some(Ok(MailboxRef::Id(id))) => Some(id),
        _ => None,
    }
}

fn no_primary(action: &str) -> GraphError {
    GraphError::new(
        action,
        ErrorKind::InvalidResponse("no valid primaryMailboxId".into()),
    )
}

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
    in_place_archive_mailbox_id: Option<String>,
}

/// The mailboxes a signed-in user owns: their primary mailbox and, if they have one, their archive.
#[derive(Clone, Debug)]
pub(crate) struct OwnMailboxes {
    primary: String,
    archive: Option<String>,
}

#[derive(Deserialize)]
struct FolderPage {
    value: Vec<MailboxFolder>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

impl GraphClient {
    /// The mailbox id for a mailbox reference; addresses are resolved once and cached. Acting for a
    /// user (delegated mode), `me` is their own mailbox, and any other mailbox is refused here, before
    /// any import call: Exchange would refuse it too.
    pub async fn resolve_mailbox(
        &self,
        mailbox: &MailboxRef,
        context: &CallContext,
    ) -> Result<String, GraphError> {
        let resolved = match mailbox {
            MailboxRef::Id(id) => id.clone(),
            MailboxRef::Address(address) => self.resolve_address(address, context).await?,
            MailboxRef::Me => match context.user {
                Some(_) => return Ok(self.own_mailboxes(context).await?.primary),
                None => {
                    return Err(GraphError::new(
                        "`me` names the signed-in user's own mailbox, which only delegated mode \
                         (MAILBOX_GATEWAY_GRAPH_ACCESS=delegated) knows; name the mailbox by address \
                         or id",
                        ErrorKind::NotFound(super::Missing::Mailbox),
                    ))
                }
            },
        };
        if context.user.is_some() {
            let own = self.own_mailboxes(context).await?;
            if resolved != own.primary && Some(&resolved) != own.archive.as_ref() {
                return Err(GraphError::new(
                    format!("acting for the signed-in user on {mailbox}"),
                    ErrorKind::NotTheUsers,
                ));
            }
        }
        Ok(resolved)
    }

    async fn resolve_address(
        &self,
        address: &str,
        context: &CallContext,
    ) -> Result<String, GraphError> {
        // Acting for a user, their lookup is their own: another user's refusal is not shared with them.
        let key = match &context.user {
            Some(user) => format!("{}/{}|{address}", user.tenant_id, user.oid),
            None => address.to_owned(),
        };
        self.mailboxes
            .try_get_with(key, async {
                let action = format!("looking up the mailbox of {address}");
                let url = self.graph_endpoint(&["users", address, "settings", "exchange"]);
                let settings: ExchangeSettings = self
                    .graph_json(Method::GET, url, &action, Endpoint::Users, None, context)
                    .await?;
                primary(&settings).ok_or_else(|| no_primary(&action))
            })
            .await
            .map_err(std::sync::Arc::unwrap_or_clone)
    }

    /// The signed-in user's own mailboxes (`GET /me/settings/exchange` with their token), once per user.
    async fn own_mailboxes(&self, context: &CallContext) -> Result<OwnMailboxes, GraphError> {
        let user = context
            .user
            .as_ref()
            .expect("only called acting for a user");
        self.own
            .try_get_with((user.tenant_id.clone(), user.oid.clone()), async {
                let action = "looking up the signed-in user's mailbox";
                let url = self.graph_endpoint(&["me", "settings", "exchange"]);
                let settings: ExchangeSettings = self
                    .graph_json(Method::GET, url, action, Endpoint::Users, None, context)
                    .await?;
                Ok(OwnMailboxes {
                    primary: primary(&settings).ok_or_else(|| no_primary(action))?,
                    archive: settings
                        .in_place_archive_mailbox_id
                        .filter(|id| matches!(MailboxRef::parse(id), Ok(MailboxRef::Id(_)))),
                })
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
