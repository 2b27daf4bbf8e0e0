//! Reads the OData query options of the simulator's listings (`$top`, `$skiptoken`, `$select`,
//! `$filter`) and makes and reads their skiptokens.
//!
//! Each listing is described by a [`Listing`]: the properties its entries have, its largest `$top`,
//! and the date properties its `$filter` may compare. The simulator understands a small part of OData
//! and refuses the rest with `400`, so that a client never silently gets unfiltered results.

use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::graph::{GraphContext, GraphError};

/// What one listing accepts.
pub(crate) struct Listing {
    /// What its skiptokens start with, so that one listing's token is refused by another.
    pub kind: &'static str,
    /// The entity type named in errors.
    pub type_name: &'static str,
    /// The only names `$select` accepts.
    pub properties: &'static [&'static str],
    /// The largest `$top`.
    pub max_top: usize,
    /// The date properties `$filter` may compare; empty when `$filter` is refused.
    pub filterable: &'static [&'static str],
}

/// The folder listings (`.../folders`, `.../childFolders`): Graph's `mailboxFolder`.
pub(crate) const FOLDERS: Listing = Listing {
    kind: "folders",
    type_name: "microsoft.graph.mailboxFolder",
    properties: &[
        "id",
        "displayName",
        "parentFolderId",
        "parentMailboxUrl",
        "childFolderCount",
        "totalItemCount",
        "type",
        "wellKnownName",
    ],
    max_top: 999,
    filterable: &[],
};

/// A folder's items (`.../folders/{folderId}/items`): Graph's `mailboxItem`. The largest `$top` is
/// 1000, Outlook's usual ceiling for a page.
pub(crate) const ITEMS: Listing = Listing {
    kind: "items",
    type_name: "microsoft.graph.mailboxItem",
    properties: &[
        "id",
        "changeKey",
        "type",
        "size",
        "createdDateTime",
        "lastModifiedDateTime",
        "categories",
    ],
    max_top: 1000,
    filterable: &["createdDateTime", "lastModifiedDateTime"],
};

/// The query options of one request.
pub(crate) struct ListOptions {
    pub top: Option<usize>,
    /// What the `$skiptoken` holds: an offset for folders, the `seq` of the last item served for
    /// items; 0 without one.
    pub skip: u64,
    pub select: Option<Vec<String>>,
    /// `$filter`: every comparison must hold (they are joined by `and`).
    pub filter: Vec<Comparison>,
    /// The `$filter` as sent, for next links.
    pub filter_text: Option<String>,
}

/// `{property} {operator} {date}` of a `$filter`.
#[derive(Debug, PartialEq)]
pub(crate) struct Comparison {
    pub property: &'static str,
    pub operator: Operator,
    pub value: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operator {
    Ge,
    Gt,
    Le,
    Lt,
}

impl Comparison {
    /// Whether `date`, the value of this comparison's property, satisfies it.
    pub fn holds(&self, date: DateTime<Utc>) -> bool {
        match self.operator {
            Operator::Ge => date >= self.value,
            Operator::Gt => date > self.value,
            Operator::Le => date <= self.value,
            Operator::Lt => date < self.value,
        }
    }
}

impl ListOptions {
    /// Reads the options of a listing. Parameters without `$` are not OData system query options;
    /// Graph ignores them, and so does this.
    pub fn parse(
        context: &GraphContext,
        query: &str,
        listing: &Listing,
    ) -> Result<ListOptions, GraphError> {
        Self::parse_as(context, query, listing, false)
    }

    /// Reads the options of a request for one entity, which take `$select` only.
    pub fn parse_entity(
        context: &GraphContext,
        query: &str,
        listing: &Listing,
    ) -> Result<ListOptions, GraphError> {
        Self::parse_as(context, query, listing, true)
    }

    fn parse_as(
        context: &GraphContext,
        query: &str,
        listing: &Listing,
        entity: bool,
    ) -> Result<ListOptions, GraphError> {
        let bad = |message: String| context.error(StatusCode::BAD_REQUEST, "BadRequest", message);
        let mut options = ListOptions {
            top: None,
            skip: 0,
            select: None,
            filter: Vec::new(),
            filter_text: None,
        };
        let mut seen = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if !name.starts_with('$') {
                continue;
            }
            if seen.contains(&name) {
                return Err(bad(format!("Query option '{name}' was specified more than once, but it must be specified at most once.")));
            }
            seen.push(name.clone());
            match name.as_ref() {
                "$select" => {
                    let names: Vec<String> =
                        value.split(',').map(|n| n.trim().to_owned()).collect();
                    if let Some(unknown) = names
                        .iter()
                        .find(|n| !listing.properties.contains(&n.as_str()))
                    {
                        return Err(bad(format!(
                            "Could not find a property named '{unknown}' on type '{}'.",
                            listing.type_name
                        )));
                    }
                    options.select = Some(names);
                }
                _ if entity => {
                    return Err(bad(format!(
                        "Query option '{name}' is not allowed on a single '{}'; only $select is.",
                        listing.type_name
                    )))
                }
                "$top" => {
                    let max = listing.max_top;
                    let top = value
                        .parse::<usize>()
                        .ok()
                        .filter(|top| (1..=max).contains(top))
                        .ok_or_else(|| {
                            bad(format!(
                                "Invalid value '{value}' for query option '$top': expected an integer from 1 to {max}."
                            ))
                        })?;
                    options.top = Some(top);
                }
                "$skiptoken" => {
                    options.skip = decode_skiptoken(&value, listing.kind)
                        .ok_or_else(|| bad_skiptoken(context))?;
                }
                "$filter" if !listing.filterable.is_empty() => {
                    options.filter = parse_filter(&value, listing).map_err(|message| {
                        context.error(
                            StatusCode::BAD_REQUEST,
                            "ErrorInvalidUrlQueryFilter",
                            message,
                        )
                    })?;
                    options.filter_text = Some(value.into_owned());
                }
                // $orderby, $count, $expand, ... exist on the real service but are not simulated;
                // refusing them keeps a client from silently getting results it did not ask for.
                _ => {
                    return Err(bad(format!(
                        "Query option '{name}' is not supported by the simulator."
                    )))
                }
            }
        }
        Ok(options)
    }

    /// Applies `$select`; `id` and OData annotations (`@odata.etag`) are always returned, as Graph
    /// does for Outlook entities.
    pub fn select(&self, entity: Value) -> Value {
        let (Some(names), Value::Object(mut fields)) = (&self.select, entity.clone()) else {
            return entity;
        };
        fields.retain(|key, _| {
            key == "id" || key.starts_with("@odata.") || names.iter().any(|n| n == key)
        });
        Value::Object(fields)
    }

    /// The query of the next page's link: `$top`, the new skiptoken, and `$select` and `$filter`
    /// repeated, as Graph's next links repeat the query.
    pub fn next_query(&self, listing: &Listing, page_size: usize, skip: u64) -> String {
        let mut next = format!(
            "$top={page_size}&$skiptoken={}",
            URL_SAFE_NO_PAD.encode(format!("{}:{skip}", listing.kind))
        );
        if let Some(select) = &self.select {
            next.push_str(&format!("&$select={}", select.join(",")));
        }
        if let Some(filter) = &self.filter_text {
            let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
            next.push_str(&format!("&$filter={encoded}"));
        }
        next
    }
}

/// Reads `property op date [and property op date ...]`, the only `$filter`s the simulator
/// understands. Dates are RFC 3339 literals, unquoted as OData writes them; operators and `and` are
/// lower case, as OData 4.0 spells them.
fn parse_filter(filter: &str, listing: &Listing) -> Result<Vec<Comparison>, String> {
    let supported = || {
        format!(
            "The simulator understands only $filter=<property> <ge|gt|le|lt> <RFC 3339 date>, joined by 'and', on {}; got '{filter}'.",
            listing.filterable.join(" or ")
        )
    };
    let words: Vec<&str> = filter.split_whitespace().collect();
    let mut comparisons = Vec::new();
    for clause in words.split(|word| *word == "and") {
        let [property, operator, value] = clause else {
            return Err(supported());
        };
        let property = listing
            .filterable
            .iter()
            .find(|known| *known == property)
            .ok_or_else(|| {
                format!(
                    "The simulator cannot filter on '{property}'. {}",
                    supported()
                )
            })?;
        let operator = match *operator {
            "ge" => Operator::Ge,
            "gt" => Operator::Gt,
            "le" => Operator::Le,
            "lt" => Operator::Lt,
            _ => return Err(supported()),
        };
        let value = DateTime::parse_from_rfc3339(value)
            .map_err(|_| format!("'{value}' is not an RFC 3339 date. {}", supported()))?
            .with_timezone(&Utc);
        comparisons.push(Comparison {
            property,
            operator,
            value,
        });
    }
    Ok(comparisons)
}

fn decode_skiptoken(token: &str, kind: &str) -> Option<u64> {
    let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    decoded.strip_prefix(kind)?.strip_prefix(':')?.parse().ok()
}

/// The answer to a skiptoken the simulator did not write, or wrote for another listing.
pub(crate) fn bad_skiptoken(context: &GraphContext) -> GraphError {
    context.error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "The $skiptoken is not valid. Follow @odata.nextLink as returned.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiptokens_round_trip_and_reject_garbage_and_other_listings() {
        let token = URL_SAFE_NO_PAD.encode("folders:20");
        assert_eq!(decode_skiptoken(&token, "folders"), Some(20));
        assert_eq!(decode_skiptoken(&token, "items"), None);
        assert_eq!(decode_skiptoken("not-a-token", "folders"), None);
    }

    #[test]
    fn date_filters_joined_by_and_are_read_and_hold_as_their_operators_say() {
        let filter = parse_filter(
            "createdDateTime ge 2026-01-01T00:00:00Z and lastModifiedDateTime lt 2026-02-01T00:00:00.5+01:00",
            &ITEMS,
        )
        .unwrap();
        assert_eq!(filter.len(), 2);
        assert_eq!(filter[0].property, "createdDateTime");
        assert_eq!(filter[0].operator, Operator::Ge);
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(filter[0].holds(start));
        assert_eq!(filter[1].operator, Operator::Lt);
        assert_eq!(
            filter[1].value,
            "2026-01-31T23:00:00.5Z".parse::<DateTime<Utc>>().unwrap()
        );
        let gt = parse_filter("createdDateTime gt 2026-01-01T00:00:00Z", &ITEMS).unwrap();
        assert!(!gt[0].holds(start));
    }

    #[test]
    fn other_filters_are_refused() {
        for filter in [
            "",
            "createdDateTime eq 2026-01-01T00:00:00Z",
            "createdDateTime GE 2026-01-01T00:00:00Z",
            "size gt 10",
            "createdDateTime ge 2026-01-01",
            "createdDateTime ge '2026-01-01T00:00:00Z'",
            "createdDateTime ge 2026-01-01T00:00:00Z or createdDateTime lt 2027-01-01T00:00:00Z",
            "createdDateTime ge 2026-01-01T00:00:00Z and",
            "contains(subject, 'x')",
        ] {
            assert!(parse_filter(filter, &ITEMS).is_err(), "{filter:?}");
        }
    }
}
