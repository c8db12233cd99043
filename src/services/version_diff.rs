//! What changed between two versions of a project: per file, ADDED, REMOVED or CHANGED with a
//! unified diff.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sea_orm::ConnectionTrait;
use similar::TextDiff;
use uuid::Uuid;

use super::fragment::{files_by_fragment, owned_fragment_ids};
use crate::error::{AppError, AppResult};
use crate::sandbox::FileMap;

/// The longest patch returned for one file; a longer one is cut with [`TRUNCATED_MARKER`].
pub const MAX_PATCH_BYTES: usize = 64 * 1024;
/// Ends a cut patch (followed by the patch's full size).
pub const TRUNCATED_MARKER: &str = "\\ patch truncated by CodeKraft:";
/// Longest time spent diffing one file; past it the diff is coarser but still correct.
const DIFF_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    pub status: FileStatus,
    /// Unified diff from the earlier file to the later one, at most [`MAX_PATCH_BYTES`] and
    /// a marker line.
    pub patch: String,
}

/// The changes from version `against` to version `fragment`, for each pair of versions that
/// are both `owner_id`'s (other pairs are absent), in two statements however many pairs.
pub async fn diff_versions(
    db: &impl ConnectionTrait,
    owner_id: Uuid,
    pairs: &[(Uuid, Uuid)],
) -> AppResult<HashMap<(Uuid, Uuid), Vec<FileDiff>>> {
    let ids: Vec<Uuid> = pairs
        .iter()
        .flat_map(|(fragment, against)| [*fragment, *against])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let owned = owned_fragment_ids(db, owner_id, &ids).await?;
    let owned_ids: Vec<Uuid> = owned.iter().copied().collect();
    let files = files_by_fragment(db, &owned_ids).await?;
    let pairs: Vec<(Uuid, Uuid)> = pairs
        .iter()
        .copied()
        .filter(|(fragment, against)| owned.contains(fragment) && owned.contains(against))
        .collect();
    // Diffing is CPU work of up to whole projects: off the async workers.
    tokio::task::spawn_blocking(move || {
        let none = FileMap::new();
        pairs
            .into_iter()
            .map(|(fragment, against)| {
                let new = files.get(&fragment).unwrap_or(&none);
                let old = files.get(&against).unwrap_or(&none);
                ((fragment, against), diff_files(old, new))
            })
            .collect()
    })
    .await
    .map_err(|err| AppError::Internal(format!("diffing versions: {err}")))
}

/// The files that differ between `old` and `new`, by path.
pub fn diff_files(old: &FileMap, new: &FileMap) -> Vec<FileDiff> {
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort_unstable();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| {
            let (before, after) = (old.get(path), new.get(path));
            let status = match (before, after) {
                (None, Some(_)) => FileStatus::Added,
                (Some(_), None) => FileStatus::Removed,
                (Some(before), Some(after)) if before != after => FileStatus::Changed,
                _ => return None,
            };
            let (before, after) = (
                before.map_or("", String::as_str),
                after.map_or("", String::as_str),
            );
            Some(FileDiff {
                path: path.clone(),
                status,
                patch: unified_patch(path, status, before, after),
            })
        })
        .collect()
}

fn unified_patch(path: &str, status: FileStatus, before: &str, after: &str) -> String {
    let from = match status {
        FileStatus::Added => "/dev/null".to_owned(),
        _ => format!("a/{path}"),
    };
    let to = match status {
        FileStatus::Removed => "/dev/null".to_owned(),
        _ => format!("b/{path}"),
    };
    let patch = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&from, &to)
        .to_string();
    truncate_patch(patch)
}

fn truncate_patch(mut patch: String) -> String {
    if patch.len() <= MAX_PATCH_BYTES {
        return patch;
    }
    let full = patch.len();
    let mut cut = MAX_PATCH_BYTES;
    while !patch.is_char_boundary(cut) {
        cut -= 1;
    }
    patch.truncate(cut);
    if !patch.ends_with('\n') {
        patch.push('\n');
    }
    patch.push_str(&format!("{TRUNCATED_MARKER} {full} bytes in all\n"));
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> FileMap {
        entries
            .iter()
            .map(|(path, content)| (path.to_string(), content.to_string()))
            .collect()
    }

    #[test]
    fn added_removed_and_changed_files_are_told_apart() {
        let old = files(&[
            ("same.ts", "x\n"),
            ("gone.ts", "bye\n"),
            ("page.tsx", "a\nb\n"),
        ]);
        let new = files(&[
            ("same.ts", "x\n"),
            ("new.ts", "hi\n"),
            ("page.tsx", "a\nc\n"),
        ]);
        let diffs = diff_files(&old, &new);
        let summary: Vec<(&str, FileStatus)> = diffs
            .iter()
            .map(|diff| (diff.path.as_str(), diff.status))
            .collect();
        assert_eq!(
            summary,
            [
                ("gone.ts", FileStatus::Removed),
                ("new.ts", FileStatus::Added),
                ("page.tsx", FileStatus::Changed),
            ]
        );
        assert_eq!(
            diffs[2].patch,
            "--- a/page.tsx\n+++ b/page.tsx\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
        );
        assert!(diffs[1].patch.starts_with("--- /dev/null\n+++ b/new.ts\n"));
        assert!(diffs[0].patch.contains("-bye\n"));
    }

    #[test]
    fn a_huge_patch_is_cut_with_a_marker() {
        let big = "line of a generated file\n".repeat(10_000);
        let diffs = diff_files(&FileMap::new(), &files(&[("big.json", &big)]));
        let patch = &diffs[0].patch;
        assert!(patch.len() < MAX_PATCH_BYTES + 100, "{} bytes", patch.len());
        assert!(patch
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with(TRUNCATED_MARKER));
    }
}
