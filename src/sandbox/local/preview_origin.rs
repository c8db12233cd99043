//! Where browsers reach a local preview: an origin of its own per sandbox,
//! `{scheme}://{sandbox_id}.{domain}[:port]`. A generated app then cannot read the web client's
//! storage (where the session token lives) nor another preview's, whoever opens its link. The
//! preview listener finds the sandbox in the first label of the request's Host.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The placeholder of the sandbox id in `PREVIEW_PUBLIC_URL`.
const ID_PLACEHOLDER: &str = "{id}";

/// The origin of every sandbox's preview, e.g. `http://{id}.localhost:8081` or
/// `https://{id}.preview.example.com`: `{id}` is always the host's whole first label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewOrigin {
    /// `http` or `https`.
    scheme: String,
    /// The host after the id's label (`localhost`), lowercase as browsers send it.
    domain: String,
    /// `None`: the scheme's default port.
    port: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "a preview origin looks like https://{{id}}.preview.example.com, `{{id}}` (the sandbox id) \
     being the host's first label, without a path: {0}"
)]
pub struct InvalidPreviewOrigin(String);

impl PreviewOrigin {
    /// `http://{id}.localhost:{port}`: browsers resolve `*.localhost` to loopback themselves,
    /// so this needs no DNS set-up.
    pub fn localhost(port: u16) -> Self {
        Self {
            scheme: "http".into(),
            domain: "localhost".into(),
            port: Some(port),
        }
    }

    /// The origin of one sandbox's preview, without a trailing slash.
    pub fn url_of(&self, sandbox_id: Uuid) -> String {
        let mut url = format!("{}://{}", self.scheme, self.host_of(sandbox_id));
        if let Some(port) = self.port {
            url.push_str(&format!(":{port}"));
        }
        url
    }

    /// Every sandbox's preview origin as a CSP source (`http://*.localhost:8081`): where the web
    /// client may frame previews.
    pub fn csp_source(&self) -> String {
        let mut source = format!("{}://*.{}", self.scheme, self.domain);
        if let Some(port) = self.port {
            source.push_str(&format!(":{port}"));
        }
        source
    }

    /// The host name (without port) of one sandbox's preview.
    pub fn host_of(&self, sandbox_id: Uuid) -> String {
        format!("{sandbox_id}.{}", self.domain)
    }

    /// The sandbox a request to the preview listener is for: the first label of its Host
    /// (`{id}.localhost:8081`), a hyphenated id only, so that a sandbox has one origin.
    pub fn sandbox_in_host(host: &str) -> Option<Uuid> {
        let label = host.split(['.', ':']).next()?;
        if label.len() != Uuid::nil().hyphenated().to_string().len() {
            return None;
        }
        Uuid::try_parse(label).ok()
    }
}

impl FromStr for PreviewOrigin {
    type Err = InvalidPreviewOrigin;

    fn from_str(template: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPreviewOrigin(template.to_owned());
        let trimmed = template.trim().trim_end_matches('/');
        let (scheme, rest) = trimmed.split_once("://").ok_or_else(invalid)?;
        let after_id = rest
            .strip_prefix(ID_PLACEHOLDER)
            .and_then(|after| after.strip_prefix('.'))
            .ok_or_else(invalid)?;
        if after_id.contains(['{', '}', '/', '?', '#', '@']) {
            return Err(invalid());
        }
        // The template with a real id must be a plain origin whose host starts with that id.
        let probe = Uuid::nil();
        let url = reqwest::Url::parse(&format!("{scheme}://{probe}.{after_id}"))
            .map_err(|_| invalid())?;
        let domain = url
            .host_str()
            .and_then(|host| host.strip_prefix(&format!("{probe}.")))
            .filter(|domain| !domain.is_empty() && !domain.starts_with('.'))
            .ok_or_else(invalid)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid());
        }
        Ok(Self {
            scheme: url.scheme().to_owned(),
            domain: domain.to_owned(),
            port: url.port(),
        })
    }
}

impl fmt::Display for PreviewOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{ID_PLACEHOLDER}.{}", self.scheme, self.domain)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sandbox_gets_a_host_of_its_own() {
        let id = Uuid::new_v4();
        let local = PreviewOrigin::localhost(8081);
        assert_eq!(local.url_of(id), format!("http://{id}.localhost:8081"));
        assert_eq!(local.host_of(id), format!("{id}.localhost"));
        assert_eq!(local.to_string(), "http://{id}.localhost:8081");

        let wildcard: PreviewOrigin = "https://{id}.Preview.Example.com/".parse().unwrap();
        assert_eq!(
            wildcard.url_of(id),
            format!("https://{id}.preview.example.com")
        );
        let default_port: PreviewOrigin = "https://{id}.preview.example.com:443".parse().unwrap();
        assert_eq!(default_port, wildcard);
        let with_port: PreviewOrigin = "http://{id}.lan.example:9000".parse().unwrap();
        assert_eq!(
            with_port.url_of(id),
            format!("http://{id}.lan.example:9000")
        );
    }

    #[test]
    fn a_template_without_the_id_as_first_label_is_refused() {
        for template in [
            "https://preview.example.com",
            "https://preview-{id}.example.com",
            "https://{id}-preview.example.com",
            "https://www.{id}.example.com",
            "https://{id}.example.com/preview",
            "https://{id}.example.com?x=1",
            "https://user@{id}.example.com",
            "https://{id}.{id}.example.com",
            "https://{id}",
            "https://{id}.",
            "https://{id}..example.com",
            "ftp://{id}.example.com",
            "{id}.example.com",
            "https://{id}.exa mple.com",
        ] {
            let refused = template.parse::<PreviewOrigin>();
            assert!(refused.is_err(), "{template} was accepted: {refused:?}");
        }
    }

    #[test]
    fn the_sandbox_is_the_first_label_of_the_host() {
        let id = Uuid::new_v4();
        for host in [
            format!("{id}.localhost:8081"),
            format!("{id}.localhost"),
            format!("{id}.preview.example.com"),
            format!("{id}:8081"),
        ] {
            assert_eq!(PreviewOrigin::sandbox_in_host(&host), Some(id), "{host}");
        }
        for host in [
            "localhost:8081".to_owned(),
            "127.0.0.1:8081".to_owned(),
            "[::1]:8081".to_owned(),
            format!("{}.localhost", id.simple()),
            format!("{{{id}}}.localhost"),
            format!("x{id}.localhost"),
            format!("www.{id}.localhost"),
            String::new(),
        ] {
            assert_eq!(PreviewOrigin::sandbox_in_host(&host), None, "{host}");
        }
    }
}
