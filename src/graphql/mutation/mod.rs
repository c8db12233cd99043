mod api_key;
mod webhook;

use async_graphql::{Context, MergedObject, Object, SimpleObject, ID};

use super::context::ContextExt;
use super::error::GqlResult;
use super::types::{parse_id, to_id, AuthPayload, Message, Project, Run};
use crate::error::AppError;
use crate::services::access::{Credential, Permission};
use crate::services::sandbox_access::ensure_sandbox_access;
use crate::services::{fork, fragment, message, project, run, sandbox, session, user};

// Every mutation, merged from the per-domain roots.
#[derive(MergedObject, Default)]
pub struct Mutation(
    AccountAndBuildMutation,
    api_key::ApiKeyMutation,
    webhook::WebhookMutation,
);

/// Accounts, projects and their builds.
#[derive(Default)]
pub struct AccountAndBuildMutation;

#[derive(SimpleObject)]
pub struct GenerationPayload {
    pub project: Project,
    /// The stored USER message.
    pub message: Message,
    /// The queued run that will answer it.
    pub run: Run,
}

#[derive(SimpleObject)]
pub struct DeleteProjectPayload {
    pub id: ID,
}

/// A live preview of a project.
#[derive(SimpleObject)]
pub struct Preview {
    pub sandbox_id: String,
    pub url: String,
}

/// Signs `user` in: a new session and a token of it.
async fn auth_payload(
    ctx: &Context<'_>,
    user: crate::entity::user::Model,
) -> async_graphql::Result<AuthPayload> {
    let state = ctx.state();
    let lifetime = std::time::Duration::from_secs(state.config.auth_token_ttl_secs);
    let created = session::create_session(&state.db, user.id, lifetime)
        .await
        .gql()?;
    let token = state
        .auth
        .issue_token(&user.auth_subject, &created.id.to_string())
        .map_err(AppError::internal)
        .gql()?;
    Ok(AuthPayload {
        token,
        user: user.into(),
    })
}

#[Object]
impl AccountAndBuildMutation {
    /// Creates a built-in account (argon2id-hashed password) and signs it in.
    async fn sign_up(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let state = ctx.state();
        let created = user::sign_up(&state.db, &state.password_hashing, &email, &password)
            .await
            .gql()?;
        auth_payload(ctx, created).await
    }

    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let state = ctx.state();
        let found = user::sign_in(
            &state.db,
            &state.sign_in_limiter,
            &state.password_hashing,
            &email,
            &password,
        )
        .await
        .gql()?;
        auth_payload(ctx, found).await
    }

    /// Ends the session of the token this request carries: the token is refused from now on and
    /// its WebSockets and SSE streams close. False for tokens we cannot revoke: those of the
    /// external identity provider (sign out there) and built-in ones minted without a session.
    /// API keys are refused (see `revokeApiKey`).
    async fn sign_out(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer(Permission::Account)?;
        let Some(Credential::Session(session_id)) = ctx.credential() else {
            return Ok(false);
        };
        let state = ctx.state();
        session::revoke_session(&state.db, viewer.user_id, session_id)
            .await
            .gql()?;
        state.sockets.end(Credential::Session(session_id));
        Ok(true)
    }

    /// Starts a project from a prompt: stores it with its first message, takes a credit and
    /// queues a generation.
    async fn create_project(
        &self,
        ctx: &Context<'_>,
        prompt: String,
    ) -> async_graphql::Result<GenerationPayload> {
        let viewer = ctx.viewer(Permission::Generate)?;
        let state = ctx.state();
        ensure_sandbox_access(&state.db, &state.sandboxes.isolation(), viewer)
            .await
            .gql()?;
        let (project, generation) = project::create_project(
            &state.db,
            state.bus.as_ref(),
            viewer,
            &prompt,
            run::RunLimits::from_config(&state.config),
        )
        .await
        .gql()?;
        Ok(GenerationPayload {
            project: project.into(),
            message: generation.message.into(),
            run: generation.run.into(),
        })
    }

    /// A follow-up: the agent builds on the project's current files.
    async fn send_message(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        content: String,
    ) -> async_graphql::Result<GenerationPayload> {
        let viewer = ctx.viewer(Permission::Generate)?;
        let state = ctx.state();
        ensure_sandbox_access(&state.db, &state.sandboxes.isolation(), viewer)
            .await
            .gql()?;
        let project_id = parse_id(&project_id, "project").gql()?;
        let (project, generation) = message::send_message(
            &state.db,
            state.bus.as_ref(),
            viewer,
            project_id,
            &content,
            run::RunLimits::from_config(&state.config),
        )
        .await
        .gql()?;
        Ok(GenerationPayload {
            project: project.into(),
            message: generation.message.into(),
            run: generation.run.into(),
        })
    }

    async fn rename_project(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: String,
    ) -> async_graphql::Result<Project> {
        let viewer = ctx.viewer(Permission::Account)?;
        let id = parse_id(&id, "project").gql()?;
        Ok(project::rename_project(&ctx.state().db, viewer, id, &name)
            .await
            .gql()?
            .into())
    }

    /// Deletes the project with its messages, fragments and runs.
    async fn delete_project(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<DeleteProjectPayload> {
        let viewer = ctx.viewer(Permission::Account)?;
        let state = ctx.state();
        let id = parse_id(&id, "project").gql()?;
        let deleted = project::delete_project(
            &state.db,
            state.bus.as_ref(),
            state.sandboxes.as_ref(),
            viewer,
            id,
        )
        .await
        .gql()?;
        Ok(DeleteProjectPayload {
            id: to_id(deleted.id),
        })
    }

    /// A live preview URL: reconnects the project's sandbox, or rebuilds it from the latest
    /// version's files when it timed out. Free.
    async fn open_preview(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
    ) -> async_graphql::Result<Preview> {
        let viewer = ctx.viewer(Permission::Generate)?;
        let state = ctx.state();
        ensure_sandbox_access(&state.db, &state.sandboxes.isolation(), viewer)
            .await
            .gql()?;
        let project_id = parse_id(&project_id, "project").gql()?;
        let (sandbox_id, url) =
            sandbox::open_preview(&state.db, &state.sandboxes, viewer, project_id)
                .await
                .gql()?;
        Ok(Preview { sandbox_id, url })
    }

    /// Undo: makes an earlier version (fragment) the newest again, in the sandbox too. Free.
    async fn restore_fragment(
        &self,
        ctx: &Context<'_>,
        fragment_id: ID,
    ) -> async_graphql::Result<Message> {
        let viewer = ctx.viewer(Permission::Generate)?;
        let state = ctx.state();
        ensure_sandbox_access(&state.db, &state.sandboxes.isolation(), viewer)
            .await
            .gql()?;
        let fragment_id = parse_id(&fragment_id, "fragment").gql()?;
        Ok(sandbox::restore_fragment(
            &state.db,
            state.bus.as_ref(),
            &state.sandboxes,
            viewer,
            fragment_id,
        )
        .await
        .gql()?
        .into())
    }

    /// Deletes a draft version (what a cancelled or failed run wrote). Returns its id.
    async fn discard_draft(&self, ctx: &Context<'_>, fragment_id: ID) -> async_graphql::Result<ID> {
        let viewer = ctx.viewer(Permission::Generate)?;
        let state = ctx.state();
        let fragment_id = parse_id(&fragment_id, "fragment").gql()?;
        fragment::discard_draft(&state.db, state.bus.as_ref(), viewer, fragment_id)
            .await
            .gql()?;
        Ok(to_id(fragment_id))
    }

    /// Starts a new project from any version of the viewer's: its files are the new project's
    /// first version, in a fresh sandbox. Free. `name` defaults to the source's with `-fork`.
    async fn fork_project(
        &self,
        ctx: &Context<'_>,
        fragment_id: ID,
        name: Option<String>,
    ) -> async_graphql::Result<Project> {
        let viewer = ctx.viewer(Permission::Generate)?;
        let state = ctx.state();
        ensure_sandbox_access(&state.db, &state.sandboxes.isolation(), viewer)
            .await
            .gql()?;
        let fragment_id = parse_id(&fragment_id, "fragment").gql()?;
        Ok(fork::fork_project(
            &state.db,
            state.bus.as_ref(),
            &state.sandboxes,
            viewer,
            fragment_id,
            name.as_deref(),
        )
        .await
        .gql()?
        .into())
    }

    /// Stops a queued or running generation; it keeps its credit.
    async fn cancel_run(&self, ctx: &Context<'_>, run_id: ID) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer(Permission::Generate)?;
        let state = ctx.state();
        let run_id = parse_id(&run_id, "run").gql()?;
        Ok(
            run::cancel_run(&state.db, state.bus.as_ref(), viewer, run_id)
                .await
                .gql()?
                .into(),
        )
    }

    /// Queues a failed generation again, behind the runs already queued. Takes a credit.
    async fn retry_run(&self, ctx: &Context<'_>, run_id: ID) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer(Permission::Generate)?;
        let state = ctx.state();
        ensure_sandbox_access(&state.db, &state.sandboxes.isolation(), viewer)
            .await
            .gql()?;
        let run_id = parse_id(&run_id, "run").gql()?;
        Ok(run::retry_run(
            &state.db,
            state.bus.as_ref(),
            viewer,
            run_id,
            run::RunLimits::from_config(&state.config),
        )
        .await
        .gql()?
        .into())
    }
}
