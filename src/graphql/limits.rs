//! What one GraphQL document may cost before it runs: complexity and depth (async-graphql's
//! own limits, given codes here), the number of fields, and the cost of list and heavy fields.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Positioned, ServerError, ServerResult, Variables};

use crate::services::page::{DEFAULT_PAGE, MAX_PAGE};

pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
pub const QUERY_TOO_DEEP: &str = "QUERY_TOO_DEEP";
pub const TOO_MANY_FIELDS: &str = "TOO_MANY_FIELDS";

/// Cost of `Fragment.files`: every file of the project.
pub const FILES_COST: usize = 20;
/// Cost of `Fragment.fileList`: a row per file, no contents.
pub const FILE_LIST_COST: usize = 5;
/// Cost of `Fragment.file`: one file's content.
pub const FILE_COST: usize = 2;
/// Cost of `Fragment.diff`: the files of two versions, compared.
pub const DIFF_COST: usize = 2 * FILES_COST;
/// Cost of one model response of `Run.transcript`.
pub const TRANSCRIPT_RESPONSE_COST: usize = 5;

/// Cost of a cursor-paginated list: its page size times its selection.
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    list_cost(
        first.unwrap_or(DEFAULT_PAGE as i32),
        MAX_PAGE as i32,
        child_complexity,
    )
}

/// Cost of a page of `Run.transcript`, whose default page is the largest.
pub fn transcript_cost(first: Option<i32>) -> usize {
    list_cost(
        first.unwrap_or(MAX_PAGE as i32),
        MAX_PAGE as i32,
        TRANSCRIPT_RESPONSE_COST,
    )
}

/// Cost of a list of `size` items of cost `each`. A size outside 0..=`max` is refused by the
/// resolver; here it only must not overflow.
pub fn list_cost(size: i32, max: i32, each: usize) -> usize {
    (size.clamp(0, max) as usize).saturating_mul(each)
}

/// The code of async-graphql's own complexity and depth refusals, which carry only a message.
pub fn limit_code(error: &ServerError) -> Option<&'static str> {
    match error.message.as_str() {
        "Query is too complex." => Some(QUERY_TOO_COMPLEX),
        "Query is nested too deep." => Some(QUERY_TOO_DEEP),
        _ => None,
    }
}

/// Refuses a document with more than `max` fields before validation, so that a thousand aliases
/// of one field never run (nor get validated one by one).
pub struct FieldLimit {
    pub max: usize,
}

impl ExtensionFactory for FieldLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(FieldLimit { max: self.max })
    }
}

#[async_trait::async_trait]
impl Extension for FieldLimit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if exceeds_field_count(&document, self.max) {
            let mut error =
                ServerError::new(format!("the query has more than {} fields", self.max), None);
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", TOO_MANY_FIELDS);
            return Err(error);
        }
        Ok(document)
    }
}

/// Whether the document selects more than `max` fields, fragments counted each time they are
/// spread. Stops counting past `max`, so a fragment spread exponentially often costs nothing;
/// the parser has already bounded the nesting (async-graphql's recursive depth limit), which
/// also ends fragment cycles.
fn exceeds_field_count(document: &ExecutableDocument, max: usize) -> bool {
    let mut count = 0;
    document.operations.iter().any(|(_, operation)| {
        count_fields(document, &operation.node.selection_set, &mut count, max)
    })
}

/// Adds the fields of `selection_set` to `count`; true as soon as it passes `max`.
fn count_fields(
    document: &ExecutableDocument,
    selection_set: &Positioned<SelectionSet>,
    count: &mut usize,
    max: usize,
) -> bool {
    selection_set
        .node
        .items
        .iter()
        .any(|selection| match &selection.node {
            Selection::Field(field) => {
                *count += 1;
                *count > max || count_fields(document, &field.node.selection_set, count, max)
            }
            Selection::FragmentSpread(spread) => document
                .fragments
                .get(&spread.node.fragment_name.node)
                .is_some_and(|fragment| {
                    count_fields(document, &fragment.node.selection_set, count, max)
                }),
            Selection::InlineFragment(inline) => {
                count_fields(document, &inline.node.selection_set, count, max)
            }
        })
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn exceeds(query: &str, max: usize) -> bool {
        exceeds_field_count(&parse_query(query).unwrap(), max)
    }

    #[test]
    fn fields_are_counted_with_aliases_and_spread_fragments() {
        assert!(!exceeds("{ a: usage { plan } b: usage { plan } }", 4));
        assert!(exceeds("{ a: usage { plan } b: usage { plan } }", 3));
        let spread_twice =
            "query { ...F ... on Query { ...F } } fragment F on Query { usage { plan } }";
        assert!(!exceeds(spread_twice, 4));
        assert!(exceeds(spread_twice, 3));
    }

    #[test]
    fn exponential_fragments_stop_at_the_limit() {
        let mut query = String::from("query { ...F0 }");
        for level in 0..30 {
            let next = level + 1;
            query.push_str(&format!(
                " fragment F{level} on Query {{ ...F{next} ... on Query {{ ...F{next} }} }}"
            ));
        }
        query.push_str(" fragment F30 on Query { usage { plan } }");
        assert!(exceeds(&query, 1_000));
    }

    #[test]
    fn page_cost_is_bounded() {
        assert_eq!(page_cost(None, 3), DEFAULT_PAGE as usize * 3);
        assert_eq!(page_cost(Some(-5), 3), 0);
        assert_eq!(page_cost(Some(i32::MAX), 3), MAX_PAGE as usize * 3);
        assert_eq!(page_cost(Some(10), usize::MAX), usize::MAX);
        assert_eq!(list_cost(5_000, 1_000, 2), 2_000);
        assert_eq!(
            transcript_cost(None),
            MAX_PAGE as usize * TRANSCRIPT_RESPONSE_COST
        );
    }
}
