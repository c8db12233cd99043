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
}
