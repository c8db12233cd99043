//! Keeps every model request of the tool loop under a token budget (`AGENT_CONTEXT_TOKENS`).
//!
//! - A tool result the model has seen once is cut in the history to its head and tail with a
//!   marker; the model can run the tool again if it needs the middle.
//! - If the request is still too large, whole older turns go, oldest first: earlier requests'
//!   messages, then this run's oldest steps (a step is a model turn with its tool results, so
//!   calls and results stay paired). A note on the task message says so.
//! - Only when that is not enough, a fresh result is cut before the model sees it, as are the
//!   newest turn's large call arguments (a whole file written) and long notes (build errors).
//!
//! Tokens are measured as request bytes / 4, scaled up by the provider-reported input tokens
//! of the previous request when those show a denser tokenizer (bytes / 4 is the fallback where
//! no usage is reported).

use serde_json::Value;

use super::provider::{ChatMessage, ChatRequest, ToolSpec};
use crate::sandbox::CappedText;

/// Bytes per token of the fallback estimate.
pub const BYTES_PER_TOKEN: u64 = 4;
/// What is kept of a tool result once the model has seen it (half head, half tail).
pub const SEEN_RESULT_KEEP_BYTES: usize = 2_000;
/// Least budget `AGENT_CONTEXT_TOKENS` may set: the system prompt and tools need about 2,000.
pub const MIN_CONTEXT_TOKENS: u64 = 4_096;
/// Share of the budget requests are fitted to; the rest covers the providers' own framing of
/// the same content and the estimate's error.
const FILL_RATIO: f64 = 0.9;

/// Default budget of a provider's models (their input window less room for the answer).
pub fn default_context_tokens(provider: &str, model: &str) -> u64 {
    match provider {
        // Gemini 2.x: a 1M-token window, up to 65k tokens of answer.
        "gemini" => 900_000,
        // Claude: a 200k window; the provider asks for up to 16k tokens of answer.
        "anthropic" => 180_000,
        // Hosted OpenAI models have large windows; local models (Ollama, llama.cpp) often 32k.
        "openai" if model.starts_with("gpt-") => 120_000,
        "openai" => 30_000,
        // Offline and replayed runs: small, so the trimming is exercised.
        _ => 16_000,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request needs about {needed} tokens, more than the context budget of {budget}")]
pub struct ContextOverflow {
    pub needed: u64,
    pub budget: u64,
}

/// The budget and the measure of one run's requests.
#[derive(Debug, Clone)]
pub struct ContextBudget {
    max_tokens: u64,
    /// Tokens per request byte: 1 / [`BYTES_PER_TOKEN`] until the provider reports more.
    tokens_per_byte: f64,
    /// First kept message of the earlier requests' history.
    history_start: usize,
    /// First kept message of this run's steps (at most the task's index + 1: none dropped).
    loop_start: usize,
}

impl ContextBudget {
    pub fn new(max_tokens: u64) -> Self {
        Self {
            max_tokens,
            tokens_per_byte: 1.0 / BYTES_PER_TOKEN as f64,
            history_start: 0,
            loop_start: 0,
        }
    }

    pub fn max_tokens(&self) -> u64 {
        self.max_tokens
    }

    /// Estimated tokens of `request`.
    pub fn estimate(&self, request: &ChatRequest) -> u64 {
        self.tokens(request_bytes(request))
    }

    /// Learns from the input tokens the provider reported for `request` (0: none reported).
    pub fn observe(&mut self, request: &ChatRequest, reported_input_tokens: u64) {
        let bytes = request_bytes(request);
        if reported_input_tokens == 0 || bytes == 0 {
            return;
        }
        let measured = reported_input_tokens as f64 / bytes as f64;
        // Only ever more conservative than the fallback: a provider that under-reports (or a
        // fake that reports nothing real) must not let requests grow past the estimate.
        self.tokens_per_byte = measured.max(1.0 / BYTES_PER_TOKEN as f64);
    }

    fn tokens(&self, bytes: usize) -> u64 {
        (bytes as f64 * self.tokens_per_byte).ceil() as u64
    }

    fn target_bytes(&self) -> usize {
        (self.max_tokens as f64 * FILL_RATIO / self.tokens_per_byte) as usize
    }

    /// Cuts the results in `conversation[..seen]` (what the last request carried) to their
    /// head and tail: the model has read them.
    pub fn forget_seen_results(conversation: &mut [ChatMessage], seen: usize) {
        let seen = seen.min(conversation.len());
        for message in &mut conversation[..seen] {
            if let ChatMessage::ToolResult { content, .. } = message {
                cut_content(content, SEEN_RESULT_KEEP_BYTES);
            }
        }
    }

    /// The request for the next step: `conversation` with older turns dropped (and too-large
    /// fresh results cut) until it fits. `task` is the index of this run's request, which is
    /// always kept. Dropping goes down to three quarters of the target at once, and a dropped
    /// turn stays dropped: the kept prefix, and so the provider's prompt cache, holds for
    /// several steps between drops.
    pub fn fit(
        &mut self,
        system: &str,
        tools: &[ToolSpec],
        conversation: &[ChatMessage],
        task: usize,
    ) -> Result<ChatRequest, ContextOverflow> {
        let mut request = ChatRequest {
            system: system.to_owned(),
            messages: Vec::new(),
            tools: tools.to_vec(),
        };
        let target = self.target_bytes();
        let low_water = target / 4 * 3;
        let fixed = request_bytes(&request) + NOTE_BYTES;
        let task = task.min(conversation.len().saturating_sub(1));
        let sizes: Vec<usize> = conversation.iter().map(message_bytes).collect();
        let mut history_start = self.history_start.min(task);
        let mut loop_start = self
            .loop_start
            .clamp(task + 1, conversation.len().max(task + 1));
        let kept_bytes =
            |range: std::ops::Range<usize>| sizes.get(range).map_or(0, |s| s.iter().sum::<usize>());
        let mut total =
            fixed + kept_bytes(history_start..task + 1) + kept_bytes(loop_start..sizes.len());

        if total > target {
            // Earlier requests' messages, oldest first; the kept part starts with a user turn.
            while history_start < task
                && (total > low_water
                    || !matches!(conversation[history_start], ChatMessage::User { .. }))
            {
                total -= sizes[history_start];
                history_start += 1;
            }
            // Then this run's oldest steps, never the newest one.
            let step_starts: Vec<usize> = (loop_start + 1..conversation.len())
                .filter(|&i| matches!(conversation[i], ChatMessage::Assistant { .. }))
                .collect();
            for &next in &step_starts {
                if total <= low_water {
                    break;
                }
                total -= sizes[loop_start..next].iter().sum::<usize>();
                loop_start = next;
            }
            if (history_start, loop_start) != (self.history_start, self.loop_start) {
                tracing::info!(
                    dropped_history = history_start,
                    dropped_steps_to = loop_start,
                    budget = self.max_tokens,
                    "older turns dropped to fit the context budget"
                );
            }
            self.history_start = history_start;
            self.loop_start = loop_start;
        }
        let dropped = history_start + (loop_start - (task + 1));
        let mut messages = Vec::with_capacity(conversation.len() - dropped);
        messages.extend_from_slice(&conversation[history_start..task]);
        if let Some(task_message) = conversation.get(task) {
            messages.push(with_note(task_message, dropped));
        }
        messages.extend_from_slice(conversation.get(loop_start..).unwrap_or_default());

        // Still too large: the newest results, unseen, get an equal share of what is left, and
        // the newest model turn's own large arguments (a whole file written) and long notes
        // (a build check's errors) are cut too.
        if total > target {
            for message in &mut messages {
                match message {
                    ChatMessage::User { text } => {
                        *text = head_and_tail(std::mem::take(text), LONG_NOTE_KEEP_BYTES);
                    }
                    _ if message_bytes(message) > SEEN_RESULT_KEEP_BYTES * 2 => {
                        cut_model_turn(message)
                    }
                    _ => {}
                }
            }
            let results = messages
                .iter()
                .filter(|m| matches!(m, ChatMessage::ToolResult { .. }))
                .count();
            let others: usize = messages
                .iter()
                .filter(|m| !matches!(m, ChatMessage::ToolResult { .. }))
                .map(message_bytes)
                .sum();
            let room = target.saturating_sub(fixed + others);
            let share = (room / results.max(1)).saturating_sub(RESULT_FRAMING_BYTES);
            for message in &mut messages {
                if let ChatMessage::ToolResult { content, .. } = message {
                    cut_content(content, share.max(MIN_RESULT_BYTES));
                }
            }
        }
        request.messages = messages;
        let needed = self.estimate(&request);
        if needed as f64 > self.max_tokens as f64 * FILL_RATIO {
            return Err(ContextOverflow {
                needed,
                budget: self.max_tokens,
            });
        }
        Ok(request)
    }
}

/// Room reserved for the note that turns were dropped.
const NOTE_BYTES: usize = 300;
/// What is kept of a long user turn when nothing else helps.
const LONG_NOTE_KEEP_BYTES: usize = 8_000;
/// A result's name, id and JSON framing.
const RESULT_FRAMING_BYTES: usize = 120;
/// A cut result keeps at least this much, marker included.
const MIN_RESULT_BYTES: usize = 400;

fn with_note(task: &ChatMessage, dropped: usize) -> ChatMessage {
    match task {
        ChatMessage::User { text } if dropped > 0 => ChatMessage::User {
            text: format!(
                "{text}\n\n[Note: {dropped} older messages of this conversation were left out to stay within the context budget. Files written so far are in the project: use listFiles and readFiles to see them.]"
            ),
        },
        other => other.clone(),
    }
}

/// A model turn with long strings in its text and call arguments cut. It is rebuilt from the
/// neutral fields: the provider's verbatim copy would still hold them (Gemini then gets its
/// documented placeholder signature).
fn cut_model_turn(message: &mut ChatMessage) {
    if let ChatMessage::Assistant {
        text,
        tool_calls,
        raw,
    } = message
    {
        *raw = None;
        *text = head_and_tail(std::mem::take(text), SEEN_RESULT_KEEP_BYTES);
        for call in tool_calls {
            cut_strings(&mut call.arguments);
        }
    }
}

fn cut_strings(value: &mut Value) {
    match value {
        Value::String(s) if s.len() > SEEN_RESULT_KEEP_BYTES => {
            *s = head_and_tail(std::mem::take(s), SEEN_RESULT_KEEP_BYTES);
        }
        Value::Array(items) => items.iter_mut().for_each(cut_strings),
        Value::Object(fields) => fields.values_mut().for_each(cut_strings),
        _ => {}
    }
}

/// Cuts `content` (as JSON text) to `keep` bytes: head and tail around a marker. Content that
/// fits is left as it is.
fn cut_content(content: &mut Value, keep: usize) {
    let text = match &*content {
        Value::String(s) if s.len() <= keep => return,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.len() > keep {
        *content = Value::String(head_and_tail(text, keep));
    }
}

/// `text` cut to about `keep` bytes: its head and tail around a marker (as command output is).
fn head_and_tail(text: String, keep: usize) -> String {
    if text.len() <= keep {
        return text;
    }
    let mut capped = CappedText::new(keep);
    capped.push(&text);
    capped.finish().0
}

/// Bytes of `request` as JSON, about what a provider sends of it.
fn request_bytes(request: &ChatRequest) -> usize {
    let tools = serde_json::to_string(&request.tools).map_or(0, |s| s.len());
    request.system.len() + tools + request.messages.iter().map(message_bytes).sum::<usize>()
}

/// Bytes of one message as a provider sends it: a model turn is echoed from `raw` when there
/// is one, else built from its text and calls.
fn message_bytes(message: &ChatMessage) -> usize {
    const FRAMING: usize = 40;
    let json_len = |value: &Value| value.to_string().len();
    FRAMING
        + match message {
            ChatMessage::User { text } => json_len(&Value::String(text.clone())),
            ChatMessage::Assistant { raw: Some(raw), .. } => json_len(raw),
            ChatMessage::Assistant {
                text, tool_calls, ..
            } => {
                text.len()
                    + tool_calls
                        .iter()
                        .map(|c| c.id.len() + c.name.len() + json_len(&c.arguments) + FRAMING)
                        .sum::<usize>()
            }
            ChatMessage::ToolResult {
                call_id,
                name,
                content,
                ..
            } => call_id.len() + name.len() + json_len(content),
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::provider::ToolCall;
    use serde_json::json;

    fn user(text: &str) -> ChatMessage {
        ChatMessage::User { text: text.into() }
    }

    fn step(i: usize, result_bytes: usize) -> [ChatMessage; 2] {
        [
            ChatMessage::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: format!("c{i}"),
                    name: "terminal".into(),
                    arguments: json!({ "command": "cat big" }),
                }],
                raw: None,
            },
            ChatMessage::ToolResult {
                call_id: format!("c{i}"),
                name: "terminal".into(),
                content: json!({ "stdout": "x".repeat(result_bytes), "exitCode": 0 }),
                is_error: false,
            },
        ]
    }

    #[test]
    fn head_and_tail_keep_both_ends_on_char_boundaries() {
        let text = format!("{}{}{}", "é".repeat(1000), "middle", "ü".repeat(1000));
        let cut = head_and_tail(text.clone(), 100);
        assert!(cut.starts_with("éé") && cut.ends_with("üü"), "{cut}");
        assert!(cut.contains("bytes omitted"));
        assert!(cut.len() < 300);
        let mut short = json!({ "stdout": "short" });
        cut_content(&mut short, 100);
        assert_eq!(
            short,
            json!({ "stdout": "short" }),
            "what fits keeps its shape"
        );
    }

    #[test]
    fn seen_results_are_cut_and_unseen_kept() {
        let mut conversation = vec![user("task")];
        conversation.extend(step(0, 10_000));
        conversation.extend(step(1, 10_000));
        ContextBudget::forget_seen_results(&mut conversation, 3);
        let size = |m: &ChatMessage| match m {
            ChatMessage::ToolResult { content, .. } => content.to_string().len(),
            _ => 0,
        };
        assert!(size(&conversation[2]) < SEEN_RESULT_KEEP_BYTES + 200);
        assert!(size(&conversation[4]) > 10_000);
    }

    #[test]
    fn old_turns_are_dropped_whole_with_a_note_and_the_task_stays() {
        let mut budget = ContextBudget::new(MIN_CONTEXT_TOKENS);
        let mut conversation = vec![user("old request"), user("task")];
        for i in 0..20 {
            conversation.extend(step(i, 1_500));
        }
        let request = budget.fit("system", &[], &conversation, 1).unwrap();
        assert!(budget.estimate(&request) <= MIN_CONTEXT_TOKENS);
        let ChatMessage::User { text } = &request.messages[0] else {
            panic!("the task leads: {:?}", request.messages[0]);
        };
        assert!(
            text.starts_with("task") && text.contains("older messages"),
            "{text}"
        );
        assert!(matches!(request.messages[1], ChatMessage::Assistant { .. }));
        assert_eq!(request.messages.last(), conversation.last());
    }

    #[test]
    fn dropped_turns_stay_dropped_so_the_kept_prefix_holds_between_drops() {
        let mut budget = ContextBudget::new(MIN_CONTEXT_TOKENS);
        let mut conversation = vec![user("task")];
        let mut first_kept = Vec::new();
        for i in 0..40 {
            conversation.extend(step(i, 1_500));
            let request = budget.fit("system", &[], &conversation, 0).unwrap();
            assert!(budget.estimate(&request) <= MIN_CONTEXT_TOKENS);
            first_kept.push(request.messages[1].clone());
        }
        first_kept.dedup();
        assert!(
            first_kept.len() < 20,
            "the oldest kept turn moves in jumps, not every step: {}",
            first_kept.len()
        );
    }

    #[test]
    fn a_fresh_result_larger_than_the_room_is_cut() {
        let mut budget = ContextBudget::new(MIN_CONTEXT_TOKENS);
        let mut conversation = vec![user("task")];
        conversation.extend(step(0, 100_000));
        let request = budget.fit("system", &[], &conversation, 0).unwrap();
        assert!(budget.estimate(&request) <= MIN_CONTEXT_TOKENS);
        assert!(
            matches!(&request.messages[2], ChatMessage::ToolResult { content, .. }
            if content.as_str().is_some_and(|s| s.contains("bytes omitted")))
        );
    }

    #[test]
    fn a_huge_file_written_by_the_newest_turn_is_cut_to_fit() {
        let mut budget = ContextBudget::new(MIN_CONTEXT_TOKENS);
        let conversation = vec![
            user("task"),
            ChatMessage::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c".into(),
                    name: "createOrUpdateFiles".into(),
                    arguments: json!({ "files": [{ "path": "big.txt", "content": "a".repeat(500_000) }] }),
                }],
                raw: Some(json!({ "role": "model", "parts": [{ "text": "a".repeat(500_000) }] })),
            },
            ChatMessage::ToolResult {
                call_id: "c".into(),
                name: "createOrUpdateFiles".into(),
                content: json!({ "written": ["big.txt"] }),
                is_error: false,
            },
        ];
        let request = budget.fit("system", &[], &conversation, 0).unwrap();
        assert!(budget.estimate(&request) <= MIN_CONTEXT_TOKENS);
        let ChatMessage::Assistant {
            raw, tool_calls, ..
        } = &request.messages[1]
        else {
            panic!("{:?}", request.messages[1]);
        };
        assert_eq!(raw, &None);
        assert_eq!(tool_calls[0].arguments["files"][0]["path"], "big.txt");
    }

    #[test]
    fn a_long_build_check_note_is_cut_to_fit() {
        let mut budget = ContextBudget::new(MIN_CONTEXT_TOKENS);
        let mut conversation = vec![user("task")];
        conversation.extend(step(0, 100));
        conversation.push(user(&"error TS2322\n".repeat(3_000)));
        let request = budget.fit("system", &[], &conversation, 0).unwrap();
        assert!(budget.estimate(&request) <= MIN_CONTEXT_TOKENS);
        assert!(
            matches!(request.messages.last(), Some(ChatMessage::User { text })
            if text.starts_with("error TS2322") && text.contains("bytes omitted"))
        );
    }

    #[test]
    fn reported_usage_makes_the_measure_stricter_never_looser() {
        let request = ChatRequest {
            system: "s".repeat(4_000),
            messages: vec![],
            tools: vec![],
        };
        let mut budget = ContextBudget::new(10_000);
        let bytes_over_four = budget.estimate(&request);
        assert!(
            (1_000..1_010).contains(&bytes_over_four),
            "{bytes_over_four}"
        );
        budget.observe(&request, 10);
        assert_eq!(budget.estimate(&request), bytes_over_four);
        budget.observe(&request, 2 * bytes_over_four);
        assert!(budget.estimate(&request).abs_diff(2 * bytes_over_four) <= 1);
    }

    #[test]
    fn an_empty_conversation_fits() {
        let request = ContextBudget::new(MIN_CONTEXT_TOKENS)
            .fit("system", &[], &[], 0)
            .unwrap();
        assert!(request.messages.is_empty());
    }

    #[test]
    fn a_system_prompt_over_the_budget_is_an_error() {
        let mut budget = ContextBudget::new(MIN_CONTEXT_TOKENS);
        let err = budget
            .fit(&"s".repeat(100_000), &[], &[user("task")], 0)
            .unwrap_err();
        assert_eq!(err.budget, MIN_CONTEXT_TOKENS);
    }
}
