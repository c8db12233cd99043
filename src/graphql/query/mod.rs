mod api_key;
mod webhook;

use async_graphql::connection::Connection;
use async_graphql::{Context, MergedObject, Object, SimpleObject, ID};

use super::context::ContextExt;
use super::error::GqlResult;
use super::limits;
use super::types::project::project_page;
use super::types::{parse_id, Fragment, Project, Run, Usage, User};
use crate::sandbox::SandboxIsolation;
use crate::services::access::Permission;
use crate::services::page::PageRequest;
use crate::services::{credits, fragment, project, run, user};

// Every query, merged from the per-domain roots.
#[derive(MergedObject, Default)]
pub struct Query(
    AccountAndBuildQuery,
    api_key::ApiKeyQuery,
    webhook::WebhookQuery,
);

/// Accounts, projects and their builds.
#[derive(Default)]
pub struct AccountAndBuildQuery;

/// What this server runs on, for the UI (e.g. to say that the model is offline).
#[derive(SimpleObject)]
pub struct ServerInfo {
    pub model_provider: String,
    pub model: String,
    /// No model is configured: generations come from the deterministic offline provider.
    pub model_offline: bool,
    pub sandbox_provider: String,
    /// Whether sandboxes are isolated; without isolation only the first account may use them.
    pub sandbox_isolation: SandboxIsolationKind,
    /// Why sandboxes are not isolated, when they are not.
    pub sandbox_isolation_problem: Option<String>,
}

#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
pub enum SandboxIsolationKind {
    /// Any number of accounts.
    Isolated,
    /// Generated code runs as the server's user: the first account only.
    SingleAccount,
}

#[Object]
impl AccountAndBuildQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let viewer = ctx.viewer(Permission::Read)?;
        Ok(user::find_user(&ctx.state().db, viewer.user_id)
            .await
            .gql()?
            .into())
    }

    /// Credits left in the current window.
    async fn usage(&self, ctx: &Context<'_>) -> async_graphql::Result<Usage> {
        let viewer = ctx.viewer(Permission::Read)?;
        Ok(credits::usage_summary(
            &ctx.state().db,
            viewer.user_id,
            viewer.plan,
            ctx.state().config.user_max_spend_usd_per_window,
        )
        .await
        .gql()?
        .into())
    }

    /// The viewer's projects, newest first.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn projects(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Project>> {
        let viewer = ctx.viewer(Permission::Read)?;
        let request = PageRequest::parse(first, after.as_deref()).gql()?;
        let page = project::list_projects(&ctx.state().db, viewer, request)
            .await
            .gql()?;
        project_page(ctx, page, request.after.is_some()).await
    }

    async fn project(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Project> {
        let viewer = ctx.viewer(Permission::Read)?;
        let id = parse_id(&id, "project").gql()?;
        Ok(project::find_project(&ctx.state().db, viewer, id)
            .await
            .gql()?
            .into())
    }

    async fn fragment(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Fragment> {
        let viewer = ctx.viewer(Permission::Read)?;
        let id = parse_id(&id, "fragment").gql()?;
        Ok(fragment::find_fragment(&ctx.state().db, viewer, id)
            .await
            .gql()?
            .into())
    }

    async fn run(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer(Permission::Read)?;
        let id = parse_id(&id, "run").gql()?;
        Ok(run::find_run(&ctx.state().db, viewer, id)
            .await
            .gql()?
            .into())
    }

    async fn server_info(&self, ctx: &Context<'_>) -> ServerInfo {
        let state = ctx.state();
        let (sandbox_isolation, sandbox_isolation_problem) = match state.sandboxes.isolation() {
            SandboxIsolation::Isolated => (SandboxIsolationKind::Isolated, None),
            SandboxIsolation::SingleAccount { reason } => {
                (SandboxIsolationKind::SingleAccount, Some(reason))
            }
        };
        ServerInfo {
            model_provider: state.models.name().to_owned(),
            model: state.models.model().to_owned(),
            model_offline: state.models.is_offline(),
            sandbox_provider: state.sandboxes.kind().to_owned(),
            sandbox_isolation,
            sandbox_isolation_problem,
        }
    }
}
