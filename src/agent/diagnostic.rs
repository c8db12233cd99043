//! Build check output as typed diagnostics: `tsc` (its `--pretty false` lines and its pretty,
//! coloured ones) and the error `next dev` puts in a page it cannot render. The model gets them
//! as a structured list, clients as a `BUILD_DIAGNOSTICS` event, the loop breaker compares
//! their fingerprints.

use serde::{Deserialize, Serialize};

/// Diagnostics kept of one check; the rest are counted in a last one.
pub const MAX_DIAGNOSTICS: usize = 50;
/// Characters of one diagnostic's message (a check that is not `tsc` gives its whole output).
pub const MAX_MESSAGE_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// One problem the build check found. `file` is relative to the app root; `None` for a
/// problem of the whole build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// `TS2304` for `tsc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    /// A problem without a place: what a check that is not `tsc` printed.
    pub fn unlocated(message: &str) -> Self {
        Self {
            file: None,
            line: None,
            column: None,
            code: None,
            severity: Severity::Error,
            message: cap(message.trim()),
        }
    }

    /// `app/page.tsx:3:7 TS2322: message`, the way editors print it.
    pub fn describe(&self) -> String {
        let mut place = self.file.clone().unwrap_or_default();
        for number in [self.line, self.column].into_iter().flatten() {
            place.push_str(&format!(":{number}"));
        }
        let code = self
            .code
            .as_deref()
            .map(|c| format!("{c}: "))
            .unwrap_or_default();
        if place.is_empty() {
            format!("{code}{}", self.message)
        } else {
            format!("{place} {code}{}", self.message)
        }
    }
}

/// What stays the same when a fix only moves a problem: (file, code, message), sorted, without
/// line and column numbers.
pub type Fingerprint = Vec<(Option<String>, Option<String>, String)>;

pub fn fingerprint(diagnostics: &[Diagnostic]) -> Fingerprint {
    let mut print: Fingerprint = diagnostics
        .iter()
        .map(|d| (d.file.clone(), d.code.clone(), d.message.clone()))
        .collect();
    print.sort();
    print.dedup();
    print
}

/// The diagnostics of a failed check's output: `tsc`'s lines where there are some, else the
/// output as one unlocated diagnostic (a failure always has at least one).
pub fn parse_check_output(output: &str) -> Vec<Diagnostic> {
    let output = strip_ansi(output);
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut omitted = 0usize;
    // `--pretty false` continues a message on indented lines; the pretty form follows it with
    // a code excerpt, which is not part of the message.
    let mut continues = false;
    for line in output.lines() {
        if let Some(diagnostic) = parse_tsc_line(line) {
            continues = line.contains("): ");
            if diagnostics.len() < MAX_DIAGNOSTICS {
                diagnostics.push(diagnostic);
            } else {
                omitted += 1;
            }
            continue;
        }
        let indented = line.starts_with(' ') && !line.trim().is_empty();
        match diagnostics.last_mut() {
            Some(last) if continues && indented && omitted == 0 => {
                last.message = cap(&format!("{}\n{}", last.message, line.trim()));
            }
            _ => continues = continues && indented,
        }
    }
    if omitted > 0 {
        diagnostics.push(Diagnostic::unlocated(&format!(
            "… and {omitted} more diagnostics"
        )));
    }
    if diagnostics.is_empty() {
        diagnostics.push(Diagnostic::unlocated(if output.trim().is_empty() {
            "the build check failed without output"
        } else {
            &output
        }));
    }
    diagnostics
}

/// `file(line,col): error TS1234: message` (`--pretty false`), `file:line:col - error TS1234:
/// message` (pretty) or `error TS1234: message` (no file).
fn parse_tsc_line(line: &str) -> Option<Diagnostic> {
    let line = line.trim_end();
    let (place, rest) = if let Some(at) = line.find("): ") {
        (Some(&line[..=at]), &line[at + 3..])
    } else if let Some(at) = line.find(" - ") {
        (Some(&line[..at]), &line[at + 3..])
    } else {
        (None, line)
    };
    let (severity, rest) = [
        ("error ", Severity::Error),
        ("warning ", Severity::Warning),
        ("message ", Severity::Info),
    ]
    .into_iter()
    .find_map(|(word, severity)| rest.strip_prefix(word).map(|rest| (severity, rest)))?;
    let (code, message) = rest.split_once(": ")?;
    if !code.starts_with("TS") || !code[2..].chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (file, line_number, column) = match place {
        None => (None, None, None),
        Some(place) => {
            let (file, line_number, column) = parse_place(place)?;
            (Some(file), Some(line_number), Some(column))
        }
    };
    Some(Diagnostic {
        file,
        line: line_number,
        column,
        code: Some(code.to_owned()),
        severity,
        message: cap(message.trim()),
    })
}

/// `file(line,col)` or `file:line:col`.
fn parse_place(place: &str) -> Option<(String, u32, u32)> {
    let (file, line, column) = if let Some(open) = place.strip_suffix(')') {
        let (file, numbers) = open.rsplit_once('(')?;
        let (line, column) = numbers.split_once(',')?;
        (file, line, column)
    } else {
        let (rest, column) = place.rsplit_once(':')?;
        let (file, line) = rest.rsplit_once(':')?;
        (file, line, column)
    };
    let file = clean_path(file)?;
    Some((file, line.trim().parse().ok()?, column.trim().parse().ok()?))
}

fn clean_path(file: &str) -> Option<String> {
    let file = file.trim().trim_start_matches("./");
    (!file.is_empty()).then(|| file.to_owned())
}

/// The error `next dev` reports for a page: `./app/page.tsx:1:10\nError: message` (or only the
/// message when it names no place).
pub fn parse_next_error(error: &str) -> Diagnostic {
    let error = strip_ansi(error);
    let (first, rest) = error.trim().split_once('\n').unwrap_or((error.trim(), ""));
    match parse_place(first) {
        Some((file, line, column)) if first.starts_with("./") || !first.contains(' ') => {
            let message = rest.trim();
            let message = message.strip_prefix("Error: ").unwrap_or(message);
            Diagnostic {
                file: Some(file),
                line: Some(line),
                column: Some(column),
                code: None,
                severity: Severity::Error,
                message: cap(message),
            }
        }
        _ => Diagnostic::unlocated(error.trim().strip_prefix("Error: ").unwrap_or(&error)),
    }
}

/// Diagnostics as the model reads them: one JSON object per line.
pub fn to_model_list(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| serde_json::to_string(d).expect("a diagnostic always serializes"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn cap(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_owned(),
    }
}

/// Terminal colour codes (`ESC [ … letter`), which `tsc` prints unless told `--pretty false`.
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `npx tsc --noEmit --pretty false` on a project with three errors, one spanning lines.
    const TSC_PLAIN: &str = "app/page.tsx(3,7): error TS2322: Type 'string' is not assignable to type 'number'.
app/page.tsx(5,10): error TS2304: Cannot find name 'useStat'.
components/todo-list.tsx(12,3): error TS2345: Argument of type '{ title: string; }' is not assignable to parameter of type 'Todo'.
  Property 'done' is missing in type '{ title: string; }' but required in type 'Todo'.
";

    /// The same run without `--pretty false` (as a terminal shows it, colours included).
    const TSC_PRETTY: &str = "\u{1b}[96mapp/page.tsx\u{1b}[0m:\u{1b}[93m3\u{1b}[0m:\u{1b}[93m7\u{1b}[0m - \u{1b}[91merror\u{1b}[0m\u{1b}[90m TS2322: \u{1b}[0mType 'string' is not assignable to type 'number'.

\u{1b}[7m3\u{1b}[0m const n: number = \"x\";
\u{1b}[7m \u{1b}[0m \u{1b}[91m      ~\u{1b}[0m

\u{1b}[96mapp/page.tsx\u{1b}[0m:\u{1b}[93m5\u{1b}[0m:\u{1b}[93m10\u{1b}[0m - \u{1b}[91merror\u{1b}[0m\u{1b}[90m TS2304: \u{1b}[0mCannot find name 'useStat'.

\u{1b}[7m5\u{1b}[0m   const [n, setN] = useStat(0);
\u{1b}[7m \u{1b}[0m \u{1b}[91m         ~~~~~~~\u{1b}[0m


Found 2 errors in the same file, starting at: app/page.tsx\u{1b}[90m:3\u{1b}[0m

";

    fn at(file: &str, line: u32, column: u32, code: &str, message: &str) -> Diagnostic {
        Diagnostic {
            file: Some(file.into()),
            line: Some(line),
            column: Some(column),
            code: Some(code.into()),
            severity: Severity::Error,
            message: message.into(),
        }
    }

    #[test]
    fn tsc_plain_output_parses_with_continuation_lines() {
        assert_eq!(
            parse_check_output(TSC_PLAIN),
            vec![
                at(
                    "app/page.tsx",
                    3,
                    7,
                    "TS2322",
                    "Type 'string' is not assignable to type 'number'."
                ),
                at("app/page.tsx", 5, 10, "TS2304", "Cannot find name 'useStat'."),
                at(
                    "components/todo-list.tsx",
                    12,
                    3,
                    "TS2345",
                    "Argument of type '{ title: string; }' is not assignable to parameter of type 'Todo'.\nProperty 'done' is missing in type '{ title: string; }' but required in type 'Todo'."
                ),
            ]
        );
    }

    #[test]
    fn tsc_pretty_output_parses_without_colours_or_excerpts() {
        assert_eq!(
            parse_check_output(TSC_PRETTY),
            vec![
                at(
                    "app/page.tsx",
                    3,
                    7,
                    "TS2322",
                    "Type 'string' is not assignable to type 'number'."
                ),
                at(
                    "app/page.tsx",
                    5,
                    10,
                    "TS2304",
                    "Cannot find name 'useStat'."
                ),
            ]
        );
    }

    #[test]
    fn a_global_tsc_error_has_no_file() {
        let parsed =
            parse_check_output("error TS5083: Cannot read file '/home/user/tsconfig.json'.\n");
        assert_eq!(parsed[0].file, None);
        assert_eq!(parsed[0].code.as_deref(), Some("TS5083"));
    }

    #[test]
    fn other_output_is_one_capped_unlocated_diagnostic() {
        let parsed = parse_check_output("npm ERR! missing script: lint\n");
        assert_eq!(
            parsed,
            vec![Diagnostic::unlocated("npm ERR! missing script: lint")]
        );
        let huge = parse_check_output(&"x".repeat(100_000));
        assert_eq!(huge.len(), 1);
        assert!(huge[0].message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            parse_check_output("")[0].message,
            "the build check failed without output"
        );
    }

    #[test]
    fn many_diagnostics_are_capped_and_counted() {
        let output: String = (1..=MAX_DIAGNOSTICS + 7)
            .map(|i| format!("app/page.tsx({i},1): error TS2304: Cannot find name 'x{i}'.\n"))
            .collect();
        let parsed = parse_check_output(&output);
        assert_eq!(parsed.len(), MAX_DIAGNOSTICS + 1);
        assert_eq!(parsed.last().unwrap().message, "… and 7 more diagnostics");
    }

    #[test]
    fn a_next_page_error_names_its_place() {
        let error = "./app/page.tsx:1:10\nError: You're importing a module that depends on `useState` into a React Server Component module.";
        assert_eq!(
            parse_next_error(error),
            Diagnostic {
                file: Some("app/page.tsx".into()),
                line: Some(1),
                column: Some(10),
                code: None,
                severity: Severity::Error,
                message: "You're importing a module that depends on `useState` into a React Server Component module.".into(),
            }
        );
        assert_eq!(
            parse_next_error("Error: boom"),
            Diagnostic::unlocated("boom")
        );
    }

    #[test]
    fn a_fingerprint_ignores_places_and_order() {
        let first = parse_check_output(TSC_PLAIN);
        let mut moved = first.clone();
        moved.reverse();
        for d in &mut moved {
            d.line = d.line.map(|l| l + 10);
        }
        assert_eq!(fingerprint(&first), fingerprint(&moved));
        assert_ne!(fingerprint(&first), fingerprint(&first[1..]));
    }

    #[test]
    fn the_model_gets_one_object_per_diagnostic() {
        let list = to_model_list(&parse_check_output(TSC_PLAIN)[..2]);
        assert_eq!(
            list,
            "{\"file\":\"app/page.tsx\",\"line\":3,\"column\":7,\"code\":\"TS2322\",\"severity\":\"ERROR\",\"message\":\"Type 'string' is not assignable to type 'number'.\"}\n{\"file\":\"app/page.tsx\",\"line\":5,\"column\":10,\"code\":\"TS2304\",\"severity\":\"ERROR\",\"message\":\"Cannot find name 'useStat'.\"}"
        );
    }
}
