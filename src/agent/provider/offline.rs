//! Deterministic stand-in used when no model is configured: no network, same tool loop.
//!
//! With tools in the request it reads the conversation after the latest user message and
//! counts the tool results there to pick its step: (1) `createOrUpdateFiles` writing
//! `app/page.tsx` for the user's request, (2) `terminal {"command":"ls app"}`, (3) `readFiles`
//! of the page, (4) a final text with `<task_summary>…</task_summary>`. Follow-up messages start
//! the sequence again for the new request. Without tools the request is one of the agent's
//! helper prompts (fragment title or user-facing reply): it answers with a short text that
//! mentions offline mode. Put [`TITLE_MARKER`] or [`REPLY_MARKER`] in the helper's system prompt
//! to choose explicitly; otherwise a system prompt mentioning "title" asks for a title.

use async_trait::async_trait;
use serde_json::json;

use super::{
    ChatMessage, ChatRequest, DeltaSink, ModelError, ModelProvider, ModelResponse, TokenUsage,
    ToolCall,
};

/// Marks the helper prompt asking for a short fragment title.
pub const TITLE_MARKER: &str = "[codekraft:fragment-title]";
/// Marks the helper prompt asking for the short user-facing reply.
pub const REPLY_MARKER: &str = "[codekraft:user-reply]";

pub const PAGE_PATH: &str = "app/page.tsx";

#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineProvider;

impl OfflineProvider {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl ModelProvider for OfflineProvider {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn model(&self) -> &str {
        "offline"
    }

    fn is_offline(&self) -> bool {
        true
    }

    fn estimate_cost_usd(&self, _usage: TokenUsage) -> f64 {
        0.0
    }

    async fn complete(
        &self,
        request: &ChatRequest,
        on_delta: DeltaSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        let (text, tool_calls) = if request.tools.is_empty() {
            (helper_answer(request), Vec::new())
        } else {
            next_step(request)
        };
        if !text.is_empty() {
            on_delta(&text);
        }
        let output_chars = text.len()
            + tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments.to_string().len())
                .sum::<usize>();
        let usage = TokenUsage {
            input_tokens: estimate_tokens(input_chars(request)),
            output_tokens: estimate_tokens(output_chars),
        };
        Ok(ModelResponse {
            text,
            tool_calls,
            usage,
            raw: None,
        })
    }
}

fn estimate_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

fn input_chars(request: &ChatRequest) -> usize {
    let messages: usize = request
        .messages
        .iter()
        .map(|m| match m {
            ChatMessage::User { text } => text.len(),
            ChatMessage::Assistant {
                text, tool_calls, ..
            } => {
                text.len()
                    + tool_calls
                        .iter()
                        .map(|c| c.arguments.to_string().len())
                        .sum::<usize>()
            }
            ChatMessage::ToolResult { content, .. } => content.to_string().len(),
        })
        .sum();
    request.system.len() + messages
}

/// The latest user message's index and text.
fn latest_user(messages: &[ChatMessage]) -> Option<(usize, &str)> {
    messages
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, m)| match m {
            ChatMessage::User { text } => Some((i, text.as_str())),
            _ => None,
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    WritePage,
    ListFiles,
    ReadPage,
}

impl Step {
    fn tool(self) -> &'static str {
        match self {
            Step::WritePage => "createOrUpdateFiles",
            Step::ListFiles => "terminal",
            Step::ReadPage => "readFiles",
        }
    }
}

fn next_step(request: &ChatRequest) -> (String, Vec<ToolCall>) {
    let (user_index, _) = latest_user(&request.messages).unwrap_or((0, ""));
    let prompts: Vec<&str> = request
        .messages
        .iter()
        .filter_map(|m| match m {
            ChatMessage::User { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let turn = prompts.len();
    let done = request.messages[user_index..]
        .iter()
        .filter(|m| matches!(m, ChatMessage::ToolResult { .. }))
        .count();
    let page = Page::for_conversation(&prompts);

    // A follow-up reads the page first and builds on it.
    let order = if turn > 1 {
        [Step::ReadPage, Step::WritePage, Step::ListFiles]
    } else {
        [Step::WritePage, Step::ListFiles, Step::ReadPage]
    };
    let available = |name: &str| request.tools.iter().any(|t| t.name == name);
    let plan: Vec<Step> = order.into_iter().filter(|s| available(s.tool())).collect();
    let Some(&step) = plan.get(done) else {
        return (page.summary(plan.contains(&Step::WritePage)), Vec::new());
    };
    let arguments = match step {
        Step::WritePage => json!({ "files": [{ "path": PAGE_PATH, "content": page.source() }] }),
        Step::ListFiles => json!({ "command": "ls app" }),
        Step::ReadPage => json!({ "files": [PAGE_PATH] }),
    };
    let call = ToolCall {
        id: format!("offline_{turn}_{done}"),
        name: step.tool().to_owned(),
        arguments,
    };
    (String::new(), vec![call])
}

fn helper_answer(request: &ChatRequest) -> String {
    let mentions = |marker: &str| {
        request.system.contains(marker)
            || request
                .messages
                .iter()
                .any(|m| matches!(m, ChatMessage::User { text } if text.contains(marker)))
    };
    let wants_title = if mentions(TITLE_MARKER) {
        true
    } else if mentions(REPLY_MARKER) {
        false
    } else {
        request.system.to_lowercase().contains("title")
    };
    let prompt = latest_user(&request.messages)
        .map(|(_, text)| text.replace(TITLE_MARKER, "").replace(REPLY_MARKER, ""))
        .unwrap_or_default();
    let page = Page::for_prompt(&prompt);
    if wants_title {
        let words: Vec<&str> = page.title.split_whitespace().take(4).collect();
        format!("{} (offline)", words.join(" "))
    } else if request.system.contains("I updated") {
        // The loop's summary (in the reply prompt) says this run changed an existing page.
        format!(
            "I updated your app in offline mode, because no AI model is configured: it keeps what \
             was there and now lists \"{}\" among the changes you asked for. Configure a model \
             provider to build apps with AI.",
            prompt.trim()
        )
    } else {
        format!(
            "I built {} in offline mode, because no AI model is configured. It is a simple starting point \
             generated without a model; configure a model provider to build apps with AI.",
            page.description()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageKind {
    Todo,
    Landing,
}

struct Page {
    kind: PageKind,
    title: String,
    prompt: String,
    /// Follow-up requests, oldest first: the page keeps what the first request built.
    changes: Vec<String>,
}

impl Page {
    fn for_prompt(prompt: &str) -> Self {
        let prompt = prompt.trim();
        let kind = if asks_for_todos(prompt) {
            PageKind::Todo
        } else {
            PageKind::Landing
        };
        Page {
            kind,
            title: title_from_prompt(prompt),
            prompt: prompt.to_owned(),
            changes: Vec::new(),
        }
    }

    /// The page for a whole conversation: the first request's page, with the follow-ups listed
    /// (and a todo list once any request asks for one).
    fn for_conversation(prompts: &[&str]) -> Self {
        let mut page = Page::for_prompt(prompts.first().copied().unwrap_or(""));
        if prompts.iter().any(|prompt| asks_for_todos(prompt)) {
            page.kind = PageKind::Todo;
        }
        page.changes = prompts
            .iter()
            .skip(1)
            .map(|prompt| prompt.trim().to_owned())
            .collect();
        page
    }

    fn description(&self) -> String {
        match self.kind {
            PageKind::Todo => format!("a client-side todo list app titled \"{}\"", self.title),
            PageKind::Landing => format!(
                "a landing page titled \"{}\" featuring your request",
                self.title
            ),
        }
    }

    fn summary(&self, wrote_page: bool) -> String {
        let what = if wrote_page && !self.changes.is_empty() {
            format!(
                "I updated {PAGE_PATH}, keeping {} and adding your latest request.",
                self.description()
            )
        } else if wrote_page {
            format!("I wrote {PAGE_PATH}: {}.", self.description())
        } else {
            "No file tool was available, so nothing was written.".to_owned()
        };
        format!(
            "<task_summary>\nGenerated offline (no model configured). {what} \
             Configure a model provider to generate apps with AI.\n</task_summary>"
        )
    }

    /// The page source. User text only appears inside encoded TypeScript literals, rendered
    /// through JSX expressions (which React escapes as text).
    fn source(&self) -> String {
        let template = match self.kind {
            PageKind::Todo => TODO_PAGE,
            PageKind::Landing => LANDING_PAGE,
        };
        fill_template(
            template,
            &[
                ("TITLE", TsLiteral::of(&self.title)),
                ("PROMPT", TsLiteral::of(&self.prompt)),
                ("CHANGES", TsLiteral::of(&self.changes)),
            ],
        )
    }
}

/// A value encoded as a TypeScript literal: JSON (whose strings are valid TS string literals),
/// with `<`, `>` and `&` escaped so no `</script>` or `-->` appears in the source, and U+2028/
/// U+2029 escaped because older parsers end a line there. The only way user text enters a page.
struct TsLiteral(String);

impl TsLiteral {
    fn of(value: &impl serde::Serialize) -> Self {
        // Serialising a string or a list of strings cannot fail.
        let json = serde_json::to_string(value).unwrap_or_default();
        let mut literal = String::with_capacity(json.len());
        for c in json.chars() {
            // These characters only occur inside the JSON's strings, so escaping them there
            // keeps the same value.
            match c {
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    literal.push_str(&format!("\\u{:04x}", u32::from(c)));
                }
                _ => literal.push(c),
            }
        }
        Self(literal)
    }
}

/// Replaces each `__NAME__` placeholder of `template` by its value in one pass: values are
/// never scanned again, so a value that contains a placeholder name stays literal text.
fn fill_template(template: &str, values: &[(&str, TsLiteral)]) -> String {
    let mut filled = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("__") {
        let after = &rest[start + 2..];
        let found = values.iter().find_map(|(name, value)| {
            after
                .strip_prefix(name)
                .and_then(|tail| tail.strip_prefix("__"))
                .map(|tail| (value, tail))
        });
        match found {
            Some((value, tail)) => {
                filled.push_str(&rest[..start]);
                filled.push_str(&value.0);
                rest = tail;
            }
            None => {
                filled.push_str(&rest[..start + 1]);
                rest = &rest[start + 1..];
            }
        }
    }
    filled.push_str(rest);
    filled
}

fn asks_for_todos(prompt: &str) -> bool {
    let lower = prompt.to_lowercase();
    ["todo", "to-do", "to do list", "task list", "checklist"]
        .iter()
        .any(|k| lower.contains(k))
}

/// A short title from the first line of the prompt, without a leading "build me a".
fn title_from_prompt(prompt: &str) -> String {
    let first_line = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let words: Vec<&str> = first_line.split_whitespace().collect();
    let lead = |w: &str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    // Drop a leading "please now build me a", one group of words at a time.
    const GROUPS: [&[&str]; 4] = [
        &["please", "now", "also", "can", "could", "you", "pls"],
        &[
            "build", "create", "make", "generate", "write", "design", "add",
        ],
        &["me", "us"],
        &["a", "an", "the", "some"],
    ];
    let mut skipped = 0;
    for group in GROUPS {
        while skipped < words.len() && group.contains(&lead(words[skipped]).as_str()) {
            skipped += 1;
        }
    }
    let words = if skipped < words.len() {
        &words[skipped..]
    } else {
        &words[..]
    };
    let mut title = String::new();
    for word in words {
        if title.chars().count() + word.chars().count() > 60 {
            title.push('…');
            break;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    let title = title
        .trim_end_matches(['.', '!', '?', ',', ';', ':'])
        .to_owned();
    let mut chars = title.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "My App".to_owned(),
    }
}

const TODO_PAGE: &str = r##""use client";

import { useState, type FormEvent } from "react";

const TITLE = __TITLE__;
const PROMPT = __PROMPT__;
const CHANGES: string[] = __CHANGES__;

type Todo = { id: number; text: string; done: boolean };

export default function Page() {
  const [todos, setTodos] = useState<Todo[]>([]);
  const [draft, setDraft] = useState("");

  function addTodo(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setTodos((current) => [
      ...current,
      { id: current.reduce((max, t) => Math.max(max, t.id), 0) + 1, text, done: false },
    ]);
    setDraft("");
  }

  function toggleTodo(id: number) {
    setTodos((current) => current.map((t) => (t.id === id ? { ...t, done: !t.done } : t)));
  }

  function removeTodo(id: number) {
    setTodos((current) => current.filter((t) => t.id !== id));
  }

  const remaining = todos.filter((t) => !t.done).length;

  return (
    <main className="min-h-screen bg-slate-50 px-4 py-16">
      <div className="mx-auto max-w-lg rounded-2xl bg-white p-8 shadow-lg">
        <h1 className="text-3xl font-bold text-slate-900">{TITLE}</h1>
        <p className="mt-2 text-sm text-slate-500">{PROMPT}</p>
        <form onSubmit={addTodo} className="mt-6 flex gap-2">
          <input
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            placeholder="What needs to be done?"
            aria-label="New todo"
            className="flex-1 rounded-lg border border-slate-300 px-3 py-2 focus:border-indigo-500 focus:outline-none"
          />
          <button
            type="submit"
            className="rounded-lg bg-indigo-600 px-4 py-2 font-medium text-white hover:bg-indigo-700"
          >
            Add
          </button>
        </form>
        <ul className="mt-6 space-y-2">
          {todos.map((todo) => (
            <li key={todo.id} className="flex items-center gap-3 rounded-lg border border-slate-200 px-3 py-2">
              <input
                type="checkbox"
                checked={todo.done}
                onChange={() => toggleTodo(todo.id)}
                className="h-4 w-4 accent-indigo-600"
              />
              <span className={todo.done ? "flex-1 text-slate-400 line-through" : "flex-1 text-slate-800"}>
                {todo.text}
              </span>
              <button
                onClick={() => removeTodo(todo.id)}
                className="text-sm text-slate-400 hover:text-red-600"
                aria-label={`Delete ${todo.text}`}
              >
                Delete
              </button>
            </li>
          ))}
        </ul>
        <p className="mt-6 text-sm text-slate-500">
          {todos.length === 0 ? "Nothing to do yet." : `${remaining} of ${todos.length} left`}
        </p>
        {CHANGES.length > 0 && (
          <section className="mt-8">
            <h2 className="text-xs font-semibold uppercase tracking-wide text-slate-500">Changes you asked for</h2>
            <ul className="mt-2 list-disc space-y-1 pl-5 text-sm text-slate-700">
              {CHANGES.map((change, index) => (
                <li key={index}>{change}</li>
              ))}
            </ul>
          </section>
        )}
        <p className="mt-8 text-xs text-slate-400">Generated offline: no AI model is configured.</p>
      </div>
    </main>
  );
}
"##;

const LANDING_PAGE: &str = r##"const TITLE = __TITLE__;
const PROMPT = __PROMPT__;
const CHANGES: string[] = __CHANGES__;

const FEATURES = [
  { name: "Fast", text: "Built with Next.js and Tailwind CSS, ready to extend." },
  { name: "Responsive", text: "Looks good on phones, tablets and desktops." },
  { name: "Yours", text: "A clean starting point you can shape into anything." },
];

export default function Page() {
  return (
    <main className="min-h-screen bg-gradient-to-b from-white to-slate-100">
      <section className="mx-auto max-w-4xl px-6 py-24 text-center">
        <h1 className="text-5xl font-extrabold tracking-tight text-slate-900">{TITLE}</h1>
        <p className="mx-auto mt-6 max-w-2xl text-lg text-slate-600">{PROMPT}</p>
        <div className="mt-10 flex justify-center gap-4">
          <a href="#features" className="rounded-lg bg-indigo-600 px-6 py-3 font-semibold text-white hover:bg-indigo-700">
            Get started
          </a>
          <a href="#features" className="rounded-lg border border-slate-300 px-6 py-3 font-semibold text-slate-700 hover:bg-white">
            Learn more
          </a>
        </div>
      </section>
      <section id="features" className="mx-auto grid max-w-5xl gap-6 px-6 pb-24 sm:grid-cols-3">
        {FEATURES.map((feature) => (
          <div key={feature.name} className="rounded-2xl bg-white p-6 shadow-sm ring-1 ring-slate-200">
            <h2 className="text-lg font-semibold text-slate-900">{feature.name}</h2>
            <p className="mt-2 text-slate-600">{feature.text}</p>
          </div>
        ))}
      </section>
      <div className="mx-auto max-w-2xl px-6 pb-10">
        {CHANGES.length > 0 && (
        <section className="rounded-2xl bg-white p-6 shadow-sm ring-1 ring-slate-200">
          <h2 className="text-xs font-semibold uppercase tracking-wide text-slate-500">Changes you asked for</h2>
          <ul className="mt-2 list-disc space-y-1 pl-5 text-sm text-slate-700">
            {CHANGES.map((change, index) => (
              <li key={index}>{change}</li>
            ))}
          </ul>
        </section>
        )}
      </div>
      <footer className="pb-10 text-center text-xs text-slate-400">
        Generated offline: no AI model is configured.
      </footer>
    </main>
  );
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        assert_eq!(
            title_from_prompt("Build me a todo app with dark mode."),
            "Todo app with dark mode"
        );
        assert_eq!(
            title_from_prompt("  \n  create an \"evil\" </script> page"),
            "\"evil\" </script> page"
        );
        assert_eq!(title_from_prompt(""), "My App");
        assert_eq!(
            title_from_prompt("Now please make a landing page for my bakery"),
            "Landing page for my bakery"
        );
        assert_eq!(title_from_prompt("Build"), "Build");
        assert!(title_from_prompt(&"word ".repeat(40)).ends_with('…'));
    }

    /// Prompts that would break out of a string literal, a template literal, JSX or a script
    /// tag, or into another placeholder.
    const HOSTILE_PROMPTS: &[&str] = &[
        "make a page \"}; alert(1); //\n<script>`${x}`",
        "a todo list __PROMPT__ __TITLE__ __CHANGES__",
        "__TITLE__",
        "___PROMPT___",
        "\\\"; throw 1; \"\\",
        "'; process.exit(1); '",
        "`${process.env.SECRET}`",
        "</script><script>alert(document.cookie)</script><!-- -->",
        "{alert(1)} <b onclick={x}>bold</b> &amp; &lt;",
        "*/ /* // line\r\nnext line",
        "line\u{2028}separator\u{2029}paragraph",
        "nul \u{0} bell \u{7} del \u{7f} é 漢字 🎉",
        "   ",
    ];

    /// The value of the one-line `const {name}… = …;` declaration, decoded as JSON.
    fn declared<T: serde::de::DeserializeOwned>(source: &str, prefix: &str) -> T {
        let line = source
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {source}"));
        let literal = line[prefix.len()..]
            .strip_suffix(';')
            .unwrap_or_else(|| panic!("{line:?} does not end the declaration"));
        assert!(
            !literal.contains(['<', '>', '&', '\u{2028}', '\u{2029}']),
            "unescaped in {literal:?}"
        );
        serde_json::from_str(literal).unwrap_or_else(|err| panic!("{literal:?}: {err}"))
    }

    /// The source without its user-text declarations: what must equal the template's.
    fn without_declarations(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter(|line| !DECLARATIONS.iter().any(|p| line.starts_with(p)))
            .collect()
    }

    const DECLARATIONS: [&str; 3] = [
        "const TITLE = ",
        "const PROMPT = ",
        "const CHANGES: string[] = ",
    ];

    #[test]
    fn user_text_lands_only_as_encoded_literals() {
        for prompt in HOSTILE_PROMPTS {
            for prompts in [vec![*prompt], vec!["a bakery website", prompt, prompt]] {
                let page = Page::for_conversation(&prompts);
                let source = page.source();
                let template = match page.kind {
                    PageKind::Todo => TODO_PAGE,
                    PageKind::Landing => LANDING_PAGE,
                };
                assert_eq!(
                    without_declarations(&source),
                    without_declarations(template),
                    "{prompt:?} changed the page outside its literals"
                );
                assert_eq!(declared::<String>(&source, DECLARATIONS[0]), page.title);
                assert_eq!(declared::<String>(&source, DECLARATIONS[1]), page.prompt);
                assert_eq!(
                    declared::<Vec<String>>(&source, DECLARATIONS[2]),
                    page.changes
                );
            }
        }
    }

    #[test]
    fn placeholders_are_filled_once_and_values_are_never_rescanned() {
        let literal = |text: &str| TsLiteral::of(&text);
        let filled = fill_template(
            "a=__A__; b=__B__; ___A__ __C__ __",
            &[("A", literal("__B__")), ("B", literal("__A__"))],
        );
        assert_eq!(filled, r#"a="__B__"; b="__A__"; _"__B__" __C__ __"#);
        assert_eq!(
            literal("</script>\u{2028}&").0,
            r#""\u003c/script\u003e\u2028\u0026""#
        );
        for (prompt, template) in [("a todo list", TODO_PAGE), ("a bakery", LANDING_PAGE)] {
            let source = Page::for_prompt(prompt).source();
            assert!(!source.contains("__"), "a placeholder was left: {source}");
            assert!(DECLARATIONS.iter().all(|p| template.contains(p)));
        }
    }

    #[test]
    fn todo_prompts_get_a_client_component() {
        let source = Page::for_prompt("a TODO list").source();
        assert!(source.starts_with("\"use client\";"));
        assert!(source.contains("useState"));
        let landing = Page::for_prompt("a bakery website").source();
        assert!(!landing.contains("use client"));
    }
}
