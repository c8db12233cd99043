//! Price table used for cost estimates (US dollars per 1M tokens).

use super::TokenUsage;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelPrice {
    /// Dollars per 1M input (prompt) tokens.
    pub input_per_mtok: f64,
    /// Dollars per 1M output tokens (thinking tokens included).
    pub output_per_mtok: f64,
}

impl ModelPrice {
    pub const FREE: Self = Self {
        input_per_mtok: 0.0,
        output_per_mtok: 0.0,
    };

    pub fn cost_usd(&self, usage: TokenUsage) -> f64 {
        (usage.input_tokens as f64 * self.input_per_mtok
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// Published paid-tier list prices of the Gemini models we know (prompts up to 200k tokens);
/// `None` for anything else.
pub fn gemini_price(model: &str) -> Option<ModelPrice> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let (input, output) = match model {
        "gemini-2.5-pro" => (1.25, 10.0),
        "gemini-2.5-flash" => (0.30, 2.50),
        "gemini-2.5-flash-lite" => (0.10, 0.40),
        "gemini-2.0-flash" => (0.10, 0.40),
        _ => return None,
    };
    Some(ModelPrice {
        input_per_mtok: input,
        output_per_mtok: output,
    })
}

/// List prices of the Claude models we know, by model id or its dated snapshot
/// (`claude-sonnet-4-5-20250929`); `None` for anything else. Cache writes (1.25x) and reads
/// (0.1x) are billed at the plain input price here: the estimate errs high.
pub fn anthropic_price(model: &str) -> Option<ModelPrice> {
    const FAMILIES: [(&str, f64, f64); 8] = [
        ("claude-opus-4-5", 5.0, 25.0),
        ("claude-opus-4-1", 15.0, 75.0),
        ("claude-opus-4", 15.0, 75.0),
        ("claude-sonnet-4-5", 3.0, 15.0),
        ("claude-sonnet-4", 3.0, 15.0),
        ("claude-haiku-4-5", 1.0, 5.0),
        ("claude-3-7-sonnet", 3.0, 15.0),
        ("claude-3-5-haiku", 0.80, 4.0),
    ];
    let is_snapshot = |rest: &str| {
        rest == "latest" || (rest.len() == 8 && rest.chars().all(|c| c.is_ascii_digit()))
    };
    FAMILIES
        .iter()
        .find(|(family, _, _)| {
            model == *family
                || model
                    .strip_prefix(family)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(is_snapshot)
        })
        .map(|&(_, input, output)| ModelPrice {
            input_per_mtok: input,
            output_per_mtok: output,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_models() {
        let usage = TokenUsage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
        };
        assert!((gemini_price("gemini-2.5-flash").unwrap().cost_usd(usage) - 2.80).abs() < 1e-9);
        assert!(
            (gemini_price("models/gemini-2.5-pro")
                .unwrap()
                .cost_usd(usage)
                - 11.25)
                .abs()
                < 1e-9
        );
        assert!(gemini_price("gemini-2.0-flash").is_some());
        assert_eq!(gemini_price("llama3"), None);
        assert_eq!(ModelPrice::FREE.cost_usd(usage), 0.0);
    }

    #[test]
    fn claude_models_and_snapshots() {
        let usage = TokenUsage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
        };
        let cost = |model: &str| anthropic_price(model).map(|p| p.cost_usd(usage));
        assert_eq!(cost("claude-sonnet-4-5"), Some(18.0));
        assert_eq!(cost("claude-sonnet-4-5-20250929"), Some(18.0));
        assert_eq!(cost("claude-opus-4-5-20251101"), Some(30.0));
        assert_eq!(cost("claude-opus-4-20250514"), Some(90.0));
        assert_eq!(cost("claude-3-7-sonnet-latest"), Some(18.0));
        assert_eq!(cost("claude-sonnet-4-5-evil"), None);
        assert_eq!(cost("claude-opus-4-6"), None, "not read as claude-opus-4");
        assert_eq!(cost("gpt-4o"), None);
    }
}
