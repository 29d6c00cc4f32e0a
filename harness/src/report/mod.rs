//! Outputs (SPEC §11): the tables — `scores.csv` (one row per model × attack × sample),
//! `summary.csv` (one row per model × attack × category × metric), `memorization.csv`,
//! `utility.csv`, `blocks.csv`, `comparisons.csv`, all tidy long format with a fixed column
//! order — and the report built from them.
//!
//! The modules are layered; each uses only those below it:
//! - [`seeds`]: a multi-seed study's summary across its seeds' runs (`seeds.csv`, the
//!   seed-spread figure, the study's page);
//! - [`render`]: loads a run directory, derives the summary and comparison rows, and has
//!   the layer below draw and write the rest;
//! - [`figures`] and `html`: the figures and the page, each drawn from a [`ReportData`],
//!   the figures in the one style of [`style`] (palette, markers, legends, paper sizes);
//! - [`defenses`]: the defended models set against their undefended twins
//!   (`defenses.csv`, what the privacy–utility figure of the defenses draws);
//! - [`data`]: [`ReportData`] (a run's models and tables) with the questions asked of it,
//!   and a drawn [`Figure`];
//! - [`tables`]: the row types of every CSV file, model [`Role`]s, and CSV writing and
//!   reading.

pub mod data;
pub mod defenses;
pub mod figures;
mod html;
pub mod render;
pub mod seeds;
pub mod style;
pub mod tables;

pub use data::{Figure, ModelEntry, ReportData, Skipped};
pub use render::{Rendered, aggregate_rows, comparisons, load, render_run, summarize, summary_rows};
pub use tables::{
    BLOCKS_HEADER, BlockRow, CANARIES_HEADER, COMPARISONS_HEADER, ComparisonRow, DefenseRecord, EXPOSURE_HEADER, ExposureRow, MEMORIZATION_HEADER, ModelRole, ReportError, Role, SCORES_HEADER,
    SEEDS_HEADER, SUMMARY_HEADER, SeedRow, ScoreRow, SummaryRow, TrainingRecord, UTILITY_HEADER, UtilityRow, fmt_f64, read_blocks, read_canaries, read_exposure, read_memorization, read_scores, read_utility,
    write_blocks, write_comparisons, write_exposure, write_memorization, write_scores, write_summary, write_utility,
};
