//! The one lexical path rule of every backend: a path the model gives is relative to the app
//! root and must stay inside it (no absolute paths, no `..` that climbs out).
//!
//! Symlinks are not this rule's business: a check on the path followed by a use of it could be
//! raced by a command swapping a directory for a symlink in between. The local backend resolves
//! every path below a directory handle instead (`local/files.rs`); E2B's envd runs inside its
//! sandbox, where a symlink reaches nothing the sandbox could not reach anyway.

use std::path::{Component, Path};

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
}
