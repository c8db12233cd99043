use std::sync::Arc;

use async_graphql::{Context, Subscription, ID};
use futures_util::{Stream, StreamExt};

use super::context::ContextExt;
use super::error::GqlResult;
use super::types::{parse_id, RunEvent};
use crate::error::AppError;
use crate::events::{event_stream, EventFilter, EventKind, StoredEvent};
use crate::services::access::Permission;
use crate::services::{project, run};

#[derive(Default)]
pub struct Subscription;

fn to_graphql(item: Result<Arc<StoredEvent>, sea_orm::DbErr>) -> async_graphql::Result<RunEvent> {
    item.map(RunEvent::from).map_err(AppError::from).gql()
}

#[Subscription]
impl Subscription {
    /// Every event of the project after `after` (its stored history first), then live ones.
    /// Stays open.
    async fn project_events(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<RunEvent>>> {
        let viewer = ctx.viewer(Permission::Read)?;
        let state = ctx.state();
        let project_id = parse_id(&project_id, "project").gql()?;
        project::find_project(&state.db, viewer, project_id)
            .await
            .gql()?;
        let filter = EventFilter {
            project_id,
            run_id: None,
            after: after.unwrap_or(0),
        };
        Ok(event_stream(state.db.clone(), state.events.clone(), filter).map(to_graphql))
    }

    /// The events of one run after `after`; completes after the run's RUN_FINISHED event.
    async fn run_events(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<RunEvent>>> {
        let viewer = ctx.viewer(Permission::Read)?;
        let state = ctx.state();
        let run_id = parse_id(&run_id, "run").gql()?;
        let found = run::find_run(&state.db, viewer, run_id).await.gql()?;
        let after = after.unwrap_or(0);
        let already_over = found.status.is_finished()
            && run::finished_event_seq(&state.db, run_id)
                .await
                .gql()?
                .is_some_and(|seq| seq <= after);
        let filter = EventFilter {
            project_id: found.project_id,
            run_id: Some(run_id),
            after,
        };
        let events = event_stream(state.db.clone(), state.events.clone(), filter).boxed();
        // Yield up to and including RUN_FINISHED, then end without waiting for more.
        let events =
            futures_util::stream::unfold((events, already_over), |(mut events, over)| async move {
                if over {
                    return None;
                }
                let item = events.next().await?;
                let finished =
                    matches!(&item, Ok(event) if event.row.kind == EventKind::RunFinished.as_str());
                Some((item, (events, finished)))
            });
        Ok(events.map(to_graphql))
    }
}
