//! Path confinement shared by the backends: a path the model gives is relative to the app root
//! and must stay inside it, lexically (`..`, absolute paths) and through symlinks.
//!
//! The check is done when the path is resolved; a process inside the sandbox that swaps a
//! directory for a symlink between the check and the use could still race it, which is why the
//! local backend additionally runs commands in a bubblewrap jail when it can.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use super::SandboxError;

/// Normalises `rel` lexically into its components (no `.`, no `..`, no root), or refuses it.
/// `""` and `"."` are the root itself (no components).
pub(crate) fn normalize(rel: &str) -> Result<Vec<String>, SandboxError> {
    let refuse = |why: &str| SandboxError::PathRefused(format!("{rel:?}: {why}"));
    if rel.contains('\0') {
        return Err(refuse("contains a NUL byte"));
    }
    let mut parts: Vec<String> = Vec::new();
    for component in Path::new(rel).components() {
        match component {
            Component::Normal(part) => {
                let part = part
                    .to_str()
                    .ok_or_else(|| refuse("not valid UTF-8"))?
                    .to_owned();
                parts.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(refuse("leads outside the app root"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("absolute paths are not allowed"));
            }
        }
    }
    Ok(parts)
}

/// Resolves `rel` below `root` and returns a path that, at the time of the call, lies inside
/// `root` once every symlink on the way is followed. Components that do not exist yet are
/// appended as they are (there is nothing to follow). A symlink that leads outside, or a
/// dangling one (where it would lead cannot be checked), is refused.
pub(crate) fn confine(root: &Path, rel: &str) -> Result<PathBuf, SandboxError> {
    let parts = normalize(rel)?;
    let canonical_root = root.canonicalize()?;
    let refuse = |why: &str| SandboxError::PathRefused(format!("{rel:?}: {why}"));

    let mut current = canonical_root.clone();
    let mut exists = true;
    for part in parts {
        let next = current.join(&part);
        if !exists {
            current = next;
            continue;
        }
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => match next.canonicalize() {
                Ok(target) if target.starts_with(&canonical_root) => current = target,
                Ok(_) => return Err(refuse("a symlink leads outside the app root")),
                Err(_) => return Err(refuse("a dangling symlink")),
            },
            Ok(_) => current = next,
            Err(err) if err.kind() == ErrorKind::NotFound => {
                exists = false;
                current = next;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(current)
}

/// The path of `abs` relative to `root`, with `/` separators, for listings.
pub(crate) fn relative_display(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<impl std::fmt::Debug, SandboxError>) -> bool {
        matches!(result, Err(SandboxError::PathRefused(_)))
    }

    #[test]
    fn normalize_accepts_relative_paths() {
        assert_eq!(normalize("app/page.tsx").unwrap(), ["app", "page.tsx"]);
        assert_eq!(normalize("./app//page.tsx").unwrap(), ["app", "page.tsx"]);
        assert_eq!(
            normalize("app/../lib/utils.ts").unwrap(),
            ["lib", "utils.ts"]
        );
        assert!(normalize("").unwrap().is_empty());
        assert!(normalize(".").unwrap().is_empty());
    }

    #[test]
    fn normalize_refuses_escapes() {
        assert!(refused(normalize("/etc/passwd")));
        assert!(refused(normalize("..")));
        assert!(refused(normalize("../x")));
        assert!(refused(normalize("app/../../x")));
        assert!(refused(normalize("a\0b")));
    }

    #[test]
    fn confine_follows_symlinks_inside_and_refuses_outside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("app/secret")).unwrap();
        std::os::unix::fs::symlink("../app", root.join("app/inner")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), root.join("dangling")).unwrap();

        let canonical = root.canonicalize().unwrap();
        assert_eq!(
            confine(&root, "app/new.ts").unwrap(),
            canonical.join("app/new.ts")
        );
        assert_eq!(
            confine(&root, "missing/dir/file").unwrap(),
            canonical.join("missing/dir/file")
        );
        assert_eq!(
            confine(&root, "app/inner/x").unwrap(),
            canonical.join("app/x")
        );
        assert_eq!(confine(&root, "").unwrap(), canonical);
        assert!(refused(confine(&root, "out/secret")));
        assert!(refused(confine(&root, "out/new-file")));
        assert!(refused(confine(&root, "app/secret")));
        assert!(refused(confine(&root, "dangling")));
        assert!(refused(confine(&root, "../outside/secret")));
        assert!(refused(confine(&root, "/tmp")));
    }

    #[test]
    fn relative_display_joins_with_slashes() {
        let root = Path::new("/r");
        assert_eq!(
            relative_display(root, Path::new("/r/app/page.tsx")).as_deref(),
            Some("app/page.tsx")
        );
        assert_eq!(relative_display(root, Path::new("/x")), None);
    }
}
