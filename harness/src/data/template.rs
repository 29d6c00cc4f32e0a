//! Prompt templates. Only the response is scored; the prompt is context.

use super::Record;

/// How a record becomes a prompt (SPEC §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// The paper's Alpaca template (with an Input section iff the context is non-empty).
    #[default]
    Alpaca,
    /// ChatML as SmolLM2-Instruct uses it: one user turn, then the assistant header.
    Chatml,
    /// The instruction, the context, and a blank line; no boilerplate.
    Plain,
}

impl Template {
    /// The prompt text of `record`.
    pub fn prompt(self, record: &Record) -> String {
        let (instruction, context) = (&record.instruction, &record.context);
        match self {
            Template::Alpaca if context.is_empty() => format!(
                "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
            ),
            Template::Alpaca => format!(
                "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:\n"
            ),
            Template::Chatml if context.is_empty() => {
                format!("<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n")
            }
            Template::Chatml => format!("<|im_start|>user\n{instruction}\n\n{context}<|im_end|>\n<|im_start|>assistant\n"),
            Template::Plain if context.is_empty() => format!("{instruction}\n\n"),
            Template::Plain => format!("{instruction}\n\n{context}\n\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Origin;

    fn record(context: &str) -> Record {
        Record {
            id: "m0".into(),
            instruction: "Name a colour.".into(),
            context: context.into(),
            response: "Blue.".into(),
            category: "open_qa".into(),
            origin: Origin { file: "f".into(), line: 1 },
        }
    }

    #[test]
    fn alpaca_matches_the_paper_text() {
        assert_eq!(
            Template::Alpaca.prompt(&record("")),
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n"
        );
        assert_eq!(
            Template::Alpaca.prompt(&record("Sky.")),
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nName a colour.\n\n### Input:\nSky.\n\n### Response:\n"
        );
        assert_eq!(Template::Chatml.prompt(&record("")), "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(Template::Plain.prompt(&record("Sky.")), "Name a colour.\n\nSky.\n\n");
    }
}
