//! The figures of SPEC §11 in one style ([`super::style`]): the Okabe–Ito palette with
//! marker and line-style cycling, a light major grid only, legends in a strip outside the
//! data, labels placed without overlap. Each figure is one function drawing on any
//! plotters backend; [`render_all`] draws each once as SVG at its paper width (one column,
//! 3.3 in, or two, 6.9 in), writes that SVG sized in inches and a 300 dpi PNG rasterised
//! from it (resvg, the bundled DejaVu Sans), and skips, with a reason, a figure whose data
//! the run does not have.

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Arc, Once, OnceLock};

use plotters::coord::Shift;
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::{Figure, ModelEntry, ReportData, Skipped};
use super::style::{self, Column, Entry, MIN_FONT, Series, draw_line, draw_marker, legend_height, legend_strip, place_labels, series};
use super::tables::{Role, SeedRow};

const FONT: &str = "sans-serif";
static FONTS: Once = Once::new();
const REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// Titles.
const TITLE: u32 = 22;
/// Every other text: axis descriptions, ticks, legends, labels, cell values.
const TEXT: u32 = MIN_FONT;

/// Registers the bundled font once (plotters' ab_glyph backend looks fonts up by name).
fn register_fonts() {
    FONTS.call_once(|| {
        // Both files are compiled in; a failure here is a broken build, not user input.
        for (style, bytes) in [(FontStyle::Normal, REGULAR), (FontStyle::Bold, BOLD)] {
            if plotters::style::register_font(FONT, style, bytes).is_err() {
                panic!("the bundled DejaVu Sans font does not parse");
            }
        }
    });
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

/// The range `[lo, hi]` of `values` widened by `pad` of its span (at least `min_span`).
fn padded(values: impl Iterator<Item = f64>, pad: f64, min_span: f64) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(min_span);
    (lo - pad * span, hi + pad * span)
}

/// A figure's name and the legend entries it drew: label and series style.
pub type Legend = (String, Vec<(String, Series)>);

thread_local! {
    /// The legends drawn, per figure, while [`legend_log`] is on (tests).
    static LEGENDS: RefCell<Option<Vec<Legend>>> = const { RefCell::new(None) };
    static CURRENT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Turns the legend log on (fresh) or off and returns what it held: every figure's legend
/// entries, for the test that no two series of a figure look alike.
pub fn legend_log(on: bool) -> Vec<Legend> {
    LEGENDS.with(|l| std::mem::replace(&mut *l.borrow_mut(), on.then(Vec::new)).unwrap_or_default())
}

/// Draws `entries` as a legend strip across `area` (outside the data), logging them.
fn legend<DB: DrawingBackend>(area: &Area<DB>, entries: &[Entry]) -> Drawn {
    LEGENDS.with(|l| {
        if let Some(log) = l.borrow_mut().as_mut() {
            let figure = CURRENT.with(|c| c.borrow().clone());
            log.push((figure, entries.iter().map(|e| (e.label.clone(), e.series)).collect()));
        }
    });
    legend_strip(area, entries, TEXT).map(|_| ())
}

/// A heatmap with its values written in the cells, row labels, column labels written
/// upwards below the cells, a title and a colour bar over `range`.
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
    let HeatmapLayout { left, cell_w, bottom, upright } = HeatmapLayout::new(w as u32, rows, cols);
    let top = HEATMAP_TOP;
    let cell_h = ((h - top - bottom) / rows.len().max(1) as i32).max(1);
    area.draw(&Text::new(title.to_string(), (w / 2, 16), centered(bold(TITLE)))).map_err(err)?;
    for (r, row) in rows.iter().enumerate() {
        let y0 = top + r as i32 * cell_h;
        area.draw(&Text::new(row.clone(), (left - 8, y0 + cell_h / 2), font(TEXT).pos(Pos::new(HPos::Right, VPos::Center)))).map_err(err)?;
        for (c, _) in cols.iter().enumerate() {
            let x0 = left + c as i32 * cell_w;
            let v = values.get(r).and_then(|row| row.get(c)).copied().unwrap_or(f64::NAN);
            let fill = if v.is_finite() { colormap((v - range.0) / (range.1 - range.0)) } else { RGBColor(230, 230, 230) };
            area.draw(&Rectangle::new([(x0, y0), (x0 + cell_w, y0 + cell_h)], fill.filled())).map_err(err)?;
            area.draw(&Rectangle::new([(x0, y0), (x0 + cell_w, y0 + cell_h)], WHITE.stroke_width(1))).map_err(err)?;
            let label = if v.is_finite() { two_decimals(v) } else { "–".into() };
            // Values across the cell where they fit, else upwards in a tall enough cell;
            // a cell too small for its text either way stays a colour.
            let (text, centre) = (style::text_width(&label, TEXT), (x0 + cell_w / 2, y0 + cell_h / 2));
            if text <= cell_w - 2 && cell_h >= TEXT as i32 {
                area.draw(&Text::new(label, centre, centered(font(TEXT)).color(&text_color(fill)))).map_err(err)?;
            } else if text <= cell_h - 4 && cell_w >= TEXT as i32 {
                let ink = text_color(fill);
                let upwards = font(TEXT).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Center)).color(&ink);
                area.draw(&Text::new(label, centre, upwards)).map_err(err)?;
            }
        }
    }
    let grid_bottom = top + rows.len() as i32 * cell_h;
    for (c, col) in cols.iter().enumerate() {
        let x = left + c as i32 * cell_w + cell_w / 2;
        let style = if upright { font(TEXT).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center)) } else { font(TEXT).pos(Pos::new(HPos::Center, VPos::Top)) };
        area.draw(&Text::new(col.clone(), (x, grid_bottom + 8), style)).map_err(err)?;
    }
    // Colour bar.
    let bar_x = left + cols.len() as i32 * cell_w + 14;
    let steps = 50;
    for i in 0..steps {
        let t = i as f64 / (steps - 1) as f64;
        let y1 = grid_bottom - ((grid_bottom - top) as f64 * t) as i32;
        // Each step overlaps the next by a unit, so that no seam shows between them.
        let y0 = grid_bottom - ((grid_bottom - top) as f64 * (t + 1.0 / steps as f64)) as i32 - 1;
        area.draw(&Rectangle::new([(bar_x, y0.max(top)), (bar_x + 14, y1)], colormap(t).filled())).map_err(err)?;
    }
    // The end labels inside the bar's span, so that its title above never meets them.
    for (t, v_pos) in [(0.0, VPos::Bottom), (0.5, VPos::Center), (1.0, VPos::Top)] {
        let y = grid_bottom - ((grid_bottom - top) as f64 * t) as i32;
        let v = range.0 + t * (range.1 - range.0);
        area.draw(&Text::new(two_decimals(v), (bar_x + 18, y), font(TEXT).pos(Pos::new(HPos::Left, v_pos)))).map_err(err)?;
    }
    area.draw(&Text::new(value_label.to_string(), (bar_x + 7, top - 4), font(TEXT).pos(Pos::new(HPos::Center, VPos::Bottom)))).map_err(err)?;
    Ok(())
}

/// A heatmap's space above the cells: its title, and below it the colour bar's label.
const HEATMAP_TOP: i32 = 52;

/// Where a heatmap's parts go in a panel `width` units wide: the row labels' margin, the
/// cells' width, and the column labels' space below the cells, written across their
/// cells where they fit and upwards where they do not.
struct HeatmapLayout {
    left: i32,
    cell_w: i32,
    bottom: i32,
    upright: bool,
}

impl HeatmapLayout {
    fn new(width: u32, rows: &[String], cols: &[String]) -> Self {
        // The colour bar and its labels to the right of the cells.
        const RIGHT: i32 = 96;
        let left = 14 + rows.iter().map(|r| style::text_width(r, TEXT)).max().unwrap_or(40);
        let cell_w = ((width as i32 - left - RIGHT) / cols.len().max(1) as i32).max(1);
        let widest = cols.iter().map(|c| style::text_width(c, TEXT)).max().unwrap_or(30);
        let upright = widest > cell_w - 6;
        let bottom = if upright { 16 + widest } else { 16 + TEXT as i32 };
        Self { left, cell_w, bottom, upright }
    }

    /// The height of the heatmap with `rows` rows of at least `cell` units: taller where
    /// the cells are too narrow for a value across them, so that it fits upwards.
    fn height(&self, rows: usize, cell: u32) -> u32 {
        let value = style::text_width("0.00", TEXT);
        let cell = if value <= self.cell_w - 2 { cell } else { cell.max(value as u32 + 8) };
        (HEATMAP_TOP + self.bottom) as u32 + rows as u32 * cell
    }
}

/// The height of a heatmap of `rows` labels by `cols` labels in a panel `width` units wide,
/// at least `cell` units a row.
fn heatmap_height(width: u32, rows: &[String], cols: &[String], cell: u32) -> u32 {
    HeatmapLayout::new(width, rows, cols).height(rows.len().max(1), cell)
}

/// (1) Student AUC, KD method × attack, one panel per student size (stacked).
fn student_heatmap<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let sizes = d.student_sizes();
    let attacks = d.attacks();
    let panels = root.split_evenly((sizes.len().max(1), 1));
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
    let rows: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let values: Vec<Vec<f64>> = models.iter().map(|m| attacks.iter().map(|a| d.auc(&m.name, a)).collect()).collect();
    heatmap(root, "teacher and No-KD baselines: AUC", &rows, &attacks, &values, (0.4, 1.0), "AUC")
}

/// The ROC figure's panel grid (columns, rows): up to four panels a row, fewer where the
/// longest model name would not fit over its panel.
fn roc_grid(models: &[String]) -> (usize, usize) {
    let title = models.iter().map(|m| style::text_width(m, TEXT)).max().unwrap_or(0) + 24;
    let fits = (style::DESIGN_WIDTH as i32 / title.max(1)).max(1) as usize;
    let cols = models.len().min(4).min(fits).max(1);
    (cols, models.len().div_ceil(cols).max(1))
}

/// The attacks' legend entries (lines).
fn attack_entries(attacks: &[String]) -> Vec<Entry> {
    attacks.iter().enumerate().map(|(i, a)| Entry { label: a.clone(), series: series(i), line: true, marks: false }).collect()
}

/// (3) ROC curves on log-log axes, one panel per model, one curve per attack; the
/// attacks' legend above the panels.
fn roc_curves<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let models = d.models_with_scores();
    let attacks = d.attacks();
    let entries = attack_entries(&attacks);
    let (w, _) = root.dim_in_pixel();
    let (top, body) = root.split_vertically(legend_height(&entries, w, TEXT));
    legend(&top, &entries)?;
    let (cols, rows) = roc_grid(&models);
    let panels = body.split_evenly((rows, cols));
    for (panel, model) in panels.iter().zip(&models) {
        let mut chart = ChartBuilder::on(panel)
            .caption(model.as_str(), font(TEXT))
            .margin(6)
            .margin_right(24)
            .x_label_area_size(40)
            .y_label_area_size(58)
            .build_cartesian_2d((1e-3f64..1f64).log_scale(), (1e-3f64..1f64).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("FPR")
            .y_desc("TPR")
            .x_labels(3)
            .y_labels(3)
            .label_style(font(TEXT))
            .axis_desc_style(font(TEXT))
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(err)?;
        chart.draw_series(LineSeries::new([(1e-3, 1e-3), (1.0, 1.0)], BLACK.mix(0.3).stroke_width(1))).map_err(err)?;
        for (i, attack) in attacks.iter().enumerate() {
            let Some(curve) = d.roc(model, attack) else { continue };
            let points: Vec<(f64, f64)> = curve.into_iter().map(|(x, y)| (x.max(1e-3), y.max(1e-3))).collect();
            draw_line(&mut chart, &points, series(i), 2)?;
        }
    }
    Ok(())
}

/// (4) Mean student AUC by KD method (over attacks and sizes) with interval bars: one
/// row per method, so that the names read horizontally at one column's width.
fn auc_by_method<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let by_method = d.mean_auc_by_method();
    let n = by_method.len();
    let lo = by_method.iter().map(|(_, _, l, _)| *l).fold(0.5f64, f64::min) - 0.02;
    let hi = by_method.iter().map(|(_, _, _, h)| *h).fold(0.55f64, f64::max) + 0.02;
    let names: Vec<String> = by_method.iter().map(|(m, ..)| m.clone()).collect();
    let name_width = names.iter().map(|m| style::text_width(m, TEXT)).max().unwrap_or(30) as u32 + 16;
    // The first method on top.
    let row = |i: usize| (n - 1 - i) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption("mean student AUC by KD method", bold(TITLE))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(64)
        .y_label_area_size(name_width)
        .build_cartesian_2d(lo..hi, -0.5f64..(n as f64 - 0.5))
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .disable_y_mesh()
        .x_labels(5)
        .y_labels(n.max(1))
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n { names[n - 1 - i as usize].clone() } else { String::new() }
        })
        .x_desc("AUC (bars: mean 95% interval)")
        .label_style(font(TEXT))
        .axis_desc_style(font(TEXT))
        .draw()
        .map_err(err)?;
    chart.draw_series(LineSeries::new([(0.5, -0.5), (0.5, n as f64 - 0.5)], BLACK.mix(0.4).stroke_width(1))).map_err(err)?;
    for (i, (_, mean, l, h)) in by_method.iter().enumerate() {
        let y = row(i);
        chart.draw_series(std::iter::once(ErrorBar::new_horizontal(y, *l, *mean, *h, BLACK.stroke_width(2), 12))).map_err(err)?;
        chart.draw_series(std::iter::once(Circle::new((*mean, y), 6, BLACK.filled()))).map_err(err)?;
    }
    Ok(())
}

/// The models of the per-block sweep, in run order, and the largest block.
fn block_models(d: &ReportData) -> (Vec<String>, usize) {
    let mut models: Vec<String> = d.models.iter().filter(|m| d.blocks.iter().any(|b| b.model == m.name)).map(|m| m.name.clone()).collect();
    for b in &d.blocks {
        if !models.contains(&b.model) {
            models.push(b.model.clone());
        }
    }
    (models, d.blocks.iter().map(|b| b.block).max().unwrap_or(0))
}

/// The height of the per-block figure's line plot under its heatmap.
const BLOCK_LINE_HEIGHT: u32 = 300;

/// (5) Per-block risk: a heatmap of models × blocks with the AUC in the cells (as the
/// paper draws it), and the teacher's AUC per block as a line below.
fn block_risk<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let (models, max_block) = block_models(d);
    let blocks: Vec<String> = (0..=max_block).map(|b| b.to_string()).collect();
    let mut values = vec![vec![f64::NAN; blocks.len()]; models.len()];
    for b in &d.blocks {
        if let Some(r) = models.iter().position(|m| *m == b.model) {
            values[r][b.block] = b.auc;
        }
    }
    let (lo, hi) = padded(d.blocks.iter().map(|b| b.auc), 0.0, 0.1);
    let (_, h) = root.dim_in_pixel();
    let (top, bottom) = root.split_vertically(h as i32 - BLOCK_LINE_HEIGHT as i32);
    heatmap(&top, "per-block risk: MoPe AUC with one block perturbed", &models, &blocks, &values, (lo.min(0.45), hi.max(0.55)), "AUC")?;
    let teacher = d.models.iter().find(|m| m.role.role == Role::Teacher).map(|m| m.name.as_str()).unwrap_or("teacher");
    let mut points: Vec<(f64, f64)> = d.blocks.iter().filter(|b| b.model == teacher).map(|b| (b.block as f64, b.auc)).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    if points.is_empty() {
        return Ok(());
    }
    let (y0, y1) = padded(points.iter().map(|p| p.1).chain([0.5]), 0.1, 0.05);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(format!("{teacher}: AUC per perturbed block"), font(TEXT))
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..max_block as f64 + 0.5, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("transformer block")
        .y_desc("AUC")
        .x_labels((max_block + 1).min(16))
        .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-6 { format!("{}", x.round() as i64) } else { String::new() })
        .label_style(font(TEXT))
        .axis_desc_style(font(TEXT))
        .draw()
        .map_err(err)?;
    chart.draw_series(LineSeries::new([(-0.5, 0.5), (max_block as f64 + 0.5, 0.5)], BLACK.mix(0.35).stroke_width(1))).map_err(err)?;
    draw_line(&mut chart, &points, Series { color: BLACK, ..series(0) }, 2)?;
    for p in &points {
        draw_marker(chart.plotting_area(), style::Marker::Circle, *p, BLACK, 4)?;
    }
    Ok(())
}

/// The roles of a model scatter, in legend order, each with its series.
fn role_entries(points: &[(String, Role, f64, f64)]) -> Vec<(Role, Entry)> {
    [Role::Teacher, Role::Student, Role::Nokd, Role::Defended, Role::Target]
        .into_iter()
        .filter(|r| points.iter().any(|p| p.1 == *r))
        .enumerate()
        .map(|(i, r)| (r, Entry { label: r.to_string(), series: series(i), line: false, marks: true }))
        .collect()
}

/// A scatter of one point per model, coloured and marked by role (legend above), each
/// point labelled with its model without overlap.
fn model_scatter<DB: DrawingBackend>(root: &Area<DB>, title: &str, x_desc: &str, y_desc: &str, points: &[(String, Role, f64, f64)]) -> Drawn {
    let roles = role_entries(points);
    let entries: Vec<Entry> = roles.iter().map(|(_, e)| Entry { label: e.label.clone(), series: e.series, line: false, marks: true }).collect();
    let (w, _) = root.dim_in_pixel();
    let (top, body) = root.split_vertically(legend_height(&entries, w, TEXT) + 30);
    top.draw(&Text::new(title.to_string(), (w as i32 / 2, 14), centered(bold(TITLE)))).map_err(err)?;
    legend(&top.margin(30, 0, 0, 0), &entries)?;
    let (x0, x1) = padded(points.iter().map(|p| p.2), 0.12, 1e-3);
    let (y0, y1) = padded(points.iter().map(|p| p.3), 0.12, 1e-3);
    let mut chart = ChartBuilder::on(&body).margin(12).x_label_area_size(48).y_label_area_size(72).build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
    chart.configure_mesh().light_line_style(TRANSPARENT).x_desc(x_desc).y_desc(y_desc).label_style(font(TEXT)).axis_desc_style(font(TEXT)).draw().map_err(err)?;
    for p in points {
        let s = roles.iter().find(|(r, _)| *r == p.1).map(|(_, e)| e.series).unwrap_or(series(0));
        draw_marker(chart.plotting_area(), s.marker, (p.2, p.3), s.color, 6)?;
    }
    let pixels: Vec<((i32, i32), String)> = points.iter().map(|p| (chart.backend_coord(&(p.2, p.3)), p.0.clone())).collect();
    let markers: Vec<(i32, i32)> = pixels.iter().map(|(at, _)| *at).collect();
    labelled(root, &pixels, &markers, plot_bounds(chart.plotting_area()))?;
    Ok(())
}

/// The backend-pixel rectangle (left, top, right, bottom) of a chart's plotting area.
fn plot_bounds<DB: DrawingBackend, CT: plotters::coord::CoordTranslate>(area: &DrawingArea<DB, CT>) -> (i32, i32, i32, i32) {
    let (x, y) = area.get_base_pixel();
    let (w, h) = area.dim_in_pixel();
    (x, y, x + w as i32, y + h as i32)
}

/// Writes each label `(point, text)` (backend pixels) where [`place_labels`] puts it, with
/// a thin leader line from its point when it sits further than the point's marker.
fn labelled<DB: DrawingBackend>(root: &Area<DB>, labels: &[((i32, i32), String)], markers: &[(i32, i32)], bounds: (i32, i32, i32, i32)) -> Drawn {
    for (&((px, py), _), (text, (x, y))) in labels.iter().zip(place_labels(labels, markers, TEXT, bounds)) {
        let (w, h) = (style::text_width(&text, TEXT), TEXT as i32 + 2);
        if let Some((start, end)) = style::leader((px, py), (x, y, x + w, y + h)) {
            root.draw(&PathElement::new(vec![start, end], RGBColor(110, 110, 110).stroke_width(1))).map_err(err)?;
        }
        root.draw(&Text::new(text, (x, y), font(TEXT).pos(Pos::new(HPos::Left, VPos::Top)))).map_err(err)?;
    }
    Ok(())
}

/// (6) Membership (mean AUC over attacks) against memorization (member rate), with ρ.
fn membership_vs_memorization<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let points = d.per_model_pairs("mem_rate_member");
    let title = match d.spearman_auc_vs("mem_rate_member") {
        Some((rho, p, n)) => format!("membership vs memorization: ρ = {rho:.2} (p = {p:.2}, {n} models)"),
        None => "membership vs memorization".to_string(),
    };
    let swapped: Vec<(String, Role, f64, f64)> = points.into_iter().map(|(n, r, auc, mem)| (n, r, mem, auc)).collect();
    model_scatter(root, &title, "memorization: member rate (N·K)", "membership: mean AUC", &swapped)
}

/// A heatmap row: its label and, per column, the model of that cell.
type ModelRow = (String, Vec<Option<String>>);

/// The rows of the memorization heatmap: each baseline, then each KD method, with the
/// model of each size (column).
fn memorization_rows(d: &ReportData) -> (Vec<ModelRow>, Vec<String>) {
    let sizes = d.student_sizes();
    let mut rows: Vec<ModelRow> = Vec::new();
    // The teacher applies to every size; a No-KD baseline to its own size only.
    for m in d.baselines() {
        let cells = if sizes.is_empty() || m.role.role == Role::Teacher || !sizes.contains(&m.role.student) {
            vec![Some(m.name.clone()); sizes.len().max(1)]
        } else {
            sizes.iter().map(|s| (*s == m.role.student).then(|| m.name.clone())).collect()
        };
        let label = if m.role.role == Role::Nokd { "nokd".to_string() } else { m.name.clone() };
        if let Some((_, existing)) = rows.iter_mut().find(|(l, _)| *l == label) {
            for (e, c) in existing.iter_mut().zip(cells) {
                if e.is_none() {
                    *e = c;
                }
            }
        } else {
            rows.push((label, cells));
        }
    }
    for method in d.kd_methods() {
        let cells = sizes.iter().map(|s| d.students_of_size(s).into_iter().find(|m| m.role.kd_method == method).map(|m| m.name.clone())).collect();
        rows.push((method, cells));
    }
    let cols: Vec<String> = if sizes.is_empty() { vec!["model".into()] } else { sizes };
    (rows, cols)
}

/// (7) Memorization heatmaps: member rate and member − non-member gap, KD method × size.
fn memorization_heatmap<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let (rows, cols) = memorization_rows(d);
    let panels = root.split_evenly((1, 2));
    for (panel, (metric, title)) in panels.iter().zip([("mem_rate_member", "member rate (N·K)"), ("mem_gap", "member − non-member gap")]) {
        let values: Vec<Vec<f64>> = rows.iter().map(|(_, cells)| cells.iter().map(|c| c.as_ref().map_or(f64::NAN, |m| d.metric(m, metric))).collect()).collect();
        let hi = values.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.05f64, f64::max);
        let lo = values.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::min);
        let labels: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
        heatmap(panel, title, &labels, &cols, &values, (lo, hi), "rate")?;
    }
    Ok(())
}

/// (0) Privacy (mean AUC) against utility (ROUGE-L).
fn privacy_vs_utility<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let points: Vec<(String, Role, f64, f64)> =
        d.per_model_pairs("rouge_l").into_iter().map(|(n, r, auc, rouge)| (n, r, rouge, auc)).collect();
    model_scatter(root, "privacy vs utility", "utility: ROUGE-L F ×100 (held-out prompts)", "membership risk: mean AUC", &points)
}

/// The repetition counts (`xs`, the points' x) that there are points at: figures 8 and 9 mark those alone on
/// their log axis (not the 3, 5, 6, 7 of a decade's default ticks).
fn repetition_counts(xs: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut counts: Vec<f64> = xs.collect();
    counts.sort_by(f64::total_cmp);
    counts.dedup();
    counts
}

/// (8) Canaries by repetition: the mean `loss` score (log-likelihood) of each repetition
/// count's canaries, per model group; the groups' legend above.
fn canary_likelihood<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let groups = d.canary_series();
    let entries: Vec<Entry> = groups.iter().enumerate().map(|(i, (label, _))| Entry { label: label.clone(), series: series(i), line: true, marks: true }).collect();
    let (w, _) = root.dim_in_pixel();
    let (top, body) = root.split_vertically(legend_height(&entries, w, TEXT) + 30);
    top.draw(&Text::new("canaries: mean log-likelihood by repetition", (w as i32 / 2, 14), centered(bold(TITLE)))).map_err(err)?;
    legend(&top.margin(30, 0, 0, 0), &entries)?;
    let (x0, x1) = padded(groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)), 0.0, 1.0);
    let (y0, y1) = padded(groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), 0.1, 1e-3);
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x0.max(1.0) * 0.8..x1.max(2.0) * 1.25).log_scale().with_key_points(repetition_counts(groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)))), y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("repetitions among the members")
        .y_desc("mean log-likelihood (loss score)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(font(TEXT))
        .axis_desc_style(font(TEXT))
        .draw()
        .map_err(err)?;
    for (i, (_, points)) in groups.iter().enumerate() {
        draw_line(&mut chart, points, series(i), 2)?;
        for p in points {
            draw_marker(chart.plotting_area(), series(i).marker, *p, series(i).color, 5)?;
        }
    }
    Ok(())
}

/// (9) Canary exposure (Carlini et al.'s rank sense) against repetition, per model group:
/// the mean over the canaries of each repetition count, with their range (min–max) as
/// bars; the groups' legend above; the y axis from 0 to log₂|R|.
fn canary_exposure<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let groups = d.exposure_series();
    let entries: Vec<Entry> = groups.iter().enumerate().map(|(i, (label, _))| Entry { label: label.clone(), series: series(i), line: true, marks: true }).collect();
    let max = d.exposure.iter().map(|r| r.max_exposure).fold(0.0f64, f64::max);
    let (w, _) = root.dim_in_pixel();
    let (top, body) = root.split_vertically(legend_height(&entries, w, TEXT) + 30);
    top.draw(&Text::new("canary exposure by repetition (bars: range over canaries)", (w as i32 / 2, 14), centered(bold(TITLE)))).map_err(err)?;
    legend(&top.margin(30, 0, 0, 0), &entries)?;
    let (x0, x1) = padded(groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)), 0.0, 1.0);
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x0.max(1.0) * 0.8..x1.max(2.0) * 1.25).log_scale().with_key_points(repetition_counts(groups.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)))), 0.0..max * 1.04)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("repetitions among the members")
        .y_desc(format!("exposure (bits; max log₂|R| = {max:.1})"))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(font(TEXT))
        .axis_desc_style(font(TEXT))
        .draw()
        .map_err(err)?;
    chart.draw_series(LineSeries::new([(x0.max(1.0) * 0.8, max), (x1.max(2.0) * 1.25, max)], BLACK.mix(0.35).stroke_width(1))).map_err(err)?;
    let k = groups.len() as f64;
    for (i, (_, points)) in groups.iter().enumerate() {
        let s = series(i);
        // Each group a little to the side, so that no bar hides another.
        let shift = 1.0 + 0.06 * (i as f64 - (k - 1.0) / 2.0) / k.max(1.0);
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.0 * shift, p.1)).collect();
        draw_line(&mut chart, &line, s, 2)?;
        for p in points {
            chart.draw_series(std::iter::once(ErrorBar::new_vertical(p.0 * shift, p.2, p.1, p.3, s.color.stroke_width(2), 8))).map_err(err)?;
            draw_marker(chart.plotting_area(), s.marker, (p.0 * shift, p.1), s.color, 5)?;
        }
    }
    Ok(())
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

/// The black square of an undefended model and the grey diamond of a No-KD student, in
/// figure 11 (black is no series colour).
fn reference_marker<DB: DrawingBackend, X, Y>(chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>, at: (f64, f64), nokd: bool) -> Drawn
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    match nokd {
        false => chart.draw_series(std::iter::once(EmptyElement::at(at) + Rectangle::new([(-6, -6), (6, 6)], BLACK.filled()))).map(|_| ()),
        true => chart.draw_series(std::iter::once(EmptyElement::at(at) + Polygon::new(vec![(0, -8), (8, 0), (0, 8), (-8, 0)], RGBColor(120, 120, 120).filled()))).map(|_| ()),
    }
    .map_err(err)
}

/// (11) The defenses' trade-offs: one row per defended model's undefended twin (a KD
/// method's student of one size, or the teacher), two panels: the best attack's AUC and
/// the member memorization rate, each against ROUGE-L. Each defense is a series (legend
/// above), each setting a point labelled by its strength; the twin is a black square, the
/// size's No-KD student a grey diamond.
fn defense_tradeoffs<DB: DrawingBackend>(root: &Area<DB>, d: &ReportData) -> Drawn {
    let rows = super::defenses::rows(d);
    let twins: Vec<&str> = super::data::first_seen(rows.iter().map(|r| r.twin.as_str()));
    let entries = defense_entries(d);
    let (w, _) = root.dim_in_pixel();
    let (top, body) = root.split_vertically(legend_height(&entries, w, TEXT) + 30);
    top.draw(&Text::new("defenses: leakage against utility (■ undefended, ◆ No-KD)", (w as i32 / 2, 14), centered(bold(TITLE)))).map_err(err)?;
    legend(&top.margin(30, 0, 0, 0), &entries)?;
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
            let nokd_point = nokd.map(|n| (n.2, if value == 0 { n.0 } else { n.1 })).filter(|p| p.0.is_finite() && p.1.is_finite());
            let (x0, x1) = padded(group.iter().map(|r| r.rouge_l).chain(nokd_point.map(|p| p.0)), 0.15, 0.02);
            let (y0, y1) = padded(group.iter().map(|r| y_of(r)).chain(nokd_point.map(|p| p.1)), 0.2, 0.02);
            let mut chart = ChartBuilder::on(&panels[g * 2 + c])
                .caption(format!("{twin}: {what}"), font(TEXT))
                .margin(8)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .x_desc("ROUGE-L F ×100")
                .x_labels(5)
                .y_labels(5)
                .label_style(font(TEXT))
                .axis_desc_style(font(TEXT))
                .draw()
                .map_err(err)?;
            if let Some(p) = nokd_point {
                reference_marker(&mut chart, p, true)?;
            }
            let mut labels: Vec<((i32, i32), String)> = Vec::new();
            let mut markers: Vec<(i32, i32)> = nokd_point.map(|p| chart.backend_coord(&p)).into_iter().collect();
            for r in &group {
                let (x, y) = (r.rouge_l, y_of(r));
                if !(x.is_finite() && y.is_finite()) {
                    continue;
                }
                markers.push(chart.backend_coord(&(x, y)));
                match &r.record {
                    None => reference_marker(&mut chart, (x, y), false)?,
                    Some(record) => {
                        let s = entries.iter().find(|e| e.label == record.defense).map(|e| e.series).unwrap_or(series(0));
                        draw_marker(chart.plotting_area(), s.marker, (x, y), s.color, 6)?;
                        labels.push((chart.backend_coord(&(x, y)), strength_label(record)));
                    }
                }
            }
            labelled(root, &labels, &markers, plot_bounds(chart.plotting_area()))?;
        }
    }
    Ok(())
}

/// The defenses of a run in order of first appearance, each a series.
fn defense_entries(d: &ReportData) -> Vec<Entry> {
    let rows = super::defenses::rows(d);
    let names = super::data::first_seen(rows.iter().filter_map(|r| r.record.as_ref().map(|x| x.defense.as_str())));
    names.into_iter().enumerate().map(|(i, n)| Entry { label: n.to_string(), series: series(i), line: false, marks: true }).collect()
}

/// The bundled fonts for resvg: DejaVu Sans as the sans-serif family.
fn font_db() -> Arc<resvg::usvg::fontdb::Database> {
    static DB: OnceLock<Arc<resvg::usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_font_data(REGULAR.to_vec());
        db.load_font_data(BOLD.to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        Arc::new(db)
    })
    .clone()
}

/// `svg` (drawn `design` units wide) sized for paper: its width and height in inches, the
/// drawing scaled to them.
fn paper_svg(svg: &str, column: Column) -> String {
    let scale = column.inches() / column.design_width() as f64;
    let Some(start) = svg.find("<svg") else { return svg.to_string() };
    let end = start + svg[start..].find('>').unwrap_or(0);
    let head = &svg[start..end];
    let attr = |name: &str| -> Option<f64> {
        let at = head.find(&format!(" {name}=\""))? + name.len() + 3;
        head[at..].split('"').next()?.parse().ok()
    };
    let (Some(w), Some(h)) = (attr("width"), attr("height")) else { return svg.to_string() };
    let sized = head
        .replacen(&format!(" width=\"{w}\""), &format!(" width=\"{:.3}in\"", w * scale), 1)
        .replacen(&format!(" height=\"{h}\""), &format!(" height=\"{:.3}in\"", h * scale), 1);
    format!("{}{sized}{}", &svg[..start], &svg[end..])
}

/// The PNG of a figure's design-size `svg` at [`style::DPI`] on `column`'s paper width.
fn rasterize(svg: &str, column: Column) -> Result<Vec<u8>, String> {
    let options = resvg::usvg::Options { fontdb: font_db(), font_family: "DejaVu Sans".into(), ..resvg::usvg::Options::default() };
    let tree = resvg::usvg::Tree::from_str(svg, &options).map_err(err)?;
    let k = (style::DPI * column.inches() / column.design_width() as f64) as f32;
    let size = tree.size();
    let (w, h) = ((size.width() * k).round() as u32, (size.height() * k).round() as u32);
    let mut pixmap = resvg::tiny_skia::Pixmap::new(w, h).ok_or("a figure of no size")?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(&tree, resvg::tiny_skia::Transform::from_scale(k, k), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(err)
}

/// Draws `$figure` of `$data` as SVG at `$column`'s design width and `$height` units,
/// writes `$dir/$name.svg` (sized in inches) and `$dir/$name.png` (300 dpi), and returns
/// the paper-size SVG.
macro_rules! draw_figure {
    ($figure:ident, $data:expr, $dir:expr, $name:expr, $column:expr, $height:expr) => {{
        CURRENT.with(|c| *c.borrow_mut() = $name.to_string());
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, ($column.design_width(), $height)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            $figure(&root, $data)?;
            root.present().map_err(err)?;
        }
        let png = rasterize(&svg, $column)?;
        crate::files::write_atomic(&$dir.join(format!("{}.png", $name)), &png).map_err(err)?;
        let paper = paper_svg(&svg, $column);
        crate::files::write_atomic(&$dir.join(format!("{}.svg", $name)), paper.as_bytes()).map_err(err)?;
        paper
    }};
}

/// What figure `name` plots and how to read it: its caption in report.html.
pub fn caption(name: &str) -> &'static str {
    match name {
        "fig0_privacy_vs_utility" => "Each point is one model, coloured and marked by its role (legend): its mean AUC over all attacks (y; 0.5 is chance) against its mean ROUGE-L F×100 on the held-out prompts (x). Up is more membership leakage, right is more utility: the better trade-offs lie down and to the right. A student near its No-KD baseline leaks no more than training on public data alone.",
        "fig1_student_auc" => "One panel per student size, one above the other. Rows are KD methods, columns attacks; each cell is that student's AUC under that attack (0.5 is chance; darker is more leakage). Read a row against the No-KD row of figure 2 to see what distillation from the teacher added.",
        "fig2_baseline_auc" => "The teacher (fine-tuned on the members) and each size's No-KD student (trained on public data only) under every attack: the upper and lower reference points for the students of figure 1.",
        "fig3_roc" => "One panel per model: the ROC curve of every attack (colour, marker and dash pattern in the legend above) on log–log axes, so that the low false-positive rates where an attack is useful in practice can be read. A curve well above the diagonal at small FPR is a strong attack; one on it is chance.",
        "fig4_auc_by_method" => "For each KD method, the mean AUC of its students over the attacks and sizes (dot) with the mean of their 95% bootstrap intervals (bar); the line is chance (0.5). Methods whose bars do not overlap leak differently; comparisons.csv has the paired tests.",
        "fig5_blocks" => "Per-block risk, as the paper draws it: a heatmap of models (rows) by transformer blocks (columns) with each model's MoPe AUC when only that block's weights are perturbed (values written where a cell is wide enough), and below it the teacher's AUC per block as a line. A block whose perturbation separates members from non-members better holds more of what the model memorised; a uniform row near 0.5 means no block stands out.",
        "fig6_membership_vs_memorization" => "Each point is one model: its member memorization rate (x: how much of the members' responses greedy generation reproduces, N·K denominator) against its mean AUC over attacks (y). The title gives Spearman's ρ across the models; points to the upper right leak both ways.",
        "fig7_memorization" => "Left: each model's member memorization rate (N·K denominator). Right: the member − non-member gap, the part of that rate that non-members' guessable answers do not explain. Rows are the teacher, the No-KD baselines and the KD methods; columns the student sizes.",
        "fig8_canary_likelihood" => "Canaries planted 1, 2, 4 and 8 times among the members: the mean log-likelihood (loss-attack score) of each repetition count's canaries under the teacher, each No-KD baseline and, averaged, each size's students (legend above). A line that rises with repetitions shows the model finding the canaries it saw more often likelier; figure 9 puts this on the scale of the secret's rank.",
        "fig9_canary_exposure" => "Exposure of each canary's secret in Carlini et al.'s sense: log₂|R| − log₂ rank, the rank of the secret among every value R of its format (10⁸ codes for the default eight digits; the y axis gives log₂|R|) by the model's likelihood of the canary sentence. Estimated from a seeded sample of candidates by fitting a skew-normal to their log-perplexities (the paper's extrapolation; exposure.csv says which estimate and how many candidates). Lines: mean over the canaries of each repetition count, per model group; bars: their range. 0 means the secret is no likelier than a typical code; the grey line at the top, log₂|R|, means it is the likeliest of all.",
        "fig11_defenses" => "One row per undefended model that a defense was applied to (a KD method's student of one size, or the teacher for a training defense). Left: the best attack's AUC; right: the member memorization rate; both against utility (ROUGE-L F×100 on held-out prompts). Each defense has a colour and marker (legend above), each setting is labelled by its strength (and ε for DP-SGD); the black square is the undefended model, the grey diamond the No-KD student of the size. A defense helps where its point lies below the square at little loss of ROUGE-L; defenses.csv has the numbers and marks the best trade-offs.",
        "fig10_seed_spread" => "One panel per attack: each model's AUC in each seed (a colour and marker per seed, legend above, with that seed's 95% bootstrap interval) and the mean over the seeds ± one standard deviation (black). Spread across seeds that exceeds the intervals is variation the one-seed intervals do not show.",
        _ => "",
    }
}

/// The paper width of each figure: one column for the small ones, two for the rest.
pub fn column(name: &str) -> Column {
    match name {
        "fig4_auc_by_method" => Column::One,
        _ => Column::Two,
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
    let mut add = |name: &'static str, title: String, ok: bool, why: &str, render: &mut dyn FnMut() -> Result<String, String>| -> Result<(), String> {
        if ok {
            figures.push(Figure { name, title, caption: caption(name), svg: render()? });
        } else {
            // A figure this run has no data for: an older drawing of it must not stay
            // beside the new ones as if it were current.
            for ext in ["png", "svg"] {
                let stale = dir.join(format!("{name}.{ext}"));
                if stale.is_file() {
                    std::fs::remove_file(&stale).map_err(err)?;
                }
            }
            skipped.push((name, why.to_string()));
        }
        Ok(())
    };
    let attacks = d.attacks();
    let width = Column::Two.design_width();
    let scatter_height = |roles: usize| 560 + roles as u32 / 6 * 30;
    // Utility first: a leakage number means something only for a model that learned.
    add("fig0_privacy_vs_utility", "Privacy vs utility".into(), utility, "needs attack scores and ROUGE-L for two or more models", &mut || {
        Ok(draw_figure!(privacy_vs_utility, d, dir, "fig0_privacy_vs_utility", column("fig0_privacy_vs_utility"), scatter_height(5)))
    })?;
    let sizes = d.student_sizes().len().max(1);
    let methods = d.kd_methods().len().max(1);
    add("fig1_student_auc", "Student AUC by KD method and attack, per student size".into(), students, "no students with attack scores", &mut || {
        Ok(draw_figure!(student_heatmap, d, dir, "fig1_student_auc", column("fig1_student_auc"), sizes as u32 * heatmap_height(width, &d.kd_methods(), &attacks, 34)))
    })?;
    let baseline_rows: Vec<String> = d.baselines().map(|m| m.name.clone()).collect();
    add("fig2_baseline_auc", "Teacher and No-KD baseline AUC by attack".into(), baselines, "no teacher or No-KD model", &mut || {
        Ok(draw_figure!(baseline_heatmap, d, dir, "fig2_baseline_auc", column("fig2_baseline_auc"), heatmap_height(width, &baseline_rows, &attacks, 34)))
    })?;
    let (roc_cols, roc_rows) = roc_grid(&d.models_with_scores());
    // Panels about as tall as wide, within limits.
    let roc_row = (width / roc_cols as u32).clamp(250, 330);
    let roc_legend = legend_height(&attack_entries(&attacks), width, TEXT);
    add("fig3_roc", "ROC curves per model (log-log)".into(), !d.scores.is_empty(), "no scores", &mut || {
        Ok(draw_figure!(roc_curves, d, dir, "fig3_roc", column("fig3_roc"), roc_legend + roc_row * roc_rows as u32))
    })?;
    add("fig4_auc_by_method", "Mean student AUC by KD method with intervals".into(), students, "no students with attack scores", &mut || {
        Ok(draw_figure!(auc_by_method, d, dir, "fig4_auc_by_method", column("fig4_auc_by_method"), 170 + 56 * methods as u32))
    })?;
    let (block_model_names, max_block) = block_models(d);
    let block_cols: Vec<String> = (0..=max_block).map(|b| b.to_string()).collect();
    add("fig5_blocks", "Per-block risk: AUC by model and perturbed block, and the teacher's line".into(), !d.blocks.is_empty(), "no blocks.csv rows", &mut || {
        Ok(draw_figure!(block_risk, d, dir, "fig5_blocks", column("fig5_blocks"), heatmap_height(width, &block_model_names, &block_cols, 30) + BLOCK_LINE_HEIGHT))
    })?;
    add("fig6_membership_vs_memorization", "Membership vs memorization across models".into(), scored_and_memorized, "needs attack scores and memorization for two or more models", &mut || {
        Ok(draw_figure!(membership_vs_memorization, d, dir, "fig6_membership_vs_memorization", column("fig6_membership_vs_memorization"), scatter_height(5)))
    })?;
    let (memorization_rows, memorization_cols) = memorization_rows(d);
    add("fig7_memorization", "Memorization: member rate and gap".into(), memorized, "no memorization results", &mut || {
        Ok(draw_figure!(memorization_heatmap, d, dir, "fig7_memorization", column("fig7_memorization"), heatmap_height(width / 2, &memorization_rows.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(), &memorization_cols, 34)))
    })?;
    let canary_entries: Vec<Entry> = d.canary_series().iter().enumerate().map(|(i, (l, _))| Entry { label: l.clone(), series: series(i), line: true, marks: true }).collect();
    add("fig8_canary_likelihood", "Canaries: log-likelihood vs repetition".into(), !canary_entries.is_empty(), "no canaries in the data", &mut || {
        Ok(draw_figure!(canary_likelihood, d, dir, "fig8_canary_likelihood", column("fig8_canary_likelihood"), 480 + legend_height(&canary_entries, width, TEXT)))
    })?;
    let exposure_entries: Vec<Entry> = d.exposure_series().iter().enumerate().map(|(i, (l, _))| Entry { label: l.clone(), series: series(i), line: true, marks: true }).collect();
    add("fig9_canary_exposure", "Canary exposure vs repetition".into(), !exposure_entries.is_empty(), "no exposure.csv (canaries scored against their candidates by the memorize stage)", &mut || {
        Ok(draw_figure!(canary_exposure, d, dir, "fig9_canary_exposure", column("fig9_canary_exposure"), 480 + legend_height(&exposure_entries, width, TEXT)))
    })?;
    let defended = d.models.iter().filter(|m| m.role.role == Role::Defended).map(|m| super::defenses::twin_of(&m.name)).collect::<std::collections::BTreeSet<_>>().len() as u32;
    let defense_legend = legend_height(&defense_entries(d), width, TEXT);
    add("fig11_defenses", "Defenses: leakage against utility".into(), defended > 0, "no defended models", &mut || {
        Ok(draw_figure!(defense_tradeoffs, d, dir, "fig11_defenses", column("fig11_defenses"), 30 + defense_legend + 330 * defended))
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

impl SeedSpread<'_> {
    /// Each seed a series (legend), then the mean ± sd in black.
    fn entries(&self) -> Vec<Entry> {
        self.seeds.iter().enumerate().map(|(j, seed)| Entry { label: format!("seed {seed}"), series: series(j), line: false, marks: true }).collect()
    }
}

/// The panel grid of the seed-spread figure: columns, rows.
fn seed_grid(attacks: usize) -> (usize, usize) {
    let cols = attacks.clamp(1, 2);
    (cols, attacks.div_ceil(cols).max(1))
}

/// One panel per attack: every model's AUC in each seed (a series per seed, with its 95%
/// bootstrap interval) and across the seeds (black: mean ± one standard deviation).
fn seed_spread<DB: DrawingBackend>(root: &Area<DB>, s: &SeedSpread<'_>) -> Drawn {
    let (w, _) = root.dim_in_pixel();
    let mut entries = s.entries();
    entries.push(Entry { label: "mean ± sd".into(), series: Series { color: BLACK, ..series(0) }, line: false, marks: true });
    let (head, body) = root.split_vertically(legend_height(&entries, w, TEXT) + 30);
    let title = "AUC per seed (95% interval) and across seeds (black: mean ± sd)";
    head.draw(&Text::new(title, (w as i32 / 2, 14), centered(bold(TITLE)))).map_err(err)?;
    legend(&head.margin(30, 0, 0, 0), &entries[..entries.len() - 1])?;
    let (cols, rows) = seed_grid(s.attacks.len());
    let panels = body.split_evenly((rows, cols));
    let n = s.models.len();
    let y_of = |model: &str| (n - 1 - s.models.iter().position(|m| *m == model).unwrap_or(0)) as f64;
    let label_width = 12 + s.models.iter().map(|m| style::text_width(m, TEXT)).max().unwrap_or(40) as u32;
    for (attack, panel) in s.attacks.iter().zip(panels.iter()) {
        let rows: Vec<&SeedRow> = s.rows.iter().copied().filter(|r| r.attack == *attack).collect();
        let ends = rows.iter().flat_map(|r| {
            let (lo, hi) = r.ci.or(r.sd.map(|sd| (r.value - sd, r.value + sd))).unwrap_or((r.value, r.value));
            [lo, hi, r.value]
        });
        let (lo, hi) = ends.filter(|v| v.is_finite()).fold((0.45f64, 0.55f64), |(l, h), v| (l.min(v), h.max(v)));
        let names: Vec<String> = s.models.iter().map(|m| m.to_string()).collect();
        let mut chart = ChartBuilder::on(panel)
            .caption(*attack, font(TEXT))
            .margin(8)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(label_width)
            .build_cartesian_2d((lo - 0.02)..(hi + 0.02), -0.6f64..(n as f64 - 0.4))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("AUC")
            .x_labels(4)
            .y_labels(n.max(1))
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n { names[n - 1 - i as usize].clone() } else { String::new() }
            })
            .label_style(font(TEXT))
            .axis_desc_style(font(TEXT))
            .draw()
            .map_err(err)?;
        chart.draw_series(LineSeries::new([(0.5, -0.6), (0.5, n as f64 - 0.4)], BLACK.mix(0.35).stroke_width(1))).map_err(err)?;
        let k = s.seeds.len() as f64;
        for r in &rows {
            let y = y_of(&r.model);
            match r.seed {
                Some(seed) => {
                    let j = s.seeds.iter().position(|x| *x == seed).unwrap_or(0);
                    let st = series(j);
                    // Each seed a little above or below the model's line, so none hides another;
                    // a gap stays between one model's seeds and the next model's.
                    let y = y + 0.35 - 0.7 * (j as f64 + 1.0) / (k + 1.0);
                    if let Some((l, h)) = r.ci {
                        chart.draw_series(LineSeries::new([(l, y), (h, y)], st.color.stroke_width(2))).map_err(err)?;
                    }
                    draw_marker(chart.plotting_area(), st.marker, (r.value, y), st.color, 5)?;
                }
                None => {
                    if let Some(sd) = r.sd {
                        chart.draw_series(std::iter::once(ErrorBar::new_horizontal(y, r.value - sd, r.value, r.value + sd, BLACK.stroke_width(2), 8))).map_err(err)?;
                    }
                    draw_marker(chart.plotting_area(), style::Marker::Circle, (r.value, y), BLACK, 5)?;
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
    let name = "fig10_seed_spread";
    let (_, grid_rows) = seed_grid(spread.attacks.len());
    let legend = legend_height(&spread.entries(), Column::Two.design_width(), TEXT);
    // Each model's band tall enough for its seeds' lines at least 6 units apart.
    let band = (32).max(9 * spread.seeds.len() as u32 + 8);
    let height = 30 + legend + grid_rows as u32 * (90 + band * spread.models.len() as u32);
    let svg = draw_figure!(seed_spread, &spread, dir, name, column(name), height);
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

    #[test]
    fn the_seed_spread_tells_ten_seeds_apart() {
        // More seeds than colours: the eighth onwards differ by marker and dash.
        let row = |model: &str, seed: Option<u64>, value: f64| SeedRow {
            model: model.into(),
            role: Default::default(),
            attack: "loss".into(),
            metric: "auc".into(),
            seed,
            value,
            ci: seed.map(|_| (value - 0.05, value + 0.05)),
            n_seeds: if seed.is_some() { 1 } else { 10 },
            sd: seed.is_none().then_some(0.02),
            range: seed.is_none().then_some((0.5, 0.7)),
        };
        let mut rows = Vec::new();
        for model in ["teacher", "kd-small"] {
            rows.extend((0..10).map(|s| row(model, Some(s), 0.5 + 0.02 * s as f64)));
            rows.push(row(model, None, 0.6));
        }
        let dir = std::env::temp_dir().join(format!("kdh-seed-spread-{}", std::process::id()));
        legend_log(true);
        let figure = render_seed_spread(&rows, &dir).unwrap().unwrap();
        let legends = legend_log(false);
        std::fs::remove_dir_all(&dir).ok();
        assert!(figure.svg.contains("seed 9"), "every seed in the legend");
        let [(name, entries)] = legends.as_slice() else { panic!("one legend: {legends:?}") };
        assert_eq!(name, "fig10_seed_spread");
        assert!(entries.len() >= 10, "{entries:?}");
        for (i, (a, sa)) in entries.iter().enumerate() {
            for (b, sb) in &entries[..i] {
                assert!(!sa.looks_like(sb), "`{a}` and `{b}` look alike");
            }
        }
    }

    #[test]
    fn a_paper_svg_is_sized_in_inches_and_keeps_its_drawing() {
        let svg = "<?xml version=\"1.0\"?>\n<svg width=\"900\" height=\"450\" viewBox=\"0 0 900 450\" xmlns=\"http://www.w3.org/2000/svg\">\n<rect/></svg>";
        let paper = paper_svg(svg, Column::Two);
        assert!(paper.contains("<svg width=\"6.900in\" height=\"3.450in\" viewBox=\"0 0 900 450\""), "{paper}");
        assert!(paper.ends_with("<rect/></svg>"));
        let png = rasterize(svg, Column::Two).unwrap();
        // The PNG header's width and height: 6.9 in and 3.45 in at 300 dpi.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 2070);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 1035);
    }
}
