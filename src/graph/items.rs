//! A folder's items as Graph describes them: one page of the listing at a time, one item's metadata, and
//! deleting an item.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    invalid_json, parse_json, Call, CallContext, Endpoint, ErrorKind, GraphClient, GraphError,
};

/// The query parameters a page token may carry back to Graph: those Graph's own `@odata.nextLink` uses
/// for these listings. Anything else in a token is refused, so a token cannot ask Graph for more.
const PAGE_TOKEN_PARAMETERS: &[&str] = &["$skiptoken", "$skip", "$top", "$filter", "$select"];

/// The largest `$top` a page token may carry (the API's own largest page size).
const MAX_TOP: u32 = 1000;

/// The item properties asked of Graph and passed on.
const ITEM_PROPERTIES: &str = "id,changeKey,type,size,createdDateTime,lastModifiedDateTime";

/// One item of a folder, as Graph describes it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct ItemSummary {
    #[serde(rename(deserialize = "id", serialize = "itemId"))]
    pub item_id: String,
    #[serde(rename = "changeKey")]
    pub change_key: String,
    /// The message class, such as `IPM.Note`.
    #[serde(rename = "type", default)]
    pub item_type: Option<String>,
    /// The item's size in bytes, as Exchange counts it.
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(rename = "createdDateTime", default)]
    pub created: Option<String>,
    #[serde(rename = "lastModifiedDateTime", default)]
    pub last_modified: Option<String>,
}

/// Which page of a folder's items to fetch.
#[derive(Clone, Debug, Default)]
pub struct PageQuery {
    /// Items per page (Graph's `$top`).
    pub page_size: u32,
    /// Only items created after this instant (RFC 3339, UTC).
    pub created_after: Option<String>,
    /// Where to continue, from an earlier page's [`ItemPage::next`].
    pub token: Option<String>,
}

/// One page of a folder's items and, unless it is the last, the token of the next.
#[derive(Debug)]
pub struct ItemPage {
    pub items: Vec<ItemSummary>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct GraphItemPage {
    value: Vec<ItemSummary>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// A page token that could not be read: it was not made by this gateway for this listing.
#[derive(Debug, thiserror::Error)]
#[error("the page token is not one this gateway handed out")]
pub struct InvalidPageToken;

/// How an item is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposal {
    /// Moved to the mailbox's Recoverable Items, where it can be recovered.
    Soft,
    /// Removed for good, unless a hold or retention keeps it.
    Hard,
}

impl Disposal {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposal::Soft => "soft",
            Disposal::Hard => "hard",
        }
    }

    fn graph_value(self) -> &'static str {
        match self {
            Disposal::Soft => "softDelete",
            Disposal::Hard => "hardDelete",
        }
    }
}

impl GraphClient {
    /// One page of a folder's items, oldest first as Graph orders them. Graph's pages are followed one
    /// per call: the next page's token carries Graph's own continuation, checked when it comes back.
    pub async fn list_items(
        &self,
        mailbox_id: &str,
        folder_id: &str,
        query: &PageQuery,
        context: &CallContext,
    ) -> Result<ItemPage, GraphError> {
        let action = format!("listing the items of a folder of {mailbox_id}");
        let mut url = self.items_endpoint(mailbox_id, folder_id, None);
        match &query.token {
            Some(token) => {
                let pairs = decode_page_token(token).map_err(|_| {
                    GraphError::new(&action, ErrorKind::InvalidResponse("bad page token".into()))
                })?;
                url.query_pairs_mut().extend_pairs(pairs);
            }
            None => {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("$top", &query.page_size.to_string());
                pairs.append_pair("$select", ITEM_PROPERTIES);
                if let Some(after) = &query.created_after {
                    pairs.append_pair("$filter", &format!("createdDateTime gt {after}"));
                }
            }
        }
        let call = Call {
            method: Method::GET,
            url: url.clone(),
            json: None,
            action: &action,
            endpoint: Endpoint::Items,
            mailbox_id: Some(mailbox_id),
            held: None,
        };
        let (body, _) = self.graph_call(call, context).await?;
        let page: GraphItemPage = parse_json(&body).map_err(|e| invalid_json(&action, e))?;
        let next = match page.next_link {
            None => None,
            Some(link) => Some(page_token(&url, &link).ok_or_else(|| {
                GraphError::new(
                    &action,
                    ErrorKind::InvalidResponse(
                        "@odata.nextLink points away from this folder's items".into(),
                    ),
                )
            })?),
        };
        Ok(ItemPage {
            items: page.value,
            next,
        })
    }

    /// One item's metadata, from the folder it is in.
    pub async fn item(
        &self,
        mailbox_id: &str,
        folder_id: &str,
        item_id: &str,
        context: &CallContext,
    ) -> Result<ItemSummary, GraphError> {
        let action = format!("reading an item's metadata in {mailbox_id}");
        let mut url = self.items_endpoint(mailbox_id, folder_id, Some(item_id));
        url.query_pairs_mut()
            .append_pair("$select", ITEM_PROPERTIES);
        self.graph_json(
            Method::GET,
            url,
            &action,
            Endpoint::Item,
            Some(mailbox_id),
            context,
        )
        .await
    }

    /// Deletes an item from a folder.
    pub async fn delete_item(
        &self,
        mailbox_id: &str,
        folder_id: &str,
        item_id: &str,
        disposal: Disposal,
        context: &CallContext,
    ) -> Result<(), GraphError> {
        let action = format!("deleting an item of {mailbox_id}");
        let mut url = self.items_endpoint(mailbox_id, folder_id, Some(item_id));
        url.query_pairs_mut()
            .append_pair("disposalType", disposal.graph_value());
        let call = Call {
            method: Method::DELETE,
            url,
            json: None,
            action: &action,
            endpoint: Endpoint::Delete,
            mailbox_id: Some(mailbox_id),
            held: None,
        };
        self.graph_call(call, context).await.map(drop)
    }

    /// `.../mailboxes/{mailbox}/folders/{folder}/items[/{item}]`.
    fn items_endpoint(&self, mailbox_id: &str, folder_id: &str, item_id: Option<&str>) -> Url {
        let mut segments = vec![
            "admin",
            "exchange",
            "mailboxes",
            mailbox_id,
            "folders",
            folder_id,
            "items",
        ];
        segments.extend(item_id);
        self.graph_endpoint(&segments)
    }
}

/// The page token for Graph's `next_link`, which must continue the listing `asked`: same origin, same
/// path, and only the parameters Graph pages with.
fn page_token(asked: &Url, next_link: &str) -> Option<String> {
    let next = Url::parse(next_link).ok()?;
    // Paths are compared decoded: Graph may percent-encode an id's characters differently than we do.
    let decoded = |url: &Url| percent_encoding::percent_decode_str(url.path()).collect::<Vec<u8>>();
    if next.origin() != asked.origin() || decoded(&next) != decoded(asked) {
        return None;
    }
    let pairs: Vec<(String, String)> = next.query_pairs().into_owned().collect();
    if pairs
        .iter()
        .any(|(key, _)| !PAGE_TOKEN_PARAMETERS.contains(&key.as_str()))
    {
        return None;
    }
    let json = serde_json::to_vec(&pairs).expect("pairs of strings serialise");
    Some(URL_SAFE_NO_PAD.encode(json))
}

/// The Graph query parameters a page token carries, if it is one this gateway made.
pub fn decode_page_token(token: &str) -> Result<Vec<(String, String)>, InvalidPageToken> {
    let json = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| InvalidPageToken)?;
    let pairs: Vec<(String, String)> =
        serde_json::from_slice(&json).map_err(|_| InvalidPageToken)?;
    // Unsigned, so whatever a client could change is checked again: only paging parameters, a page no
    // larger than a client may ask for, the properties the gateway asks for, and its own filter.
    let sane = pairs.iter().all(|(key, value)| match key.as_str() {
        "$top" => value
            .parse::<u32>()
            .is_ok_and(|n| (1..=MAX_TOP).contains(&n)),
        "$select" => value == ITEM_PROPERTIES,
        "$filter" => value
            .strip_prefix("createdDateTime gt ")
            .is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok()),
        "$skip" => value.parse::<u64>().is_ok(),
        "$skiptoken" => true,
        _ => false,
    });
    if sane {
        Ok(pairs)
    } else {
        Err(InvalidPageToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_carry_graph_paging_and_nothing_else() {
        let asked = Url::parse(
            "https://graph.example/v1.0/admin/exchange/mailboxes/M/folders/F/items?$top=5",
        )
        .unwrap();
        let token = page_token(
            &asked,
            "https://graph.example/v1.0/admin/exchange/mailboxes/%4D/folders/F/items?$top=5&$skiptoken=abc",
        )
        .unwrap();
        assert_eq!(
            decode_page_token(&token).unwrap(),
            vec![
                ("$top".to_owned(), "5".to_owned()),
                ("$skiptoken".to_owned(), "abc".to_owned())
            ]
        );
        for elsewhere in [
            "https://evil.example/v1.0/admin/exchange/mailboxes/M/folders/F/items?$skiptoken=a",
            "https://graph.example/v1.0/admin/exchange/mailboxes/M/folders/OTHER/items?$skiptoken=a",
            "https://graph.example/v1.0/admin/exchange/mailboxes/M/folders/F/items?$expand=x",
        ] {
            assert_eq!(page_token(&asked, elsewhere), None, "{elsewhere}");
        }
        for forged in [
            r#"[["$expand","attachments"]]"#,
            r#"[["$top","100000"]]"#,
            r#"[["$select","id,body"]]"#,
            r#"[["$filter","true"]]"#,
        ] {
            assert!(
                decode_page_token(&URL_SAFE_NO_PAD.encode(forged)).is_err(),
                "{forged}"
            );
        }
        assert!(decode_page_token("not base64!").is_err());
    }
}
