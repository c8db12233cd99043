//! The GraphQL adapter: schema, context, per-domain roots, loaders, error mapping.

pub mod context;
pub mod error;
pub mod http;
pub mod limits;
pub mod loaders;
pub mod lookahead;
pub mod mutation;
pub mod query;
pub mod rate_limit;
pub mod sse;
pub mod subscription;
pub mod types;
pub mod ws;

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Schema, SchemaBuilder, ServerError, ServerResult, ValidationResult, Variables,
};

use crate::app::AppState;

/// A *request error* in the GraphQL spec's sense (parse, validation, unknown operation, variable
/// coercion): no data at all and only errors without a `path`. Field errors always carry a path.
pub(crate) fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

pub type AppSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

fn builder() -> SchemaBuilder<query::Query, mutation::Mutation, subscription::Subscription> {
    Schema::build(
        query::Query::default(),
        mutation::Mutation::default(),
        subscription::Subscription,
    )
    .extension(ErrorCodes)
    .extension(rate_limit::ChargeMutations)
}

pub fn build_schema(state: AppState) -> AppSchema {
    let config = &state.config;
    builder()
        .limit_complexity(config.graphql_max_complexity)
        .limit_depth(config.graphql_max_depth)
        .extension(limits::FieldLimit {
            max: config.graphql_max_fields,
        })
        .data(state)
        .finish()
}

/// The SDL that `codekraft print-schema` writes to `schema.graphql`.
pub fn schema_sdl() -> String {
    builder().finish().sdl()
}

/// Gives syntax and validation errors (complexity and depth refusals included) their codes.
struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|err| error::with_default_code(err, "GRAPHQL_PARSE_FAILED"))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|err| {
                    let code = limits::limit_code(&err).unwrap_or("GRAPHQL_VALIDATION_FAILED");
                    error::with_default_code(err, code)
                })
                .collect()
        })
    }
}
