//! JSON shapes of the control-plane REST API (reference §2) and of envd's Connect services (§5–§7).
//! Every response type is `default` + lenient: protojson omits default values and adds fields freely.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// `POST /sandboxes` body (`NewSandbox`).
#[derive(Debug, Serialize)]
pub struct NewSandbox<'a> {
    #[serde(rename = "templateID")]
    pub template_id: &'a str,
    pub timeout: u32,
    pub secure: bool,
    pub allow_internet_access: bool,
    pub metadata: BTreeMap<String, String>,
}

/// Body of `POST /sandboxes/{id}/connect` and `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Serialize)]
pub struct TimeoutBody {
    pub timeout: u32,
}

/// `Sandbox` response of create and connect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SandboxInfo {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(rename = "envdAccessToken")]
    pub envd_access_token: Option<String>,
    pub domain: Option<String>,
}

/// Control-plane, envd and proxy error bodies all carry `message`; `code` is an int on REST and a
/// string on Connect. Only used for messages: decisions are made on the HTTP status.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    pub code: serde_json::Value,
    pub message: String,
    pub error_code: Option<String>,
}

/// Connect error (unary body, or the `error` of an EndStream).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConnectError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndStream {
    pub error: Option<ConnectError>,
}

#[derive(Debug, Serialize)]
pub struct StartRequest<'a> {
    pub process: ProcessConfig<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<&'a str>,
    pub stdin: bool,
}

#[derive(Debug, Serialize)]
pub struct ProcessConfig<'a> {
    pub cmd: &'a str,
    pub args: Vec<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<&'a str, &'a str>,
    pub cwd: &'a str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StartResponse {
    pub event: Option<ProcessEvent>,
}

/// `ProcessEvent` oneof: exactly one key.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProcessEvent {
    Start(StartEvent),
    Data(DataEvent),
    End(EndEvent),
    Keepalive(serde::de::IgnoredAny),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StartEvent {
    pub pid: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DataEvent {
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub pty: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EndEvent {
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SendSignalRequest {
    pub process: PidSelector,
    pub signal: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PidSelector {
    pub pid: u32,
}

/// `filesystem.Filesystem/Remove` (and other single-path calls).
#[derive(Debug, Serialize)]
pub struct PathRequest<'a> {
    pub path: &'a str,
}

#[derive(Debug, Serialize)]
pub struct ListDirRequest<'a> {
    pub path: &'a str,
    pub depth: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListDirResponse {
    pub entries: Vec<EntryInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EntryInfo {
    pub name: String,
    #[serde(rename = "type", deserialize_with = "file_type")]
    pub kind: FileType,
    pub path: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub size: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    File,
    Directory,
    Symlink,
    #[default]
    Unspecified,
}

/// Enum names, or the numbers protojson also allows.
fn file_type<'de, D: Deserializer<'de>>(d: D) -> Result<FileType, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => match s.as_str() {
            "FILE_TYPE_FILE" | "file" => FileType::File,
            "FILE_TYPE_DIRECTORY" | "dir" | "directory" => FileType::Directory,
            "FILE_TYPE_SYMLINK" | "symlink" => FileType::Symlink,
            _ => FileType::Unspecified,
        },
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(1) => FileType::File,
            Some(2) => FileType::Directory,
            Some(3) => FileType::Symlink,
            _ => FileType::Unspecified,
        },
        _ => FileType::Unspecified,
    })
}

/// int64 arrives as a JSON string; accept a number too, and anything odd as 0.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_events() {
        let r: StartResponse = serde_json::from_str(r#"{"event":{"start":{"pid":412}}}"#).unwrap();
        assert!(matches!(
            r.event,
            Some(ProcessEvent::Start(StartEvent { pid: 412 }))
        ));
        let r: StartResponse = serde_json::from_str(r#"{"event":{"keepalive":{}}}"#).unwrap();
        assert!(matches!(r.event, Some(ProcessEvent::Keepalive(_))));
        let r: StartResponse =
            serde_json::from_str(r#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#)
                .unwrap();
        match r.event {
            Some(ProcessEvent::End(e)) => assert_eq!(e.exit_code, 0),
            other => panic!("{other:?}"),
        }
        let r: StartResponse = serde_json::from_str(
            r#"{"event":{"end":{"exitCode":1,"exited":true,"status":"exit status 1","error":"exit status 1"}}}"#,
        )
        .unwrap();
        match r.event {
            Some(ProcessEvent::End(e)) => assert_eq!(e.exit_code, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_entry_info_with_string_size() {
        let r: ListDirResponse = serde_json::from_str(
            r#"{"entries":[{"name":"index.tsx","type":"FILE_TYPE_FILE","path":"/home/user/pages/index.tsx","size":"57","mode":420}]}"#,
        )
        .unwrap();
        assert_eq!(r.entries[0].kind, FileType::File);
        assert_eq!(r.entries[0].size, 57);
    }

    #[test]
    fn sandbox_with_null_domain() {
        let s: SandboxInfo = serde_json::from_str(
            r#"{"templateID":"t","sandboxID":"iabc","clientID":"x","envdVersion":"0.5.7","envdAccessToken":"tok","trafficAccessToken":null,"domain":null}"#,
        )
        .unwrap();
        assert_eq!(s.sandbox_id, "iabc");
        assert_eq!(s.domain, None);
        assert_eq!(s.envd_access_token.as_deref(), Some("tok"));
    }
}
