//! `report.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched)
//! with the run's headline tables, every figure and the manifest.

use std::fmt::Write;

use super::data::{Figure, ModelEntry, ReportData, Skipped};
use super::tables::{ComparisonRow, SeedRow};

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn num(v: f64, digits: usize) -> String {
    if v.is_finite() { format!("{v:.digits$}") } else { "–".into() }
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}\
th{background:#f3f6fa}td:first-child,th:first-child{text-align:left}figure{margin:1.5em 0}figcaption{margin-bottom:.4em;max-width:60em}\
figure svg{max-width:100%;height:auto}pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:.8em}.note{color:#666}";

/// The whole page.
pub fn page(d: &ReportData, comparisons: &[ComparisonRow], figures: &[Figure], skipped: &[Skipped], manifest: &str) -> String {
    let mut h = String::new();
    let _ = write!(h, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kdharness report</title><style>{STYLE}</style></head><body>");
    let _ = write!(h, "<h1>kdharness report</h1><p class=\"note\">Members are the positive class; AUC 0.5 is chance. Intervals are 95% stratified bootstrap intervals.</p>");
    auc_table(&mut h, d);
    memorization_table(&mut h, d);
    exposure_table(&mut h, d);
    defenses_table(&mut h, d);
    comparisons_table(&mut h, comparisons);
    figures_section(&mut h, figures, skipped);
    let _ = writeln!(h, "<h2>How this run was made (manifest.json)</h2><pre>{}</pre></body></html>", esc(manifest));
    h
}

/// AUC by model and attack with intervals, and each model's mean over attacks.
fn auc_table(h: &mut String, d: &ReportData) {
    let attacks = d.attacks();
    if attacks.is_empty() {
        return;
    }
    h.push_str("<h2>Leakage and utility: AUC by model and attack, beside ROUGE-L and held-out loss</h2>");
    backs(h, &["fig0_privacy_vs_utility", "fig1_student_auc", "fig2_baseline_auc", "fig4_auc_by_method"]);
    // Each size's students share one budget; the sizes may differ.
    let mut budgets: Vec<String> = Vec::new();
    for students in d.students_by_size() {
        for steps in students.iter().filter_map(|m| d.training.get(&m.name)).map(|t| t.steps.to_string()) {
            if !budgets.contains(&steps) {
                budgets.push(steps);
            }
        }
    }
    if !budgets.is_empty() {
        let _ = write!(
            h,
            "<p class=\"note\">Training budget: {} optimiser steps per student{}. Held-out loss: response cross-entropy (nats) on the public validation share. <b>did not learn</b>: ROUGE-L more than {} points below the No-KD student of its size.</p>",
            budgets.join(" / "),
            if budgets.len() > 1 { " (by size)" } else { "" },
            num(d.learn_margin.unwrap_or(super::data::DEFAULT_LEARN_MARGIN), 1)
        );
    }
    h.push_str("<table><tr><th>model</th><th>role</th>");
    for a in &attacks {
        let _ = write!(h, "<th>{}</th>", esc(a));
    }
    h.push_str("<th>mean</th><th>ROUGE-L</th><th>held-out loss</th><th>steps</th></tr>");
    for m in d.models.iter().filter(|m| d.scores.iter().any(|s| s.model == m.name)) {
        let role = if m.role.kd_method.is_empty() { m.role.role.to_string() } else { format!("{} ({}, {})", m.role.role, m.role.kd_method, m.role.student) };
        let _ = write!(h, "<tr><td>{}</td><td>{}</td>", esc(&m.name), esc(&role));
        for a in &attacks {
            match d.auc_row(&m.name, a) {
                Some(r) => {
                    let ci = r.ci.map(|(lo, hi)| format!(" <span class=\"note\">[{lo:.2}, {hi:.2}]</span>")).unwrap_or_default();
                    let _ = write!(h, "<td>{}{ci}</td>", num(r.value, 3));
                }
                None => h.push_str("<td>–</td>"),
            }
        }
        let flag = if d.metric(&m.name, "did_not_learn") == 1.0 { " <b>did not learn</b>" } else { "" };
        let training = d.training.get(&m.name);
        let _ = write!(
            h,
            "<td><b>{}</b></td><td>{}{flag}</td><td>{}</td><td>{}</td></tr>",
            num(d.mean_auc(&m.name), 3),
            num(d.metric(&m.name, "rouge_l"), 1),
            training.map_or("–".into(), |t| num(t.heldout_ce, 3)),
            training.map_or("–".into(), |t| t.steps.to_string()),
        );
    }
    h.push_str("</table>");
}

/// The note under a table's heading naming the figures it backs (links to them).
fn backs(h: &mut String, figures: &[&str]) {
    let links: Vec<String> = figures.iter().map(|f| format!("<a href=\"#{f}\">{f}</a>")).collect();
    let _ = write!(h, "<p class=\"note\">Backs {}.</p>", links.join(", "));
}

/// Memorization rates and ROUGE-L of every model with memorization results.
fn memorization_table(h: &mut String, d: &ReportData) {
    let memorized: Vec<&ModelEntry> = d.models.iter().filter(|m| d.metric(&m.name, "mem_rate_member").is_finite()).collect();
    if memorized.is_empty() {
        return;
    }
    h.push_str("<h2>Memorization and utility</h2>");
    backs(h, &["fig6_membership_vs_memorization", "fig7_memorization", "fig8_canary_likelihood"]);
    h.push_str("<table><tr><th>model</th><th>member rate</th><th>non-member rate</th><th>gap</th><th>extraction (members)</th><th>member rate (per sample)</th><th>ROUGE-L</th></tr>");
    for m in memorized {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.name),
            num(d.metric(&m.name, "mem_rate_member"), 3),
            num(d.metric(&m.name, "mem_rate_nonmember"), 3),
            num(d.metric(&m.name, "mem_gap"), 3),
            num(d.metric(&m.name, "exact_extraction_member"), 3),
            num(d.metric(&m.name, "mem_rate_member_per_sample"), 3),
            num(d.metric(&m.name, "rouge_l"), 1),
        );
    }
    h.push_str("</table>");
}

/// Mean canary exposure per model and repetition count (`exposure.csv`).
fn exposure_table(h: &mut String, d: &ReportData) {
    if d.exposure.is_empty() {
        return;
    }
    let mut reps: Vec<usize> = d.exposure.iter().map(|r| r.repetitions).collect();
    reps.sort();
    reps.dedup();
    let max = d.exposure.iter().map(|r| r.max_exposure).fold(0.0f64, f64::max);
    let _ = write!(h, "<h2>Canary exposure</h2><p class=\"note\">Mean exposure (bits, Carlini et al. 2019: log₂|R| − log₂ rank of the secret among the {max:.1}-bit space of its format) of the canaries repeated that often among the members.</p>");
    backs(h, &["fig9_canary_exposure"]);
    h.push_str("<table><tr><th>model</th>");
    for r in &reps {
        let _ = write!(h, "<th>×{r}</th>");
    }
    h.push_str("</tr>");
    for m in d.models.iter().filter(|m| d.exposure.iter().any(|r| r.model == m.name)) {
        let _ = write!(h, "<tr><td>{}</td>", esc(&m.name));
        for r in &reps {
            let values: Vec<f64> = d.exposure.iter().filter(|x| x.model == m.name && x.repetitions == *r).map(|x| x.exposure).collect();
            let mean = if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 };
            let _ = write!(h, "<td>{}</td>", num(mean, 1));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// The rows of `defenses.csv`: each defended model beside its undefended twin.
fn defenses_table(h: &mut String, d: &ReportData) {
    let rows = super::defenses::rows(d);
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<h2>Defenses: leakage against utility</h2><p class=\"note\">Each defended model below its undefended twin (defense <i>none</i>); Δ is the change against the twin. <b>best</b>: no model of its group leaks less (best attack AUC) at no less ROUGE-L. ε: the (ε, δ)-DP guarantee of a DP-SGD teacher, which its students inherit. Backs figure <a href=\"#{0}\">{0}</a> (defenses.csv).</p>",
        super::defenses::FIGURE
    );
    h.push_str("<table><tr><th>model</th><th>defense</th><th>params</th><th>best attack</th><th>best AUC</th><th>Δ AUC</th><th>member mem. rate</th><th>Δ mem.</th><th>ROUGE-L</th><th>Δ ROUGE-L</th><th>samples dropped</th><th>ε (δ)</th><th>best</th></tr>");
    for r in &rows {
        let record = r.record.as_ref();
        let params = record.map(|x| x.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")).unwrap_or_default();
        let dropped = record.and_then(|x| Some(format!("{} / {}", x.removed_samples?, x.teacher_samples?))).unwrap_or_else(|| "–".into());
        let eps = record.and_then(|x| Some(format!("{} ({:.0e})", num(x.epsilon?, 2), x.delta?))).unwrap_or_else(|| "–".into());
        let delta = |v: f64, digits| if record.is_some() { num(v, digits) } else { "–".into() };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.model),
            esc(record.map_or("none", |x| x.defense.as_str())),
            esc(&params),
            esc(&r.best.0),
            num(r.best.1, 3),
            delta(r.deltas.0, 3),
            num(r.mem_rate_member, 3),
            delta(r.deltas.1, 3),
            num(r.rouge_l, 1),
            delta(r.deltas.2, 1),
            dropped,
            esc(&eps),
            if r.best_tradeoff { "✓" } else { "" },
        );
    }
    h.push_str("</table>");
}

/// The rows of `comparisons.csv`.
fn comparisons_table(h: &mut String, comparisons: &[ComparisonRow]) {
    if comparisons.is_empty() {
        return;
    }
    h.push_str("<h2>Statistical comparisons</h2><p class=\"note\">paired_auc: AUC(a) − AUC(b) on the same samples (paired bootstrap): the teacher against every model for every attack, and every two students of one size against each other for the loss attack; spearman: rank correlation across models.</p>");
    h.push_str("<table><tr><th>kind</th><th>a</th><th>b</th><th>attack</th><th>value</th><th>95% interval</th><th>p</th><th>n</th></tr>");
    for c in comparisons {
        let ci = c.ci.map(|(lo, hi)| format!("[{lo:.3}, {hi:.3}]")).unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{ci}</td><td>{}</td><td>{}</td></tr>",
            c.kind,
            esc(&c.a),
            esc(&c.b),
            esc(&c.attack),
            num(c.value, 3),
            num(c.p_value, 3),
            c.n
        );
    }
    h.push_str("</table>");
}

/// Every figure inline, then the ones not drawn and why.
fn figures_section(h: &mut String, figures: &[Figure], skipped: &[Skipped]) {
    h.push_str("<h2>Figures</h2>");
    for f in figures {
        // The SVG is ours (plotters output); drop its XML declaration to inline it.
        let svg = f.svg.trim_start_matches(|c| c != '<').trim_start();
        let svg = if svg.starts_with("<?xml") { svg.split_once("?>").map_or(svg, |(_, rest)| rest) } else { svg };
        let _ = write!(h, "<figure id=\"{}\"><figcaption><b>{}.</b> {}</figcaption>{}</figure>", f.name, esc(&f.title), esc(f.caption), svg);
    }
    if !skipped.is_empty() {
        h.push_str("<p class=\"note\">Not drawn: ");
        let items: Vec<String> = skipped.iter().map(|(n, why)| format!("{n} ({})", esc(why))).collect();
        h.push_str(&items.join("; "));
        h.push_str("</p>");
    }
}

/// The page of a multi-seed study: AUC by model and attack as the mean ± sd over the seeds
/// with each seed's value and interval, links to the seeds' own reports, the seed-spread
/// figure and the study's manifest.
pub fn seeds_page(rows: &[SeedRow], seeds: &[u64], figures: &[Figure], manifest: &str) -> String {
    let mut h = String::new();
    let _ = write!(h, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kdharness report: {} seeds</title><style>{STYLE}</style></head><body>", seeds.len());
    let _ = write!(h, "<h1>kdharness report: {} seeds</h1>", seeds.len());
    let links: Vec<String> = seeds.iter().map(|s| format!("<a href=\"seed-{s}/report.html\">seed {s}</a>")).collect();
    let _ = write!(
        h,
        "<p class=\"note\">The study ran once per seed; each seed's run is a run directory of its own with its full report: {}. Below, every cell is the mean AUC over the seeds ± their sample standard deviation, with each seed's AUC and 95% bootstrap interval under it (seeds.csv has every metric).</p>",
        links.join(", ")
    );
    let auc: Vec<&SeedRow> = rows.iter().filter(|r| r.metric == "auc").collect();
    let mut attacks: Vec<&str> = Vec::new();
    let mut models: Vec<&str> = Vec::new();
    for r in &auc {
        if !attacks.contains(&r.attack.as_str()) {
            attacks.push(&r.attack);
        }
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
    }
    if !auc.is_empty() {
        h.push_str("<h2>AUC across seeds</h2><table><tr><th>model</th>");
        for a in &attacks {
            let _ = write!(h, "<th>{}</th>", esc(a));
        }
        h.push_str("</tr>");
        for m in &models {
            let _ = write!(h, "<tr><td>{}</td>", esc(m));
            for a in &attacks {
                let of = |seed: Option<u64>| auc.iter().find(|r| r.model == *m && r.attack == *a && r.seed == seed);
                let mean = of(None).map_or("–".into(), |r| format!("{}{}", num(r.value, 3), r.sd.map_or(String::new(), |sd| format!(" ± {}", num(sd, 3)))));
                let each: Vec<String> = seeds
                    .iter()
                    .filter_map(|&s| of(Some(s)).map(|r| format!("{}{}", num(r.value, 3), r.ci.map_or(String::new(), |(l, u)| format!(" [{}, {}]", num(l, 3), num(u, 3))))))
                    .collect();
                let _ = write!(h, "<td><b>{mean}</b><br><span class=\"note\">{}</span></td>", each.join("<br>"));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
    figures_section(&mut h, figures, &[]);
    let _ = writeln!(h, "<h2>How this study was made (manifest.json)</h2><pre>{}</pre></body></html>", esc(manifest));
    h
}
