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

/// Places each label `(point, text)` (backend pixels) next to its point without
/// overlapping an earlier label or any marker, inside `bounds` (left, top, right, bottom):
/// right above, right below, left above, left below its point, else the nearest free
/// place on rings further out (the caller draws a leader line to those). Returns each
/// text with its top-left corner.
pub fn place_labels(labels: &[((i32, i32), String)], markers: &[(i32, i32)], font_size: u32, bounds: (i32, i32, i32, i32)) -> Vec<(String, (i32, i32))> {
    let boxes_overlap = |a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)| a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3;
    let mut taken: Vec<(i32, i32, i32, i32)> = markers.iter().map(|&(x, y)| (x - 7, y - 7, x + 7, y + 7)).collect();
    let mut out = Vec::new();
    for ((x, y), text) in labels {
        let (w, h) = (text_width(text, font_size), font_size as i32 + 2);
        let mut candidates: Vec<(i32, i32)> = vec![(8, -h - 2), (8, 3), (-8 - w, -h - 2), (-8 - w, 3)];
        for radius in [18, 30, 44, 60, 78, 100, 126, 156] {
            for k in 0..16 {
                let angle = std::f64::consts::TAU * k as f64 / 16.0;
                let (cx, cy) = ((radius as f64 * angle.cos()) as i32, (radius as f64 * angle.sin()) as i32);
                // The box on the far side of the offset point, so the point stays clear.
                let dx = if cx >= 0 { cx } else { cx - w };
                let dy = if cy >= 0 { cy } else { cy - h };
                candidates.push((dx, dy));
            }
        }
        let inside = |cx: i32, cy: i32| cx >= bounds.0 && cy >= bounds.1 && cx + w <= bounds.2 && cy + h <= bounds.3;
        let corner = candidates
            .iter()
            .map(|(dx, dy)| (x + dx, y + dy))
            .find(|&(cx, cy)| inside(cx, cy) && !taken.iter().any(|t| boxes_overlap((cx, cy, cx + w, cy + h), *t)))
            .unwrap_or((x + 8, y - h - 2));
        taken.push((corner.0, corner.1, corner.0 + w, corner.1 + h));
        out.push((text.clone(), corner));
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
                assert!(a.color != b.color || (a.marker != b.marker && a.dash != b.dash), "{a:?} and {b:?} look alike");
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
