//! Export: a version of a project as a zip archive, streamed as it is written.

use std::io::{self, Write};

use bytes::Bytes;
use futures_util::Stream;
use sea_orm::{ConnectionTrait, EntityTrait};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::fragment::{find_fragment, fragment_files, latest_fragment};
use super::Viewer;
use crate::entity::message;
use crate::error::{AppError, AppResult};
use crate::sandbox::FileMap;

/// The archive's own file, next to the app's, on how to run it.
pub const README_NAME: &str = "README-codekraft.md";
/// Bytes handed to the response at a time, and chunks waiting for a slow client: the memory
/// one export holds beyond the version's files.
const CHUNK_BYTES: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// A version ready to be archived.
pub struct ProjectExport {
    /// The archive's name, and the folder its files are in: the project's name, made safe
    /// for a file name (see [`folder_name`]).
    pub name: String,
    pub title: String,
    pub files: FileMap,
}

/// The version to export: `fragment_id` if given (a version of this project), else the newest.
/// Another user's project or version is `NotFound`, like a project without any version.
pub async fn find_export(
    db: &impl ConnectionTrait,
    viewer: Viewer,
    project_id: Uuid,
    fragment_id: Option<Uuid>,
) -> AppResult<ProjectExport> {
    let project = super::project::find_project(db, viewer, project_id).await?;
    let fragment = match fragment_id {
        Some(fragment_id) => {
            let fragment = find_fragment(db, viewer, fragment_id).await?;
            let of_project = message::Entity::find_by_id(fragment.message_id)
                .one(db)
                .await?
                .is_some_and(|message| message.project_id == project.id);
            if !of_project {
                return Err(AppError::NotFound("fragment"));
            }
            fragment
        }
        None => latest_fragment(db, project.id)
            .await?
            .ok_or(AppError::NotFound("version"))?,
    };
    Ok(ProjectExport {
        name: folder_name(&project.name),
        title: fragment.title,
        files: fragment_files(db, fragment.id).await?,
    })
}

/// The archive as a stream of chunks, written on a blocking thread as the client reads: a
/// client that stops reading stops the writing, one that goes away ends it.
pub fn stream_zip(export: ProjectExport) -> impl Stream<Item = io::Result<Bytes>> {
    let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let out = io::BufWriter::with_capacity(
            CHUNK_BYTES,
            ChannelWriter {
                sender: sender.clone(),
            },
        );
        if let Err(err) = write_zip(&export, out) {
            // A client that went away is no error; tell one that still reads.
            tracing::debug!(%err, "export ended early");
            let _ = sender.blocking_send(Err(io::Error::other(err)));
        }
    });
    ReceiverStream::new(receiver)
}

/// Writes the archive: every file under a folder named after the project, and a README.
pub fn write_zip(export: &ProjectExport, out: impl Write) -> zip::result::ZipResult<()> {
    let mut zip = ZipWriter::new_stream(out);
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for (path, content) in &export.files {
        if !is_relative_path(path) {
            // Stored paths are relative; one that is not must not land outside the folder.
            tracing::warn!(path, "export skips a file whose path leaves the project");
            continue;
        }
        zip.start_file(format!("{}/{path}", export.name), options)?;
        zip.write_all(content.as_bytes())?;
    }
    if !export.files.contains_key(README_NAME) {
        zip.start_file(format!("{}/{README_NAME}", export.name), options)?;
        zip.write_all(readme(export).as_bytes())?;
    }
    zip.finish()?.flush()?;
    Ok(())
}

/// A path that stays inside the folder it is extracted to.
fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// A project name (renamed to anything) as a folder and file name: letters, digits, `-`, `_`
/// and inner dots of ASCII only (it also goes into a header).
pub fn folder_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let safe = safe.trim_matches(|c| c == '.' || c == '-');
    if safe.is_empty() {
        "app".to_owned()
    } else {
        safe.to_owned()
    }
}

fn readme(export: &ProjectExport) -> String {
    format!(
        "# {name}\n\n\
         \u{201c}{title}\u{201d}, a Next.js app exported from CodeKraft.\n\n\
         ## Run it\n\n\
         You need Node.js 18.18 or later.\n\n\
         ```sh\n\
         npm install\n\
         npm run dev\n\
         ```\n\n\
         Then open http://localhost:3000. `npm run build && npm start` serves a production build.\n",
        name = export.name,
        title = export.title,
    )
}

/// Hands what the zip writer writes to the response, waiting while the client is behind.
struct ChannelWriter {
    sender: mpsc::Sender<io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sender
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{folder_name, is_relative_path};

    #[test]
    fn a_project_name_becomes_a_safe_folder_name() {
        assert_eq!(folder_name("todo-app"), "todo-app");
        assert_eq!(folder_name("../My App/\"\n"), "My-App");
        assert_eq!(folder_name(".."), "app");
    }

    #[test]
    fn only_paths_inside_the_folder_are_archived() {
        assert!(is_relative_path("app/page.tsx"));
        assert!(is_relative_path(".env.example"));
        for escaping in [
            "/etc/passwd",
            "../x",
            "app/../../x",
            "a//b",
            "a\\..\\b",
            "",
            "./a",
        ] {
            assert!(!is_relative_path(escaping), "{escaping}");
        }
    }
}
