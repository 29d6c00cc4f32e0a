//! The figures of SPEC §11 (a light major grid only, no minor grid), drawn with plotters
//! into PNG and SVG with the bundled
//! DejaVu Sans font (ab_glyph; no fontconfig). Each figure is one function drawing on any
//! plotters backend; [`render_all`] draws each twice (PNG for papers and slides, SVG for
//! the HTML report) and skips, with a reason, a figure whose data the run does not have.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::CoordTranslate;
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::{Figure, ModelEntry, ReportData, Skipped};
use super::tables::{Role, SeedRow};

const FONT: &str = "sans-serif";
static FONTS: Once = Once::new();

/// Registers the bundled font once (plotters' ab_glyph backend looks fonts up by name).
fn register_fonts() {
    FONTS.call_once(|| {
        let regular: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        let bold: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");
        // Both files are compiled in; a failure here is a broken build, not user input.
        for (style, bytes) in [(FontStyle::Normal, regular), (FontStyle::Bold, bold)] {
            if plotters::style::register_font(FONT, style, bytes).is_err() {
                panic!("the bundled DejaVu Sans font does not parse");
            }
        }
    });
}

/// Ten well-separated colours (matplotlib's tab10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A sequential colour map (white → blue → dark blue) over [0, 1].
fn colormap(t: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 4] =
        [(0.0, (247.0, 251.0, 255.0)), (0.35, (158.0, 202.0, 225.0)), (0.7, (49.0, 130.0, 189.0)), (1.0, (8.0, 48.0, 107.0))];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let i = STOPS.iter().rposition(|(s, _)| *s <= t).unwrap_or(0).min(STOPS.len() - 2);
    let ((s0, c0), (s1, c1)) = (STOPS[i], STOPS[i + 1]);
    let f = (t - s0) / (s1 - s0);
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(mix(c0.0, c1.0), mix(c0.1, c1.1), mix(c0.2, c1.2))
}

fn text_color(background: RGBColor) -> RGBColor {
    let luminance = 0.299 * background.0 as f64 + 0.587 * background.1 as f64 + 0.114 * background.2 as f64;
    if luminance < 128.0 { WHITE } else { BLACK }
}

type Area<DB> = DrawingArea<DB, Shift>;
type Drawn = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn font(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font())
}

fn bold(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font().style(FontStyle::Bold))
}

fn centered(style: TextStyle<'static>) -> TextStyle<'static> {
    style.pos(Pos::new(HPos::Center, VPos::Center))
}

/// `v` with two decimals, without a negative zero.
fn two_decimals(v: f64) -> String {
    let s = format!("{v:.2}");
    if s == "-0.00" { "0.00".into() } else { s }
}

/// A heatmap with its values written in the cells, row and column labels, a title and a
/// colour bar over `range`.
#[allow(clippy::too_many_arguments)]
fn heatmap<DB: DrawingBackend>(
    area: &Area<DB>,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
    range: (f64, f64),
    value_label: &str,
) -> Drawn {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let left = 12 + rows.iter().map(|r| r.chars().count() as i32).max().unwrap_or(4) * 9;
    let (top, bottom, right) = (44, 56, 90);
    let cell_w = ((w - left - right) / cols.len().max(1) as i32).max(1);
    let cell_h = ((h - top - bottom) / rows.len().max(1) as i32).max(1);
    area.draw(&Text::new(title.to_string(), (w / 2, 18), centered(bold(18)))).map_err(err)?;
    for (r, row) in rows.iter().enumerate() {
        let y0 = top + r as i32 * cell_h;
        area.draw(&Text::new(row.clone(), (left - 8, y0 + cell_h / 2), font(15).pos(Pos::new(HPos::Right, VPos::Center)))).map_err(err)?;
        for (c, _) in cols.iter().enumerate() {
            let x0 = left + c as i32 * cell_w;
            let v = values.get(r).and_then(|row| row.get(c)).copied().unwrap_or(f64::NAN);
            let fill = if v.is_finite() { colormap((v - range.0) / (range.1 - range.0)) } else { RGBColor(230, 230, 230) };
            area.draw(&Rectangle::new([(x0, y0), (x0 + cell_w, y0 + cell_h)], fill.filled())).map_err(err)?;
            area.draw(&Rectangle::new([(x0, y0), (x0 + cell_w, y0 + cell_h)], WHITE.stroke_width(1))).map_err(err)?;
            let label = if v.is_finite() { two_decimals(v) } else { "–".into() };
            let size = (cell_h / 3).clamp(11, 17) as u32;
            area.draw(&Text::new(label, (x0 + cell_w / 2, y0 + cell_h / 2), centered(font(size)).color(&text_color(fill)))).map_err(err)?;
        }
    }
    let grid_bottom = top + rows.len() as i32 * cell_h;
    for (c, col) in cols.iter().enumerate() {
        let x = left + c as i32 * cell_w + cell_w / 2;
        area.draw(&Text::new(col.clone(), (x, grid_bottom + 16), centered(font(14)))).map_err(err)?;
    }
    // Colour bar.
    let bar_x = left + cols.len() as i32 * cell_w + 18;
    let steps = 50;
    for i in 0..steps {
        let t = i as f64 / (steps - 1) as f64;
        let y1 = grid_bottom - ((grid_bottom - top) as f64 * t) as i32;
        let y0 = grid_bottom - ((grid_bottom - top) as f64 * (t + 1.0 / steps as f64)) as i32;
        area.draw(&Rectangle::new([(bar_x, y0), (bar_x + 16, y1)], colormap(t).filled())).map_err(err)?;
    }
    for t in [0.0, 0.5, 1.0] {
        let y = grid_bottom - ((grid_bottom - top) as f64 * t) as i32;
        let v = range.0 + t * (range.1 - range.0);
        area.draw(&Text::new(two_decimals(v), (bar_x + 22, y), font(13).pos(Pos::new(HPos::Left, VPos::Center)))).map_err(err)?;
    }
    area.draw(&Text::new(value_label.to_string(), (bar_x + 8, top - 12), centered(font(13)))).map_err(err)?;
    Ok(())
}

/// (1) Student AUC, KD method × attack, one panel per student size.
fn student_heatmap<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let sizes = d.student_sizes();
    let attacks = d.attacks();
    let panels = root.split_evenly((1, sizes.len().max(1)));
    for (panel, size) in panels.iter().zip(&sizes) {
        let students = d.students_of_size(size);
        let rows: Vec<String> = students.iter().map(|m| m.role.kd_method.clone()).collect();
        let values: Vec<Vec<f64>> = students.iter().map(|m| attacks.iter().map(|a| d.auc(&m.name, a)).collect()).collect();
        heatmap(panel, &format!("students ({size}): AUC"), &rows, &attacks, &values, (0.4, 1.0), "AUC")?;
    }
    Ok(())
}

/// (2) Teacher and No-KD baseline AUC per attack.
fn baseline_heatmap<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let attacks = d.attacks();
    let models: Vec<&ModelEntry> = d.baselines().collect();
    let rows: Vec<String> = models.iter().map(|m| format!("{} ({})", m.name, m.role.role)).collect();
    let values: Vec<Vec<f64>> = models.iter().map(|m| attacks.iter().map(|a| d.auc(&m.name, a)).collect()).collect();
    heatmap(root, "teacher and No-KD baseline: AUC", &rows, &attacks, &values, (0.4, 1.0), "AUC")
}

/// (3) ROC curves on log-log axes, one panel per model, one curve per attack.
fn roc_curves<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let models = d.models_with_scores();
    let attacks = d.attacks();
    let cols = (models.len() as f64).sqrt().ceil().max(1.0) as usize;
    let rows = models.len().div_ceil(cols).max(1);
    let panels = root.split_evenly((rows, cols));
    for (panel, model) in panels.iter().zip(&models) {
        let mut chart = ChartBuilder::on(panel)
            .caption(model.as_str(), font(15))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(44)
            .build_cartesian_2d((1e-3f64..1f64).log_scale(), (1e-3f64..1f64).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("FPR")
            .y_desc("TPR")
            .x_labels(4)
            .y_labels(4)
            .label_style(font(11))
            .axis_desc_style(font(12))
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(err)?;
        chart.draw_series(LineSeries::new([(1e-3, 1e-3), (1.0, 1.0)], BLACK.mix(0.3).stroke_width(1))).map_err(err)?;
        for (i, attack) in attacks.iter().enumerate() {
            let Some(curve) = d.roc(model, attack) else { continue };
            let style = color(i).stroke_width(2);
            chart
                .draw_series(LineSeries::new(curve.into_iter().map(|(x, y)| (x.max(1e-3), y.max(1e-3))), style))
                .map_err(err)?
                .label(attack.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color(i).stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(font(10))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// (4) Mean student AUC by KD method (over attacks and sizes) with interval bars.
fn auc_by_method<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let by_method = d.mean_auc_by_method();
    let n = by_method.len();
    let lo = by_method.iter().map(|(_, _, l, _)| *l).fold(0.5f64, f64::min) - 0.02;
    let hi = by_method.iter().map(|(_, _, _, h)| *h).fold(0.55f64, f64::max) + 0.02;
    let mut chart = ChartBuilder::on(root)
        .caption("mean student AUC by KD method (bars: mean 95% interval)", bold(18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..hi)
        .map_err(err)?;
    let names: Vec<String> = by_method.iter().map(|(m, ..)| m.clone()).collect();
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .disable_x_mesh()
        .x_labels(n.max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 { names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc("AUC")
        .label_style(font(14))
        .axis_desc_style(font(15))
        .draw()
        .map_err(err)?;
    chart.draw_series(LineSeries::new([(-0.5, 0.5), (n as f64 - 0.5, 0.5)], BLACK.mix(0.4).stroke_width(1))).map_err(err)?;
    for (i, (_, mean, l, h)) in by_method.iter().enumerate() {
        let x = i as f64;
        chart.draw_series(std::iter::once(ErrorBar::new_vertical(x, *l, *mean, *h, color(i).stroke_width(2), 14))).map_err(err)?;
        chart.draw_series(std::iter::once(Circle::new((x, *mean), 6, color(i).filled()))).map_err(err)?;
    }
    Ok(())
}

/// (5) AUC per transformer block, one line per model.
fn block_lines<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let mut by_model: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for b in &d.blocks {
        by_model.entry(b.model.as_str()).or_default().push((b.block as f64, b.auc));
    }
    let max_block = d.blocks.iter().map(|b| b.block).max().unwrap_or(0) as f64;
    let (lo, hi) = d.blocks.iter().fold((0.45f64, 0.55f64), |(l, h), b| (l.min(b.auc - 0.02), h.max(b.auc + 0.02)));
    let mut chart = ChartBuilder::on(root)
        .caption("per-block risk: MoPe AUC with one block perturbed", bold(18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.2f64..max_block + 0.2, lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("transformer block")
        .y_desc("AUC")
        .x_labels((max_block as usize + 1).min(32))
        .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-6 { format!("{}", x.round() as i64) } else { String::new() })
        .label_style(font(13))
        .axis_desc_style(font(15))
        .draw()
        .map_err(err)?;
    for (i, (model, points)) in by_model.into_iter().enumerate() {
        let style = color(i).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(err)?
            .label(model.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color(i).stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color(i).filled()))).map_err(err)?;
    }
    chart.configure_series_labels().label_font(font(12)).background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.4)).draw().map_err(err)?;
    Ok(())
}

/// A labelled scatter of one point per model.
fn model_scatter<DB: DrawingBackend>(root: &Area<DB>, title: &str, x_desc: &str, y_desc: &str, points: &[(String, Role, f64, f64)]) -> Drawn {
    let pad = |lo: f64, hi: f64| {
        let span = (hi - lo).max(1e-3);
        (lo - 0.08 * span, hi + 0.08 * span)
    };
    let (x0, x1) = pad(points.iter().map(|p| p.2).fold(f64::INFINITY, f64::min), points.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max));
    let (y0, y1) = pad(points.iter().map(|p| p.3).fold(f64::INFINITY, f64::min), points.iter().map(|p| p.3).fold(f64::NEG_INFINITY, f64::max));
    let mut chart = ChartBuilder::on(root)
        .caption(title, bold(17))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart.configure_mesh().light_line_style(TRANSPARENT).x_desc(x_desc).y_desc(y_desc).label_style(font(13)).axis_desc_style(font(15)).draw().map_err(err)?;
    let roles: Vec<Role> = [Role::Teacher, Role::Student, Role::Nokd, Role::Target].into_iter().filter(|r| points.iter().any(|p| p.1 == *r)).collect();
    for (i, role) in roles.iter().enumerate() {
        let mine: Vec<&(String, Role, f64, f64)> = points.iter().filter(|p| p.1 == *role).collect();
        chart
            .draw_series(mine.iter().map(|p| Circle::new((p.2, p.3), 6, color(i).filled())))
            .map_err(err)?
            .label(role.to_string())
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color(i).filled()));
        chart
            .draw_series(mine.iter().map(|p| Text::new(p.0.clone(), (p.2, p.3), font(11).pos(Pos::new(HPos::Left, VPos::Bottom)))))
            .map_err(err)?;
    }
    chart.configure_series_labels().label_font(font(13)).background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.4)).draw().map_err(err)?;
    Ok(())
}

/// (6) Membership (mean AUC over attacks) against memorization (member rate), with ρ.
fn membership_vs_memorization<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let points = d.per_model_pairs("mem_rate_member");
    let title = match d.spearman_auc_vs("mem_rate_member") {
        Some((rho, p, n)) => format!("membership vs memorization: Spearman ρ = {rho:.2} (p = {p:.2}, {n} models)"),
        None => "membership vs memorization".to_string(),
    };
    let swapped: Vec<(String, Role, f64, f64)> = points.into_iter().map(|(n, r, auc, mem)| (n, r, mem, auc)).collect();
    model_scatter(root, &title, "memorization: member rate (N·K)", "membership: mean AUC", &swapped)
}

/// (7) Memorization heatmaps: member rate and member − non-member gap, KD method × size.
fn memorization_heatmap<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let sizes = d.student_sizes();
    let mut rows: Vec<(String, Vec<Option<String>>)> = Vec::new();
    // The teacher applies to every size; a No-KD baseline to its own size only.
    for m in d.baselines() {
        let cells = if sizes.is_empty() || m.role.role == Role::Teacher || !sizes.contains(&m.role.student) {
            vec![Some(m.name.clone()); sizes.len().max(1)]
        } else {
            sizes.iter().map(|s| (*s == m.role.student).then(|| m.name.clone())).collect()
        };
        rows.push((format!("{} ({})", m.name, m.role.role), cells));
    }
    for method in d.kd_methods() {
        let cells = sizes.iter().map(|s| d.students_of_size(s).into_iter().find(|m| m.role.kd_method == method).map(|m| m.name.clone())).collect();
        rows.push((method, cells));
    }
    let cols: Vec<String> = if sizes.is_empty() { vec!["model".into()] } else { sizes.clone() };
    let panels = root.split_evenly((1, 2));
    for (panel, (metric, title)) in panels.iter().zip([("mem_rate_member", "member rate (N·K)"), ("mem_gap", "member − non-member gap")]) {
        let values: Vec<Vec<f64>> = rows.iter().map(|(_, cells)| cells.iter().map(|c| c.as_ref().map_or(f64::NAN, |m| d.metric(m, metric))).collect()).collect();
        let hi = values.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.05f64, f64::max);
        let lo = values.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::min);
        let labels: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
        heatmap(panel, &format!("memorization: {title}"), &labels, &cols, &values, (lo, hi), "rate")?;
    }
    Ok(())
}

/// (8) Privacy (mean AUC) against utility (ROUGE-L).
fn privacy_vs_utility<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let points: Vec<(String, Role, f64, f64)> =
        d.per_model_pairs("rouge_l").into_iter().map(|(n, r, auc, rouge)| (n, r, rouge, auc)).collect();
    model_scatter(root, "privacy vs utility", "utility: ROUGE-L F ×100 (held-out prompts)", "membership risk: mean AUC", &points)
}

/// (9) Exposure against canary repetition: the mean `loss` score (log-likelihood) and the
/// extraction ratio of canaries by how often they appear among the members.
fn canary_exposure<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let series = d.canary_series();
    let xs: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).collect();
    let (x0, x1) = (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let ys: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).collect();
    let (y0, y1) = (ys.iter().copied().fold(f64::INFINITY, f64::min), ys.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let span = (y1 - y0).max(1e-3);
    let mut chart = ChartBuilder::on(root)
        .caption("exposure vs canary repetition (mean loss score of canaries)", bold(17))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((x0.max(1.0) * 0.8..x1.max(2.0) * 1.25).log_scale(), (y0 - 0.1 * span)..(y1 + 0.1 * span))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("repetitions among the members")
        .y_desc("mean log-likelihood (loss score)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(font(13))
        .axis_desc_style(font(15))
        .draw()
        .map_err(err)?;
    for (i, (model, points)) in series.into_iter().enumerate() {
        chart
            .draw_series(LineSeries::new(points.clone(), color(i).stroke_width(2)))
            .map_err(err)?
            .label(model)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color(i).stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color(i).filled()))).map_err(err)?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).label_font(font(12)).background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.4)).draw().map_err(err)?;
    Ok(())
}

/// Draws `$figure` into `$dir/$name.png` and an SVG string.
/// The Okabe–Ito palette (colour-blind safe), for the defenses of figure 11.
const OKABE_ITO: [RGBColor; 7] = [
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
    RGBColor(240, 228, 66),
];

/// Draws a marker of shape `shape` (circle, triangle, cross, inverted triangle, in turn)
/// at `at` (squares and diamonds are kept for the references of figure 11).
fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(area: &DrawingArea<DB, CT>, shape: usize, at: CT::From, style: ShapeStyle) -> Drawn
where
    CT::From: Clone + 'static,
{
    match shape % 4 {
        0 => area.draw(&Circle::new(at, 6, style)),
        1 => area.draw(&TriangleMarker::new(at, 7, style)),
        2 => area.draw(&Cross::new(at, 6, style.stroke_width(2))),
        _ => area.draw(&(EmptyElement::at(at) + Polygon::new(vec![(-7, -5), (7, -5), (0, 7)], style))),
    }
    .map_err(err)
}

/// How a defense setting is labelled in figure 11: its swept parameter as `key=value`
/// (the value alone for a long key), with ε for a training defense.
fn strength_label(record: &super::tables::DefenseRecord) -> String {
    let swept = record.label.strip_prefix(&record.defense).unwrap_or("").trim_start_matches('-');
    let mut text = match record.params.iter().find(|(k, v)| format!("{k}{v}") == swept) {
        Some((k, v)) if k.chars().count() <= 6 => format!("{k}={v}"),
        Some((_, v)) => v.clone(),
        None => swept.to_string(),
    };
    if let Some(eps) = record.epsilon {
        text = format!("{text} (ε {eps:.1})");
    }
    text
}

/// Places each label `(point, text)` (backend pixels) next to its point without
/// overlapping an earlier label or any marker: right above, right below, left above,
/// left below, then further out. Returns each text with its top-left corner.
fn place_labels(labels: &[((i32, i32), String)], markers: &[(i32, i32)]) -> Vec<(String, (i32, i32))> {
    let boxes_overlap = |a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)| a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3;
    let mut taken: Vec<(i32, i32, i32, i32)> = markers.iter().map(|&(x, y)| (x - 7, y - 7, x + 7, y + 7)).collect();
    let mut out = Vec::new();
    for ((x, y), text) in labels {
        let (w, h) = (7 * text.chars().count() as i32, 13);
        let candidates = [(8, -h - 2), (8, 3), (-8 - w, -h - 2), (-8 - w, 3), (8, -2 * h - 4), (8, h + 5), (-8 - w, -2 * h - 4), (-8 - w, h + 5)];
        let corner = candidates
            .iter()
            .map(|(dx, dy)| (x + dx, y + dy))
            .find(|&(cx, cy)| !taken.iter().any(|t| boxes_overlap((cx, cy, cx + w, cy + h), *t)))
            .unwrap_or((x + 8, y - h - 2));
        taken.push((corner.0, corner.1, corner.0 + w, corner.1 + h));
        out.push((text.clone(), corner));
    }
    out
}

/// (11) The defenses' trade-offs: one row per defended model's undefended twin (a KD
/// method's student of one size, or the teacher), two panels: the best attack's AUC and
/// the member memorization rate, each against ROUGE-L. Each defense setting is a point
/// (colour and marker by defense, labelled by its strength), the twin a black square,
/// the size's No-KD student a grey diamond.
fn defense_tradeoffs<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let rows = super::defenses::rows(d);
    let twins: Vec<&str> = super::data::first_seen(rows.iter().map(|r| r.twin.as_str()));
    let defenses: Vec<String> = super::data::first_seen(rows.iter().filter_map(|r| r.record.as_ref().map(|x| x.defense.as_str()))).into_iter().map(String::from).collect();
    let (legend, body) = root.split_vertically(36);
    // The legend, above the panels: one entry per defense, then the references.
    let mut x = 16i32;
    let entries: Vec<(String, usize)> = defenses.iter().cloned().enumerate().map(|(i, n)| (n, i)).collect();
    for (name, i) in &entries {
        draw_marker(&legend, *i, (x + 6, 18), OKABE_ITO[i % OKABE_ITO.len()].filled())?;
        legend.draw(&Text::new(name.clone(), (x + 18, 18), font(14).pos(Pos::new(HPos::Left, VPos::Center)))).map_err(err)?;
        x += 40 + 8 * name.chars().count() as i32;
    }
    legend.draw(&Rectangle::new([(x, 13), (x + 10, 23)], BLACK.filled())).map_err(err)?;
    legend.draw(&Text::new("undefended", (x + 16, 18), font(14).pos(Pos::new(HPos::Left, VPos::Center)))).map_err(err)?;
    x += 110;
    legend.draw(&Polygon::new(vec![(x + 5, 12), (x + 11, 18), (x + 5, 24), (x - 1, 18)], RGBColor(120, 120, 120).filled())).map_err(err)?;
    legend.draw(&Text::new("No-KD", (x + 16, 18), font(14).pos(Pos::new(HPos::Left, VPos::Center)))).map_err(err)?;
    let panels = body.split_evenly((twins.len().max(1), 2));
    for (g, twin) in twins.iter().enumerate() {
        let group: Vec<&super::defenses::DefenseRow> = rows.iter().filter(|r| r.twin == *twin).collect();
        let size = group[0].student.clone();
        let nokd = d.nokd_of(&size).filter(|_| !size.is_empty()).map(|m| {
            let best = d.attacks().iter().map(|a| d.auc(&m.name, a)).filter(|v| v.is_finite()).fold(f64::NAN, f64::max);
            (best, d.metric(&m.name, "mem_rate_member"), d.mean_rouge_l(&m.name).unwrap_or(f64::NAN))
        });
        for (c, (what, value)) in [("best attack AUC", 0usize), ("member memorization rate", 1usize)].into_iter().enumerate() {
            let y_of = |r: &super::defenses::DefenseRow| if value == 0 { r.best.1 } else { r.mem_rate_member };
            let mut xs: Vec<f64> = group.iter().map(|r| r.rouge_l).collect();
            let mut ys: Vec<f64> = group.iter().map(|r| y_of(r)).collect();
            if let Some(n) = nokd {
                xs.push(n.2);
                ys.push(if value == 0 { n.0 } else { n.1 });
            }
            let finite = |v: &Vec<f64>| v.iter().copied().filter(|x| x.is_finite()).collect::<Vec<f64>>();
            let (xs, ys) = (finite(&xs), finite(&ys));
            if xs.is_empty() || ys.is_empty() {
                continue;
            }
            let range = |v: &[f64]| {
                let (lo, hi) = (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                let span = (hi - lo).max(0.02);
                (lo - 0.12 * span, hi + 0.22 * span)
            };
            let ((x0, x1), (y0, y1)) = (range(&xs), range(&ys));
            let mut chart = ChartBuilder::on(&panels[g * 2 + c])
                .caption(format!("{twin}: {what}"), font(15))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .x_desc("utility: ROUGE-L F ×100")
                .y_desc(what)
                .label_style(font(12))
                .axis_desc_style(font(13))
                .draw()
                .map_err(err)?;
            if let Some(n) = nokd {
                let y = if value == 0 { n.0 } else { n.1 };
                if n.2.is_finite() && y.is_finite() {
                    let grey = RGBColor(120, 120, 120);
                    chart.draw_series(std::iter::once(EmptyElement::at((n.2, y)) + Polygon::new(vec![(0, -7), (7, 0), (0, 7), (-7, 0)], grey.filled()))).map_err(err)?;
                }
            }
            // Markers first, then their labels placed around them without overlap.
            let mut labels: Vec<((f64, f64), String)> = Vec::new();
            for r in &group {
                let (x, y) = (r.rouge_l, y_of(r));
                if !(x.is_finite() && y.is_finite()) {
                    continue;
                }
                match &r.record {
                    None => {
                        chart.draw_series(std::iter::once(EmptyElement::at((x, y)) + Rectangle::new([(-6, -6), (6, 6)], BLACK.filled()))).map_err(err)?;
                    }
                    Some(record) => {
                        let i = defenses.iter().position(|n| *n == record.defense).unwrap_or(0);
                        draw_marker(chart.plotting_area(), i, (x, y), OKABE_ITO[i % OKABE_ITO.len()].filled())?;
                        labels.push(((x, y), strength_label(record)));
                    }
                }
            }
            let markers: Vec<(i32, i32)> = group.iter().filter(|r| r.rouge_l.is_finite() && y_of(r).is_finite()).map(|r| chart.backend_coord(&(r.rouge_l, y_of(r)))).collect();
            for (text, at) in place_labels(&labels.iter().map(|(p, t)| (chart.backend_coord(p), t.clone())).collect::<Vec<_>>(), &markers) {
                root.draw(&Text::new(text, at, font(11).pos(Pos::new(HPos::Left, VPos::Top)))).map_err(err)?;
            }
        }
    }
    Ok(())
}

macro_rules! draw_both {
    ($figure:ident, $data:expr, $dir:expr, $name:expr, $size:expr) => {{
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, $size).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            $figure(&root, $data)?;
            root.present().map_err(err)?;
        }
        let png = $dir.join(format!("{}.png", $name));
        crate::files::write_with(&png, |tmp| {
            let drawn = (|| {
                let root = BitMapBackend::new(tmp, $size).into_drawing_area();
                root.fill(&WHITE).map_err(err)?;
                $figure(&root, $data)?;
                root.present().map_err(err)
            })();
            drawn.map_err(|e| std::io::Error::other(e.to_string()))
        })
        .map_err(err)?;
        crate::files::write_atomic(&$dir.join(format!("{}.svg", $name)), svg.as_bytes()).map_err(err)?;
        svg
    }};
}

/// What figure `name` plots and how to read it: its caption in report.html.
pub fn caption(name: &str) -> &'static str {
    match name {
        "fig0_privacy_vs_utility" => "Each point is one model, coloured by its role: its mean AUC over all attacks (y; 0.5 is chance) against its mean ROUGE-L F×100 on the held-out prompts (x). Up is more membership leakage, right is more utility: the better trade-offs lie down and to the right. A student near its No-KD baseline leaks no more than training on public data alone.",
        "fig1_student_auc" => "One panel per student size. Rows are KD methods, columns attacks; each cell is that student's AUC under that attack (0.5 is chance; darker is more leakage). Read a row against the No-KD row of figure 2 to see what distillation from the teacher added.",
        "fig2_baseline_auc" => "The teacher (fine-tuned on the members) and each size's No-KD student (trained on public data only) under every attack: the upper and lower reference points for the students of figure 1.",
        "fig3_roc" => "One panel per model: the ROC curve of every attack on log–log axes, so that the low false-positive rates where an attack is useful in practice can be read. A curve well above the diagonal at small FPR is a strong attack; one on it is chance.",
        "fig4_auc_by_method" => "For each KD method, the mean AUC of its students over the attacks and sizes (dot) with the mean of their 95% bootstrap intervals (bar); the line is chance (0.5). Methods whose bars do not overlap leak differently; comparisons.csv has the paired tests.",
        "fig5_blocks" => "Per-block risk: each model's MoPe AUC when only one transformer block's weights are perturbed (x: the block). A block whose perturbation separates members from non-members better holds more of what the model memorised; a flat line at 0.5 means no block stands out.",
        "fig6_membership_vs_memorization" => "Each point is one model: its member memorization rate (x: how much of the members' responses greedy generation reproduces, N·K denominator) against its mean AUC over attacks (y). The title gives Spearman's ρ across the models; points to the upper right leak both ways.",
        "fig7_memorization" => "Left: each model's member memorization rate (N·K denominator). Right: the member − non-member gap, the part of that rate that non-members' guessable answers do not explain. Rows are the teacher, the No-KD baselines and the KD methods; columns the student sizes.",
        "fig9_canary_exposure" => "Canaries planted 1, 2, 4 and 8 times among the members: the mean log-likelihood (loss-attack score) of each repetition count's canaries under the teacher, each No-KD baseline and, averaged, each size's students. A line that rises with repetitions shows the model memorising what it saw more often. (Not yet exposure in Carlini et al.'s rank sense.)",
        "fig11_defenses" => "One row per undefended model that a defense was applied to (a KD method's student of one size, or the teacher for a training defense). Left: the best attack's AUC; right: the member memorization rate; both against utility (ROUGE-L F×100 on held-out prompts). Coloured markers are the defense settings (legend), labelled by strength; the black square is the undefended model, the grey diamond the No-KD student of the size. A defense helps where its point lies below the square at little loss of ROUGE-L; defenses.csv has the numbers and marks the best trade-offs.",
        "fig10_seed_spread" => "One panel per attack: each model's AUC in each seed (coloured circles, with that seed's 95% bootstrap interval) and the mean over the seeds ± one standard deviation (black). Spread across seeds that exceeds the intervals is variation the one-seed intervals do not show.",
        _ => "",
    }
}

/// Renders every figure whose data the run has into `dir` (PNG + SVG); returns them with
/// the list of skipped ones and why.
pub fn render_all(d: &ReportData, dir: &Path) -> Result<(Vec<Figure>, Vec<Skipped>), String> {
    register_fonts();
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut figures = Vec::new();
    let mut skipped = Vec::new();
    let students = !d.student_sizes().is_empty() && !d.attacks().is_empty();
    let baselines = d.baselines().next().is_some() && !d.attacks().is_empty();
    let memorized = d.models.iter().any(|m| d.metric(&m.name, "mem_rate_member").is_finite());
    let scored_and_memorized = d.per_model_pairs("mem_rate_member").len() >= 2;
    let utility = d.per_model_pairs("rouge_l").len() >= 2;
    let cells = d.student_sizes().len().max(1) as u32;
    // Each size's heatmap gives every attack a column wide enough for its name.
    let per_size = (130 + 72 * d.attacks().len() as u32).max(560);
    let width = (per_size * cells).max(700);
    let mut add = |name: &'static str, title: String, ok: bool, why: &str, render: &mut dyn FnMut() -> Result<String, String>| -> Result<(), String> {
        if ok {
            figures.push(Figure { name, title, caption: caption(name), svg: render()? });
        } else {
            skipped.push((name, why.to_string()));
        }
        Ok(())
    };
    let rows = d.kd_methods().len().max(1) as u32;
    // Utility first: a leakage number means something only for a model that learned.
    add("fig0_privacy_vs_utility", "Privacy vs utility".into(), utility, "needs attack scores and ROUGE-L for two or more models", &mut || {
        Ok(draw_both!(privacy_vs_utility, d, dir, "fig0_privacy_vs_utility", (900, 560)))
    })?;
    add("fig1_student_auc", "Student AUC by KD method and attack, per student size".into(), students, "no students with attack scores", &mut || {
        Ok(draw_both!(student_heatmap, d, dir, "fig1_student_auc", (width, 140 + 56 * rows)))
    })?;
    add("fig2_baseline_auc", "Teacher and No-KD baseline AUC by attack".into(), baselines, "no teacher or No-KD model", &mut || {
        Ok(draw_both!(baseline_heatmap, d, dir, "fig2_baseline_auc", (900, 260)))
    })?;
    let n_models = d.models_with_scores().len().max(1);
    let grid = (n_models as f64).sqrt().ceil() as u32;
    add("fig3_roc", "ROC curves per model (log-log)".into(), !d.scores.is_empty(), "no scores", &mut || {
        Ok(draw_both!(roc_curves, d, dir, "fig3_roc", (330 * grid, 300 * (n_models as u32).div_ceil(grid))))
    })?;
    add("fig4_auc_by_method", "Mean student AUC by KD method with intervals".into(), students, "no students with attack scores", &mut || {
        Ok(draw_both!(auc_by_method, d, dir, "fig4_auc_by_method", (900, 480)))
    })?;
    add("fig5_blocks", "Per-block risk (MoPe AUC per perturbed block)".into(), !d.blocks.is_empty(), "no blocks.csv rows", &mut || {
        Ok(draw_both!(block_lines, d, dir, "fig5_blocks", (900, 480)))
    })?;
    add("fig6_membership_vs_memorization", "Membership vs memorization across models".into(), scored_and_memorized, "needs attack scores and memorization for two or more models", &mut || {
        Ok(draw_both!(membership_vs_memorization, d, dir, "fig6_membership_vs_memorization", (900, 560)))
    })?;
    add("fig7_memorization", "Memorization: member rate and gap".into(), memorized, "no memorization results", &mut || {
        Ok(draw_both!(memorization_heatmap, d, dir, "fig7_memorization", (1200, 140 + 56 * (rows + 2))))
    })?;
    add("fig9_canary_exposure", "Exposure vs canary repetition".into(), !d.canary_series().is_empty(), "no canaries in the data", &mut || {
        Ok(draw_both!(canary_exposure, d, dir, "fig9_canary_exposure", (900, 520)))
    })?;
    let defended = d.models.iter().filter(|m| m.role.role == Role::Defended).map(|m| super::defenses::twin_of(&m.name)).collect::<std::collections::BTreeSet<_>>().len() as u32;
    add("fig11_defenses", "Defenses: leakage against utility".into(), defended > 0, "no defended models", &mut || {
        Ok(draw_both!(defense_tradeoffs, d, dir, "fig11_defenses", (1100, 36 + 330 * defended)))
    })?;
    Ok((figures, skipped))
}

/// The AUC rows of a multi-seed study, arranged for the seed-spread figure.
struct SeedSpread<'a> {
    attacks: Vec<&'a str>,
    models: Vec<&'a str>,
    seeds: Vec<u64>,
    rows: Vec<&'a SeedRow>,
}

/// One panel per attack: every model's AUC in each seed (coloured by seed, with its 95%
/// bootstrap interval) and across the seeds (black: mean ± one standard deviation).
fn seed_spread<DB: DrawingBackend>(root: &Area<DB>, s: &SeedSpread<'_>) -> Drawn {
    let (w, _) = root.dim_in_pixel();
    let (head, body) = root.split_vertically(64);
    let title = "AUC per seed (colour, 95% bootstrap interval) and across seeds (black: mean ± sd)";
    head.draw(&Text::new(title, (w as i32 / 2, 18), centered(bold(17)))).map_err(err)?;
    // The seeds' colours, as a legend strip above the panels.
    let mut x = 24;
    for (j, seed) in s.seeds.iter().enumerate() {
        head.draw(&Circle::new((x, 46), 5, color(j).stroke_width(2))).map_err(err)?;
        let label = format!("seed {seed}");
        head.draw(&Text::new(label.clone(), (x + 10, 46), font(14).pos(Pos::new(HPos::Left, VPos::Center)))).map_err(err)?;
        x += 24 + 9 * label.len() as i32;
    }
    head.draw(&Circle::new((x, 46), 5, BLACK.filled())).map_err(err)?;
    head.draw(&Text::new("mean ± sd", (x + 10, 46), font(14).pos(Pos::new(HPos::Left, VPos::Center)))).map_err(err)?;
    let cols = s.attacks.len().clamp(1, 3);
    let panels = body.split_evenly((s.attacks.len().div_ceil(cols), cols));
    let n = s.models.len();
    let y_of = |model: &str| (n - 1 - s.models.iter().position(|m| *m == model).unwrap_or(0)) as f64;
    for (attack, panel) in s.attacks.iter().zip(panels.iter()) {
        let rows: Vec<&SeedRow> = s.rows.iter().copied().filter(|r| r.attack == *attack).collect();
        let ends = rows.iter().flat_map(|r| {
            let (lo, hi) = r.ci.or(r.sd.map(|sd| (r.value - sd, r.value + sd))).unwrap_or((r.value, r.value));
            [lo, hi, r.value]
        });
        let (lo, hi) = ends.filter(|v| v.is_finite()).fold((0.45f64, 0.55f64), |(l, h), v| (l.min(v), h.max(v)));
        let names: Vec<String> = s.models.iter().map(|m| m.to_string()).collect();
        let mut chart = ChartBuilder::on(panel)
            .caption(*attack, bold(15))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(112)
            .build_cartesian_2d((lo - 0.02)..(hi + 0.02), -0.6f64..(n as f64 - 0.4))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("AUC")
            .x_labels(5)
            .y_labels(n.max(1))
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n { names[n - 1 - i as usize].clone() } else { String::new() }
            })
            .label_style(font(12))
            .axis_desc_style(font(13))
            .draw()
            .map_err(err)?;
        chart.draw_series(LineSeries::new([(0.5, -0.6), (0.5, n as f64 - 0.4)], BLACK.mix(0.35).stroke_width(1))).map_err(err)?;
        let k = s.seeds.len() as f64;
        for r in &rows {
            let y = y_of(&r.model);
            match r.seed {
                Some(seed) => {
                    let j = s.seeds.iter().position(|x| *x == seed).unwrap_or(0);
                    // Each seed a little above or below the model's line, so none hides another.
                    let y = y + 0.5 - (j as f64 + 1.0) / (k + 1.0);
                    if let Some((l, h)) = r.ci {
                        chart.draw_series(LineSeries::new([(l, y), (h, y)], color(j).stroke_width(1))).map_err(err)?;
                    }
                    chart.draw_series(std::iter::once(Circle::new((r.value, y), 4, color(j).stroke_width(2)))).map_err(err)?;
                }
                None => {
                    if let Some(sd) = r.sd {
                        chart.draw_series(std::iter::once(ErrorBar::new_horizontal(y, r.value - sd, r.value, r.value + sd, BLACK.stroke_width(2), 8))).map_err(err)?;
                    }
                    chart.draw_series(std::iter::once(Circle::new((r.value, y), 5, BLACK.filled()))).map_err(err)?;
                }
            }
        }
    }
    Ok(())
}

/// Draws `fig10_seed_spread` (PNG + SVG) into `dir` from a multi-seed study's `seeds.csv`
/// rows; `None` when they hold no AUC.
pub fn render_seed_spread(rows: &[SeedRow], dir: &Path) -> Result<Option<Figure>, String> {
    register_fonts();
    let rows: Vec<&SeedRow> = rows.iter().filter(|r| r.metric == "auc").collect();
    if rows.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut attacks: Vec<&str> = Vec::new();
    let mut models: Vec<&str> = Vec::new();
    let mut seeds: Vec<u64> = Vec::new();
    for r in &rows {
        if !attacks.contains(&r.attack.as_str()) {
            attacks.push(&r.attack);
        }
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
        if let Some(seed) = r.seed.filter(|s| !seeds.contains(s)) {
            seeds.push(seed);
        }
    }
    let spread = SeedSpread { attacks, models, seeds, rows };
    let cols = spread.attacks.len().clamp(1, 3) as u32;
    let grid_rows = spread.attacks.len().div_ceil(cols as usize) as u32;
    let size = (460 * cols, 64 + grid_rows * (84 + 34 * spread.models.len() as u32));
    let svg = draw_both!(seed_spread, &spread, dir, "fig10_seed_spread", size);
    let name = "fig10_seed_spread";
    Ok(Some(Figure { name, title: "AUC across seeds: each seed with its interval, and the mean ± sd".into(), caption: caption(name), svg }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_runs_light_to_dark() {
        assert_eq!(colormap(0.0), RGBColor(247, 251, 255));
        assert_eq!(colormap(1.0), RGBColor(8, 48, 107));
        assert_eq!(text_color(colormap(1.0)), WHITE);
        assert_eq!(text_color(colormap(0.0)), BLACK);
    }
}
