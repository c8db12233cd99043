//! Charges every document's mutations to the sender's token buckets (see
//! `services::rate_limit`) after it is parsed and before anything runs, and turns RATE_LIMITED
//! errors into a `Retry-After` header.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{ErrorExtensions, Name, Pos, Request, Response, ServerResult, Variables};
use axum::http::{header, HeaderValue};

use super::context::{ClientAddress, RequestAuth};
use super::error::RETRY_AFTER;
use crate::app::AppState;
use crate::services::rate_limit::{MutationCount, Sender};

/// Selections (fields and fragment spreads) looked at in one document; a document that needs
/// more is counted as too many mutations (fragments can fan out exponentially).
const MAX_SELECTIONS: usize = 1_000;

pub struct ChargeMutations;

impl ExtensionFactory for ChargeMutations {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ChargeDocument::default())
    }
}

/// One request's extension: the operation to run is known before the document is parsed.
#[derive(Default)]
struct ChargeDocument {
    operation_name: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Extension for ChargeDocument {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        let retry_after = response
            .errors
            .iter()
            .filter_map(|error| error.extensions.as_ref()?.get(RETRY_AFTER))
            .filter_map(|value| match value {
                async_graphql::Value::Number(secs) => secs.as_u64(),
                _ => None,
            })
            .max();
        if let Some(secs) = retry_after {
            response
                .http_headers
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Ok(mut name) = self.operation_name.lock() {
            name.clone_from(&request.operation_name);
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let operation_name = self
            .operation_name
            .lock()
            .map(|name| name.clone())
            .unwrap_or_default();
        let mutations = count_mutations(&document, operation_name.as_deref());
        let sender = Sender {
            address: ctx.data_opt::<ClientAddress>().map(|client| client.0),
            user_id: match ctx.data_opt::<RequestAuth>() {
                Some(RequestAuth::Viewer { viewer, .. }) => Some(viewer.user_id),
                _ => None,
            },
        };
        // Only the schema printed for `print-schema` has no state; it runs nothing.
        let Some(state) = ctx.data_opt::<AppState>() else {
            return Ok(document);
        };
        state
            .rate_limits
            .charge(sender, mutations)
            .map_err(|err| err.extend().into_server_error(Pos::default()))?;
        Ok(document)
    }
}

/// The mutation fields the chosen operation would run, through fragments, counting fields that
/// `@skip`/`@include` might leave out (the cautious side). No mutation operation: zero.
fn count_mutations(document: &ExecutableDocument, operation_name: Option<&str>) -> MutationCount {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(&Name::new(name)),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        // Left to the executor, which reports the ambiguity.
        _ => None,
    };
    let mut count = MutationCount::default();
    if let Some(operation) = operation.filter(|op| op.node.ty == OperationType::Mutation) {
        let mut budget = MAX_SELECTIONS;
        if !count_fields(
            document,
            &operation.node.selection_set.node,
            &mut count,
            &mut budget,
        ) {
            count.total = u32::MAX;
        }
    }
    count
}

/// `false` when the budget ran out (cyclic or exploding fragments).
fn count_fields(
    document: &ExecutableDocument,
    selections: &SelectionSet,
    count: &mut MutationCount,
    budget: &mut usize,
) -> bool {
    for selection in &selections.items {
        let Some(left) = budget.checked_sub(1) else {
            return false;
        };
        *budget = left;
        let ok = match &selection.node {
            Selection::Field(field) => {
                count.total += 1;
                match field.node.name.node.as_str() {
                    "signUp" => count.sign_ups += 1,
                    "signIn" => count.sign_ins += 1,
                    _ => {}
                }
                true
            }
            Selection::InlineFragment(fragment) => {
                count_fields(document, &fragment.node.selection_set.node, count, budget)
            }
            Selection::FragmentSpread(spread) => {
                match document.fragments.get(&spread.node.fragment_name.node) {
                    Some(fragment) => {
                        count_fields(document, &fragment.node.selection_set.node, count, budget)
                    }
                    // Unknown fragment: validation refuses the document.
                    None => true,
                }
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(query: &str, operation: Option<&str>) -> MutationCount {
        count_mutations(
            &async_graphql::parser::parse_query(query).unwrap(),
            operation,
        )
    }

    #[test]
    fn counts_aliases_and_fragments() {
        let counted = count(
            "mutation { a: signUp(email: \"a\", password: \"b\") { token } ...F ... on Mutation { renameProject(id: \"1\", name: \"n\") { id } } }
             fragment F on Mutation { b: signIn(email: \"a\", password: \"b\") { token } }",
            None,
        );
        assert_eq!(
            counted,
            MutationCount {
                total: 3,
                sign_ups: 1,
                sign_ins: 1
            }
        );
    }

    #[test]
    fn queries_and_other_operations_cost_nothing() {
        assert_eq!(count("{ me { id } }", None), MutationCount::default());
        let document =
            "query Q { me { id } } mutation M { signUp(email: \"a\", password: \"b\") { token } }";
        assert_eq!(count(document, Some("Q")).total, 0);
        assert_eq!(count(document, Some("M")).sign_ups, 1);
    }

    #[test]
    fn cyclic_fragments_count_as_too_many() {
        let counted = count(
            "mutation { ...A } fragment A on Mutation { signUp(email: \"a\", password: \"b\") { token } ...A }",
            None,
        );
        assert_eq!(counted.total, u32::MAX);
    }
}
