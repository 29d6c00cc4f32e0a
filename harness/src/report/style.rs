//! One style for every figure (issue 19): the Okabe–Ito palette with marker and
//! line-style cycling, so that no two series of a figure look alike; legends in a strip
//! outside the data; labels placed without overlap; paper sizes.
//!
//! Sizes: a figure is drawn once, as SVG, at a design width of [`DESIGN_WIDTH`] units for
//! its paper width ([`Column`]: one column, 3.3 in, or two, 6.9 in); the SVG file says its
//! size in inches and the PNG is that SVG rasterised at 300 dpi (resvg, with the bundled
//! font). Text is at least [`MIN_FONT`] units, 8 pt or more at paper size.

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The Okabe–Ito colours but black (kept for references: an undefended model, a mean):
/// orange, sky blue, bluish green, blue, vermillion, reddish purple, yellow.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(240, 228, 66),
];

/// A marker shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Marker {
    /// ●
    Circle,
    /// ▲
    Triangle,
    /// ✕
    Cross,
    /// ▼
    Down,
}

/// A line's dash pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dash {
    /// Solid.
    Solid,
    /// Long dashes.
    Dashed,
    /// Short dashes.
    Dotted,
    /// Very long dashes.
    Long,
}

/// How series `i` of a figure is drawn: colour `i mod 7`, then the next marker and dash
/// pattern for each further round of colours, so that the first 28 series all differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Series {
    /// Its colour.
    pub color: RGBColor,
    /// Its marker.
    pub marker: Marker,
    /// Its line.
    pub dash: Dash,
}

impl Series {
    /// Whether a reader could take `self` for `other`: the same colour with the same marker
    /// or the same dash pattern (a legend entry shows one or the other).
    pub fn looks_like(&self, other: &Series) -> bool {
        self.color == other.color && (self.marker == other.marker || self.dash == other.dash)
    }
}

/// The style of series `i`.
pub fn series(i: usize) -> Series {
    let round = i / PALETTE.len();
    Series {
        color: PALETTE[i % PALETTE.len()],
        marker: [Marker::Circle, Marker::Triangle, Marker::Cross, Marker::Down][round % 4],
        dash: [Dash::Solid, Dash::Dashed, Dash::Dotted, Dash::Long][round % 4],
    }
}

/// Width of every figure's drawing, in SVG units, whatever its paper width.
pub const DESIGN_WIDTH: u32 = 900;

/// The smallest font, in plotters' units: plotters writes a font of size `s` into SVG as
/// `s / 1.24` units, so 19 is 15.3 units, 8.5 pt at paper size (0.552 pt a unit, see
/// [`Column::points_per_unit`]).
pub const MIN_FONT: u32 = 19;

/// A figure's paper width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// One column of a two-column paper: 3.3 in.
    One,
    /// The page width: 6.9 in.
    Two,
}

impl Column {
    /// Inches.
    pub fn inches(self) -> f64 {
        match self {
            Column::One => 3.3,
            Column::Two => 6.9,
        }
    }

    /// The design width of a figure of this column: [`DESIGN_WIDTH`] for two columns,
    /// proportionally less for one, so that a design unit is the same size on paper.
    pub fn design_width(self) -> u32 {
        (DESIGN_WIDTH as f64 * self.inches() / Column::Two.inches()).round() as u32
    }

    /// Points per design unit at paper size.
    pub fn points_per_unit(self) -> f64 {
        self.inches() * 72.0 / self.design_width() as f64
    }
}

/// Pixels per inch of the PNG figures.
pub const DPI: f64 = 300.0;

/// Draws marker `marker` of `color` at `at` (filled shapes; the cross stroked).
pub fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(area: &DrawingArea<DB, CT>, marker: Marker, at: CT::From, color: RGBColor, size: i32) -> Result<(), String>
where
    CT::From: Clone + 'static,
{
    let style = color.filled();
    match marker {
        Marker::Circle => area.draw(&Circle::new(at, size, style)),
        Marker::Triangle => area.draw(&(EmptyElement::at(at) + Polygon::new(vec![(0, -size - 1), (size + 1, size), (-size - 1, size)], style))),
        Marker::Cross => area.draw(&Cross::new(at, size, color.stroke_width(3))),
        Marker::Down => area.draw(&(EmptyElement::at(at) + Polygon::new(vec![(0, size + 1), (size + 1, -size), (-size - 1, -size)], style))),
    }
    .map_err(|e| e.to_string())
}

/// Draws the line through `points` in `s`'s colour and dash pattern, `width` units wide.
pub fn draw_line<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    points: &[(X::ValueType, Y::ValueType)],
    s: Series,
    width: u32,
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    let style = s.color.stroke_width(width);
    let points = points.to_vec();
    let drawn = match s.dash {
        Dash::Solid => chart.draw_series(LineSeries::new(points, style)).map(|_| ()),
        Dash::Dashed => chart.draw_series(DashedLineSeries::new(points, 12, 7, style)).map(|_| ()),
        Dash::Dotted => chart.draw_series(DashedLineSeries::new(points, 3, 5, style)).map(|_| ()),
        Dash::Long => chart.draw_series(DashedLineSeries::new(points, 24, 8, style)).map(|_| ()),
    };
    drawn.map_err(|e| e.to_string())
}

/// One legend entry: a label and how its series is drawn (`line`: a line sample beside the
/// marker).
pub struct Entry {
    /// The label.
    pub label: String,
    /// Its colour, marker and dash pattern.
    pub series: Series,
    /// Whether the series is a line.
    pub line: bool,
    /// Whether its points carry markers.
    pub marks: bool,
}

/// Draws `entries` as rows of a legend strip across `area` (outside the data), starting at
/// its top left, wrapping at its width; returns the height used.
pub fn legend_strip<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, entries: &[Entry], font_size: u32) -> Result<i32, String> {
    let (w, _) = area.dim_in_pixel();
    let row_height = font_size as i32 + 10;
    let (mut x, mut y) = (10i32, row_height / 2 + 4);
    for e in entries {
        let width = 34 + text_width(&e.label, font_size);
        if x + width > w as i32 - 6 && x > 10 {
            x = 10;
            y += row_height;
        }
        if e.line {
            let dashes: &[(i32, i32)] = match e.series.dash {
                Dash::Solid => &[(0, 26)],
                Dash::Dashed => &[(0, 11), (15, 26)],
                Dash::Dotted => &[(0, 3), (8, 11), (16, 19), (23, 26)],
                Dash::Long => &[(0, 26)],
            };
            for (a, b) in dashes {
                area.draw(&PathElement::new(vec![(x + a, y), (x + b, y)], e.series.color.stroke_width(3))).map_err(|e| e.to_string())?;
            }
        }
        if e.marks {
            draw_marker(area, e.series.marker, (x + 13, y), e.series.color, 5)?;
        }
        area.draw(&Text::new(e.label.clone(), (x + 32, y), TextStyle::from(("sans-serif", font_size).into_font()).pos(Pos::new(HPos::Left, VPos::Center))))
            .map_err(|e| e.to_string())?;
        x += width + 14;
    }
    Ok(y + row_height / 2)
}

/// How many rows `entries` take in a legend strip `width` wide (for sizing a figure).
pub fn legend_rows(entries: &[Entry], width: u32, font_size: u32) -> u32 {
    let (mut x, mut rows) = (10i32, 1);
    for e in entries {
        let w = 34 + text_width(&e.label, font_size);
        if x + w > width as i32 - 6 && x > 10 {
            x = 10;
            rows += 1;
        }
        x += w + 14;
    }
    rows
}

/// The height of a legend strip of `entries` `width` wide.
pub fn legend_height(entries: &[Entry], width: u32, font_size: u32) -> u32 {
    legend_rows(entries, width, font_size) * (font_size + 10) + 8
}

/// An estimate of `text`'s width in design units, for a plotters font size (SVG size
/// `font_size / 1.24`; DejaVu Sans averages a little over 0.6 em a glyph): a slight
/// overestimate, so that what is kept apart stays apart.
pub fn text_width(text: &str, font_size: u32) -> i32 {
    (text.chars().count() as f64 * font_size as f64 * 0.52).ceil() as i32
}

/// A box in backend pixels: left, top, right, bottom.
type Box = (i32, i32, i32, i32);

/// Whether boxes `a` and `b` overlap.
fn overlap(a: Box, b: Box) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// The box a marker at `p` covers.
fn marker_box(p: (i32, i32)) -> Box {
    (p.0 - 7, p.1 - 7, p.0 + 7, p.1 + 7)
}

/// Whether a label box `b` beside the marker `own` (no leader line) stays clear of every
/// other marker by a margin, so that it reads as its own marker's label.
fn nearest_own(b: Box, own: Box, markers: &[Box]) -> bool {
    markers.iter().filter(|m| **m != own).all(|m| !overlap(b, (m.0 - 10, m.1 - 10, m.2 + 10, m.3 + 10)))
}

/// The leader line from a marker at `point` to its label's box `b` (from just outside the
/// marker to the nearest point of the box), or `None` when the label sits beside it.
pub fn leader(point: (i32, i32), b: Box) -> Option<((i32, i32), (i32, i32))> {
    let (px, py) = point;
    let (nx, ny) = (px.clamp(b.0, b.2), py.clamp(b.1, b.3));
    let (dx, dy) = ((nx - px) as f64, (ny - py) as f64);
    let distance = (dx * dx + dy * dy).sqrt();
    (distance > 12.0).then(|| ((px + (dx * 8.0 / distance) as i32, py + (dy * 8.0 / distance) as i32), (nx, ny)))
}

/// Whether segments `a` and `b` cross (touching ends do not count).
fn segments_cross(a: ((i32, i32), (i32, i32)), b: ((i32, i32), (i32, i32))) -> bool {
    let turn = |p: (i32, i32), q: (i32, i32), r: (i32, i32)| ((q.0 - p.0) as i64 * (r.1 - p.1) as i64 - (q.1 - p.1) as i64 * (r.0 - p.0) as i64).signum();
    turn(a.0, a.1, b.0) * turn(a.0, a.1, b.1) < 0 && turn(b.0, b.1, a.0) * turn(b.0, b.1, a.1) < 0
}

/// Whether segment `s` passes through the inside of box `b`.
fn segment_enters(s: ((i32, i32), (i32, i32)), b: Box) -> bool {
    let inside = |(x, y): (i32, i32)| b.0 < x && x < b.2 && b.1 < y && y < b.3;
    let edges = [((b.0, b.1), (b.2, b.1)), ((b.2, b.1), (b.2, b.3)), ((b.2, b.3), (b.0, b.3)), ((b.0, b.3), (b.0, b.1))];
    inside(s.0) || inside(s.1) || edges.iter().any(|&e| segments_cross(s, e))
}

/// Markers nearer each other than this (backend pixels) form a cluster, whose labels go
/// into callout columns.
const CLUSTER: i32 = 40;

/// Places each label `(point, text)` (backend pixels) inside `bounds` (left, top, right,
/// bottom) and returns each text with its top-left corner. The label of a point with no
/// other marker within [`CLUSTER`] goes beside it (right above, right below, left above,
/// left below) where it overlaps no other label and no marker and sits nearer its own
/// marker than any other. The labels of clustered points, and of those with no such room,
/// go into callout columns, one each side of the cluster, in the order of
/// their points' heights, so that their [`leader`] lines run side by side; a label that no
/// column can take is placed on rings around its point (see [`place_in_order`]).
pub fn place_labels(labels: &[((i32, i32), String)], markers: &[(i32, i32)], font_size: u32, bounds: (i32, i32, i32, i32)) -> Vec<(String, (i32, i32))> {
    let marker_boxes: Vec<Box> = markers.iter().copied().map(marker_box).collect();
    let inside = |b: Box| b.0 >= bounds.0 && b.1 >= bounds.1 && b.2 <= bounds.2 && b.3 <= bounds.3;
    let h = font_size as i32 + 2;
    let width = |i: usize| text_width(&labels[i].1, font_size);
    let mut placed: Vec<Option<Box>> = vec![None; labels.len()];
    // Beside the point, for the points with no other marker close by: inside a cluster a
    // label beside one point would stand as near to the next, and the cluster's leader
    // lines would cross it.
    let crowded = |p: (i32, i32)| markers.iter().any(|m| *m != p && (m.0 - p.0).pow(2) + (m.1 - p.1).pow(2) < CLUSTER * CLUSTER);
    for i in (0..labels.len()).filter(|&i| !crowded(labels[i].0)) {
        let ((x, y), w) = (labels[i].0, width(i));
        let beside = [(x + 8, y - h - 2), (x + 8, y + 3), (x - 8 - w, y - h - 2), (x - 8 - w, y + 3)].map(|(bx, by)| (bx, by, bx + w, by + h));
        placed[i] = beside
            .into_iter()
            .find(|&b| inside(b) && !placed.iter().flatten().chain(&marker_boxes).any(|t| overlap(b, *t)) && nearest_own(b, marker_box((x, y)), &marker_boxes));
    }
    // Callout columns for the rest: those left of the rest's middle in one, the others in
    // another, each where it overlaps nothing with the shortest leader lines.
    let rest: Vec<usize> = (0..labels.len()).filter(|&i| placed[i].is_none()).collect();
    if !rest.is_empty() {
        let mut xs: Vec<i32> = rest.iter().map(|&i| labels[i].0.0).collect();
        xs.sort();
        let middle = xs[xs.len() / 2];
        // The left column first; what it cannot take (no room inside the bounds) joins
        // the right one, and what that cannot take tries the left once more.
        let mut carried: Vec<usize> = Vec::new();
        for (pass, right) in [false, true, false].into_iter().enumerate() {
            let mut side: Vec<usize> = if pass == 2 { Vec::new() } else { rest.iter().copied().filter(|&i| (labels[i].0.0 >= middle) == right).collect() };
            side.append(&mut carried);
            if side.is_empty() {
                continue;
            }
            side.sort_by_key(|&i| labels[i].0.1);
            let total = side.len() as i32 * (h + 2);
            if total > bounds.3 - bounds.1 {
                carried = side;
                continue;
            }
            let slots = |side: &[usize], edge: i32, top: i32| -> Vec<Box> {
                side.iter()
                    .enumerate()
                    .map(|(k, &i)| {
                        let (w, y) = (width(i), top + k as i32 * (h + 2));
                        if right { (edge, y, edge + w, y + h) } else { (edge - w, y, edge, y + h) }
                    })
                    .collect()
            };
            // The column anywhere inside the bounds where it overlaps nothing, on its side of
            // the points it labels where it can be, with the shortest leader lines in all.
            let widest = side.iter().map(|&i| width(i)).max().unwrap_or(0);
            let edges: Vec<i32> = if right { (bounds.0..=bounds.2 - widest).step_by(8).collect() } else { (bounds.0 + widest..=bounds.2).step_by(8).collect() };
            let tops: Vec<i32> = (bounds.1..=bounds.3 - total).step_by(((h + 2) / 2) as usize).collect();
            let free = |boxes: &[Box]| boxes.iter().all(|b| inside(*b) && !placed.iter().flatten().chain(&marker_boxes).any(|t| overlap(*b, *t)));
            let cost = |side: &[usize], boxes: &[Box]| -> f64 {
                let beside = |k: usize| if right { boxes[k].0 >= labels[side[k]].0.0 } else { boxes[k].2 <= labels[side[k]].0.0 };
                (0..side.len())
                    .map(|k| {
                        let (p, b) = (labels[side[k]].0, boxes[k]);
                        let (nx, ny) = (p.0.clamp(b.0, b.2), p.1.clamp(b.1, b.3));
                        let length = (((nx - p.0).pow(2) + (ny - p.1).pow(2)) as f64).sqrt();
                        // A label on the far side of its point costs as if twice as far.
                        if beside(k) { length } else { 2.0 * length + 200.0 }
                    })
                    .sum()
            };
            let best = tops
                .iter()
                .flat_map(|&top| edges.iter().map(move |&edge| (edge, top)))
                .map(|(edge, top)| (edge, top, slots(&side, edge, top)))
                .filter(|(_, _, boxes)| free(boxes))
                .map(|(edge, top, boxes)| (cost(&side, &boxes), edge, top))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let mut taken = false;
            if let Some((_, edge, top)) = best {
                // Swap neighbours whose leader lines cross, while the column stays free.
                for _ in 0..side.len() {
                    let mut swapped = false;
                    for k in 1..side.len() {
                        let boxes = slots(&side, edge, top);
                        let crossing = matches!((leader(labels[side[k - 1]].0, boxes[k - 1]), leader(labels[side[k]].0, boxes[k])), (Some(a), Some(b)) if segments_cross(a, b));
                        if crossing {
                            side.swap(k - 1, k);
                            if free(&slots(&side, edge, top)) {
                                swapped = true;
                            } else {
                                side.swap(k - 1, k);
                            }
                        }
                    }
                    if !swapped {
                        break;
                    }
                }
                for (&i, b) in side.iter().zip(slots(&side, edge, top)) {
                    placed[i] = Some(b);
                }
                taken = true;
            }
            if !taken {
                carried = side;
            }
        }
    }
    // Rings around their points for any label no column could take.
    let left: Vec<usize> = (0..labels.len()).filter(|&i| placed[i].is_none()).collect();
    if !left.is_empty() {
        let fixed: Vec<Box> = placed.iter().flatten().copied().collect();
        for (&i, b) in left.iter().zip(place_in_order(labels, &marker_boxes, font_size, bounds, &left, &fixed)) {
            placed[i] = Some(b);
        }
    }
    labels.iter().zip(placed).map(|((_, text), b)| (text.clone(), b.map_or((0, 0), |b| (b.0, b.1)))).collect()
}

/// One greedy placement of the labels in `order` beside `fixed` ones: each label at the
/// first free place beside its point or on rings further out, preferring places whose
/// leader line crosses no label, marker or leader; returns their boxes, in `order`.
fn place_in_order(labels: &[((i32, i32), String)], marker_boxes: &[Box], font_size: u32, bounds: Box, order: &[usize], fixed: &[Box]) -> Vec<Box> {
    let mut placed: Vec<Box> = fixed.to_vec();
    let mut leaders: Vec<((i32, i32), (i32, i32))> = Vec::new();
    let mut out = Vec::new();
    for &i in order {
        let (point, text) = &labels[i];
        let (x, y) = *point;
        let (w, h) = (text_width(text, font_size), font_size as i32 + 2);
        let mut candidates: Vec<(i32, i32)> = vec![(8, -h - 2), (8, 3), (-8 - w, -h - 2), (-8 - w, 3)];
        let ring = |candidates: &mut Vec<(i32, i32)>, radius: i32| {
            // Finer steps further out, where a step's arc is longer.
            let steps = if radius < 60 { 16 } else { 32 };
            for k in 0..steps {
                let angle = std::f64::consts::TAU * k as f64 / steps as f64;
                let (cx, cy) = ((radius as f64 * angle.cos()) as i32, (radius as f64 * angle.sin()) as i32);
                // The box on the far side of the offset point, so the point stays clear.
                let dx = if cx >= 0 { cx } else { cx - w };
                let dy = if cy >= 0 { cy } else { cy - h };
                candidates.push((dx, dy));
            }
        };
        ring(&mut candidates, 18);
        ring(&mut candidates, 30);
        // Then callouts to the side: nearly level leader lines, which stack into a column
        // beside a cluster without crossing.
        for reach in [40, 70, 100, 130, 160] {
            for step in [0, -1, 1, -2, 2, -3, 3, -4, 4] {
                let dy = -h / 2 + step * (h + 2);
                candidates.extend([(reach, dy), (-reach - w, dy)]);
            }
        }
        for radius in [44, 60, 78, 100, 126, 156, 190, 230, 280, 340] {
            ring(&mut candidates, radius);
        }
        let free = |b: Box| b.0 >= bounds.0 && b.1 >= bounds.1 && b.2 <= bounds.2 && b.3 <= bounds.3 && !placed.iter().chain(marker_boxes).any(|t| overlap(b, *t));
        // Leader lines clear of the other labels and leaders, and (`markers_too`) of the
        // other markers; a label without a leader line nearer its own marker than any other.
        let own = marker_box(*point);
        let clear_lines = |b: Box, markers_too: bool| {
            let others = marker_boxes.iter().filter(|m| markers_too && **m != own);
            let line_ok = leader(*point, b).is_none_or(|l| !placed.iter().chain(others).any(|t| segment_enters(l, *t)) && !leaders.iter().any(|o| segments_cross(l, *o)));
            let own_nearest = leader(*point, b).is_some() || nearest_own(b, own, marker_boxes);
            line_ok && own_nearest && !leaders.iter().any(|o| segment_enters(*o, b))
        };
        let boxes: Vec<Box> = candidates.iter().map(|(dx, dy)| (x + dx, y + dy, x + dx + w, y + dy + h)).collect();
        let chosen = boxes
            .iter()
            .find(|b| free(**b) && clear_lines(**b, true))
            .or_else(|| boxes.iter().find(|b| free(**b) && clear_lines(**b, false)))
            .or_else(|| boxes.iter().find(|b| free(**b)))
            .copied()
            .unwrap_or(boxes[0]);
        leaders.extend(leader(*point, chosen));
        placed.push(chosen);
        out.push(chosen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_28_series_all_differ_and_every_colour_is_okabe_ito() {
        let styles: Vec<Series> = (0..28).map(series).collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[..i] {
                assert!(!a.looks_like(b), "{a:?} and {b:?} look alike");
            }
        }
        assert_eq!(series(7).color, series(0).color);
        assert_ne!((series(7).marker, series(7).dash), (series(0).marker, series(0).dash));
    }

    #[test]
    fn paper_sizes_keep_text_at_8_points_or_more() {
        for column in [Column::One, Column::Two] {
            let points = MIN_FONT as f64 / 1.24 * column.points_per_unit();
            assert!(points >= 8.0, "{column:?}: {points}");
        }
        assert_eq!(Column::Two.design_width(), 900);
        assert_eq!(Column::One.design_width(), 430);
    }

    #[test]
    fn leader_lines_cross_no_label_and_no_other_leader() {
        // A crowded cluster (as in figure 6) and one point apart: the cluster's labels go out
        // on leader lines.
        let mut points: Vec<(i32, i32)> = (0..14).map(|i| (300 + (i * 37 % 120), 200 + (i * 23 % 90))).collect();
        points.push((800, 60));
        let labels: Vec<((i32, i32), String)> = points.iter().enumerate().map(|(i, p)| (*p, format!("model-{i}"))).collect();
        let placed = place_labels(&labels, &points, 19, (0, 0, 900, 500));
        let boxes: Vec<Box> = placed.iter().map(|(t, (x, y))| (*x, *y, x + text_width(t, 19), y + 21)).collect();
        let lines: Vec<_> = points.iter().zip(&boxes).filter_map(|(p, b)| leader(*p, *b)).collect();
        assert!(lines.len() >= 4, "the cluster needs leader lines: {lines:?}");
        assert!(leader(points[14], boxes[14]).is_none(), "the point apart is labelled beside itself");
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.0 >= 0 && a.1 >= 0 && a.2 <= 900 && a.3 <= 500, "{a:?} leaves the bounds");
            for b in boxes[..i].iter().chain(&points.iter().map(|&(x, y)| (x - 7, y - 7, x + 7, y + 7)).collect::<Vec<_>>()) {
                assert!(!(a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3), "{a:?} overlaps {b:?}");
            }
        }
        for (i, (p, b)) in points.iter().zip(&boxes).enumerate() {
            let Some(line) = leader(*p, *b) else { continue };
            for (j, other) in boxes.iter().enumerate() {
                assert!(i == j || !segment_enters(line, *other), "label {i}'s leader runs through label {j}");
            }
            for other in &lines {
                assert!(*other == line || !segments_cross(line, *other), "label {i}'s leader crosses another");
            }
        }
        assert!(segments_cross(((0, 0), (10, 10)), ((0, 10), (10, 0))));
        assert!(!segments_cross(((0, 0), (10, 0)), ((0, 5), (10, 5))));
        assert!(segment_enters(((0, 5), (20, 5)), (5, 0, 10, 10)));
        assert!(!segment_enters(((0, 20), (20, 20)), (5, 0, 10, 10)));
    }

    #[test]
    fn labels_avoid_each_other_and_the_markers() {
        let points = [(100, 100), (104, 100), (108, 102), (300, 50)];
        let labels: Vec<((i32, i32), String)> = points.iter().map(|p| (*p, "label".to_string())).collect();
        let placed = place_labels(&labels, &points, 15, (0, 0, 600, 400));
        let boxes: Vec<(i32, i32, i32, i32)> = placed.iter().map(|(t, (x, y))| (*x, *y, x + text_width(t, 15), y + 17)).collect();
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[..i] {
                assert!(!(a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3), "{a:?} overlaps {b:?}");
            }
            assert!(a.0 >= 0 && a.1 >= 0 && a.2 <= 600 && a.3 <= 400, "{a:?} leaves the bounds");
            for &(x, y) in &points {
                assert!(!(a.0 < x + 7 && x - 7 < a.2 && a.1 < y + 7 && y - 7 < a.3), "{a:?} covers the marker at {x},{y}");
            }
        }
    }
}
