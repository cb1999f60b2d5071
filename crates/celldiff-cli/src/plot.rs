//! PNG figures for the analysis commands (`celldiff interpolate`, `celldiff velocity`,
//! `celldiff evaluate-perturbation`) and for UMAP figures.
//!
//! A thin layer over [`plotters`] with its bitmap backend: four chart types that take plain
//! slices, so the analysis code never touches plotters itself:
//!
//! - [`line_plot`]: several series over a shared x axis, with a legend;
//! - [`heatmap`]: a matrix with row labels and a viridis colour bar;
//! - [`violin_plot`]: a grid of per-gene panels with one violin per group;
//! - [`scatter_panels`]: side-by-side 2-D scatter panels (e.g. UMAP of real cells coloured by
//!   cluster with generated cells overlaid, one panel per guidance weight ω) sharing a legend.
//!
//! Design points:
//!
//! - **Self-contained text.** Labels are rendered with DejaVu Sans embedded in the binary
//!   (`assets/DejaVuSans.ttf`, licence in `assets/FONT_LICENSE.md`) through plotters'
//!   `ab_glyph` renderer, so no system fonts or fontconfig are needed.
//! - **Atomic writes.** Each function draws to a temporary sibling file
//!   (`.<name>.tmp-<pid>-<n>.png`) and renames it onto `path` only once the PNG is complete; on
//!   any error the temporary file is removed, so a half-written figure is never left behind.
//!   Missing parent directories are created.
//! - **Forgiving about values.** Non-finite values (NaN, ±∞) are skipped, constant data get a
//!   padded axis range, and single points are drawn as markers. Empty or mismatched inputs are
//!   [`Error::Param`]; drawing failures are [`Error::Internal`]; file-system failures are
//!   [`Error::Io`].

use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use celldiff::error::{Error, Result};

/// One line of a line plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// One value per entry of the shared x axis; non-finite values leave a gap in the line.
    pub y: Vec<f64>,
}

/// One group of a violin panel: `(group_name, values)`, e.g. `("predicted", expression)`.
pub type ViolinGroup = (String, Vec<f64>);

/// One panel of a [`violin_plot`]: `(gene_name, groups)`.
pub type ViolinPanel = (String, Vec<ViolinGroup>);

/// How the points of a [`ScatterGroup`] are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointStyle {
    /// Filled circle (radius 2 px) in colour `i` of a 20-colour palette: matplotlib's `tab10`
    /// (the colours of the other charts) followed by the light halves of `tab20`; cycled for
    /// `i ≥ 20`.
    Palette(usize),
    /// Overlay: a small near-black, half-transparent cross (half-size 3 px), drawn on top of
    /// all [`PointStyle::Palette`] groups of the panel (e.g. generated cells over real ones).
    Overlay,
}

/// One named set of points in a [`ScatterPanel`], e.g. one cluster of real cells.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterGroup {
    /// Legend entry; groups with the same name in several panels share one entry (the marker
    /// of its first occurrence).
    pub name: String,
    /// `(x, y)` positions; points with a non-finite coordinate are skipped.
    pub points: Vec<(f64, f64)>,
    /// Marker of the points.
    pub style: PointStyle,
}

/// One panel of a [`scatter_panels`] figure.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPanel {
    /// Caption above the panel, e.g. "ω = −1".
    pub title: String,
    /// Point groups; the [`PointStyle::Palette`] groups are drawn first (in this order), then
    /// the [`PointStyle::Overlay`] groups.
    pub groups: Vec<ScatterGroup>,
}

/// Size of a [`line_plot`] in pixels (width, height).
const LINE_PLOT_SIZE: (u32, u32) = (900, 600);
/// Width of a [`heatmap`] in pixels; its height grows with the number of rows.
const HEATMAP_WIDTH: u32 = 900;
/// Size of one gene panel of a [`violin_plot`] in pixels (width, height).
const VIOLIN_PANEL_SIZE: (u32, u32) = (320, 280);
/// Height of the title strip of a [`violin_plot`].
const VIOLIN_TITLE_HEIGHT: u32 = 50;
/// Smallest width of a [`violin_plot`] (a single panel would otherwise be 320 px).
const VIOLIN_MIN_WIDTH: u32 = 1200;
/// At most this many panels per row in a [`violin_plot`].
const VIOLIN_MAX_COLUMNS: usize = 4;
/// At most this many panels in one [`violin_plot`] (keeps the bitmap below ~70 MB).
const VIOLIN_MAX_PANELS: usize = 256;
/// Size of one panel of a [`scatter_panels`] figure in pixels (width, height).
const SCATTER_PANEL_SIZE: (u32, u32) = (600, 560);
/// Height of the title strip of a [`scatter_panels`] figure.
const SCATTER_TITLE_HEIGHT: u32 = 50;
/// Width of the legend column on the right of a [`scatter_panels`] figure.
const SCATTER_LEGEND_WIDTH: u32 = 260;
/// Height of one legend line of a [`scatter_panels`] figure.
const SCATTER_LEGEND_LINE: u32 = 18;
/// Space above and below the legend lines of a [`scatter_panels`] figure.
const SCATTER_LEGEND_PAD: u32 = 20;
/// At most this many legend entries are listed; the rest are summarised as "… N more".
const SCATTER_MAX_LEGEND: usize = 40;
/// At most this many panels per row in a [`scatter_panels`] figure.
const SCATTER_MAX_COLUMNS: usize = 3;
/// At most this many panels in one [`scatter_panels`] figure (keeps the bitmap below ~40 MB).
const SCATTER_MAX_PANELS: usize = 30;
/// Radius of a [`PointStyle::Palette`] point in pixels.
const SCATTER_POINT_RADIUS: i32 = 2;
/// Half-size of a [`PointStyle::Overlay`] cross in pixels.
const SCATTER_CROSS_SIZE: i32 = 3;
/// Colour and opacity of [`PointStyle::Overlay`] markers.
const OVERLAY_COLOUR: RGBColor = RGBColor(20, 20, 20);
const OVERLAY_ALPHA: f64 = 0.5;
/// Labels longer than this many characters are shortened with an ellipsis.
const MAX_LABEL_CHARS: usize = 32;

/// Qualitative palette (matplotlib's `tab10`) for series and violin groups.
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

/// Palette of [`PointStyle::Palette`]: [`PALETTE`] (`tab10`) followed by the light colours of
/// matplotlib's `tab20`, in the same hue order.
const SCATTER_PALETTE: [RGBColor; 20] = [
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
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// Five stops of matplotlib's viridis colour map, from low to high.
const VIRIDIS: [(u8, u8, u8); 5] = [
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
];

/// Result of the drawing code: any plotters error, turned into [`Error::Internal`] later.
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// The drawing area of a whole figure.
type Canvas<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Line plot of several series over a shared x axis (e.g. λ ∈ [0, 1]), with a legend of the
/// series names; 900 × 600 px.
///
/// `x` holds the shared positions and each `series[i].y` one value per position
/// (`series[i].y.len() == x.len()`). Pairs where x or y is non-finite are skipped and break the
/// line; isolated points are still visible because every point gets a marker when there are at
/// most 50 positions. A series without any finite point is listed in the legend as
/// "(no finite values)".
///
/// # Errors
/// [`Error::Param`] if `x` or `series` is empty or a series' length differs from `x.len()`;
/// [`Error::Io`] if the file cannot be written (e.g. `path` is a directory);
/// [`Error::Internal`] if plotters fails to draw.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    x: &[f64],
    series: &[Series],
) -> Result<()> {
    if x.is_empty() {
        return Err(Error::Param("line plot: the x axis is empty".into()));
    }
    if series.is_empty() {
        return Err(Error::Param("line plot: no series to draw".into()));
    }
    if let Some(s) = series.iter().find(|s| s.y.len() != x.len()) {
        return Err(Error::Param(format!(
            "line plot: series `{}` has {} values but the x axis has {}",
            s.name,
            s.y.len(),
            x.len()
        )));
    }

    // Finite (x, y) runs of every series; a non-finite value ends a run.
    let runs: Vec<Vec<Vec<(f64, f64)>>> = series
        .iter()
        .map(|s| {
            x.iter()
                .zip(&s.y)
                .map(|(&xi, &yi)| (xi, yi))
                .collect::<Vec<_>>()
                .split(|&(xi, yi)| !(xi.is_finite() && yi.is_finite()))
                .filter(|run| !run.is_empty())
                .map(<[(f64, f64)]>::to_vec)
                .collect()
        })
        .collect();
    let finite_points = || runs.iter().flatten().flatten();
    let (x0, x1) = padded_range(finite_range(finite_points().map(|p| p.0)), 0.0);
    let (y0, y1) = padded_range(finite_range(finite_points().map(|p| p.1)), 0.05);
    let markers = x.len() <= 50;

    render_png(path, LINE_PLOT_SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;

        for (i, (s, runs)) in series.iter().zip(&runs).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let style = color.stroke_width(2);
            // An empty path carries the legend entry, so series without data are listed too.
            let label = if runs.is_empty() {
                format!("{} (no finite values)", shorten(&s.name))
            } else {
                shorten(&s.name)
            };
            chart
                .draw_series(std::iter::once(PathElement::new(Vec::new(), style)))?
                .label(label)
                .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], style));
            for run in runs {
                chart.draw_series(LineSeries::new(run.iter().copied(), style))?;
                if markers || run.len() == 1 {
                    chart.draw_series(run.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", 14))
            .draw()?;
        Ok(())
    })
}

/// Heatmap of a matrix: rows are `row_labels` (e.g. genes, or "corr with A" / "corr with B"),
/// columns are the positions `x` (e.g. λ), and `values[r][c]` is the value of row `r` at
/// position `x[c]`.
///
/// Colours follow a viridis-like map from the minimum to the maximum finite value, shown in a
/// colour bar on the right with both ends labelled; rows are labelled on the left (every k-th
/// label when rows are too thin to label them all). Non-finite cells are left blank (white).
/// When `x` is finite and strictly increasing the x axis is in data units and each cell spans
/// the midpoints to its neighbours; otherwise columns are equally spaced and labelled with
/// their `x` values. The image is 900 px wide and `150 + 22 · rows` px high, clamped to
/// 400–3000 px.
///
/// # Errors
/// [`Error::Param`] if `x` or `row_labels` is empty, `values.len() != row_labels.len()` or
/// some `values[r].len() != x.len()`; [`Error::Io`] if the file cannot be written;
/// [`Error::Internal`] if plotters fails to draw.
pub fn heatmap(
    path: &Path,
    title: &str,
    x_label: &str,
    x: &[f64],
    row_labels: &[String],
    values: &[Vec<f64>],
) -> Result<()> {
    if x.is_empty() {
        return Err(Error::Param(
            "heatmap: the x axis (columns) is empty".into(),
        ));
    }
    if row_labels.is_empty() {
        return Err(Error::Param("heatmap: no rows to draw".into()));
    }
    if values.len() != row_labels.len() {
        return Err(Error::Param(format!(
            "heatmap: {} rows of values but {} row labels",
            values.len(),
            row_labels.len()
        )));
    }
    if let Some((r, row)) = values
        .iter()
        .enumerate()
        .find(|(_, row)| row.len() != x.len())
    {
        return Err(Error::Param(format!(
            "heatmap: row `{}` has {} values but the x axis has {}",
            row_labels[r],
            row.len(),
            x.len()
        )));
    }

    let n_rows = row_labels.len();
    let n_cols = x.len();
    let (v_min, v_max) = padded_range(finite_range(values.iter().flatten().copied()), 0.0);
    let data_space = n_cols >= 2
        && x.iter().all(|v| v.is_finite())
        && x.windows(2).all(|w| w[1] > w[0])
        && (x[n_cols - 1] - x[0]).is_finite();
    // Column c covers [edges[c], edges[c + 1]].
    let edges: Vec<f64> = if data_space {
        let mut e = Vec::with_capacity(n_cols + 1);
        e.push(x[0] - (x[1] - x[0]) / 2.0);
        e.extend(x.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0));
        e.push(x[n_cols - 1] + (x[n_cols - 1] - x[n_cols - 2]) / 2.0);
        e
    } else {
        (0..=n_cols).map(|c| c as f64 - 0.5).collect()
    };
    let (e0, e1) = (edges[0], edges[n_cols]);
    let labels: Vec<String> = row_labels.iter().map(|l| shorten(l)).collect();
    let size = (HEATMAP_WIDTH, heatmap_height(n_rows));

    render_png(path, size, |root| {
        let label_style = TextStyle::from(("sans-serif", 13).into_font());
        let mut label_width = 0;
        for l in &labels {
            label_width = label_width.max(root.estimate_text_size(l, &label_style)?.0);
        }
        let label_width = label_width.clamp(20, 260);

        let area = root.titled(title, ("sans-serif", 24))?;
        let mut chart = ChartBuilder::on(&area)
            .margin_top(10)
            .margin_bottom(10)
            .margin_left(label_width + 12)
            .margin_right(130)
            .x_label_area_size(50)
            .build_cartesian_2d(e0..e1, 0.0..n_rows as f64)?;
        let data_fmt = |v: &f64| fmt_num(*v);
        let index_fmt = |v: &f64| {
            let c = v.round();
            if (v - c).abs() < 1e-6 && c >= 0.0 && (c as usize) < n_cols {
                fmt_num(x[c as usize])
            } else {
                String::new()
            }
        };
        let x_fmt: &dyn Fn(&f64) -> String = if data_space { &data_fmt } else { &index_fmt };
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_y_axis()
            .x_labels(n_cols.min(11))
            .x_label_formatter(x_fmt)
            .x_desc(x_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;

        // Row r is drawn from the top: it covers y ∈ [n_rows - r - 1, n_rows - r].
        chart.draw_series(values.iter().enumerate().flat_map(|(r, row)| {
            let top = (n_rows - r) as f64;
            let edges = &edges;
            row.iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(move |(c, &v)| {
                    let color = viridis((v - v_min) / (v_max - v_min));
                    Rectangle::new([(edges[c], top - 1.0), (edges[c + 1], top)], color.filled())
                })
        }))?;

        let (px_x, px_y) = chart.plotting_area().get_pixel_range();
        let row_px = f64::from(px_y.end - px_y.start) / n_rows as f64;
        let step = (14.0 / row_px.max(1e-9)).ceil().max(1.0) as usize;
        let right = label_style.pos(Pos::new(HPos::Right, VPos::Center));
        for (r, l) in labels.iter().enumerate().step_by(step) {
            let y = chart.backend_coord(&(e0, (n_rows - r) as f64 - 0.5)).1;
            root.draw(&Text::new(l.as_str(), (px_x.start - 6, y), right.clone()))?;
        }

        // Colour bar: one 1-px band per pixel row, max at the top.
        let (bar_x0, bar_x1) = (px_x.end + 25, px_x.end + 45);
        let bar_h = (px_y.end - px_y.start).max(1);
        for i in 0..bar_h {
            let t = 1.0 - f64::from(i) / f64::from((bar_h - 1).max(1));
            let y = px_y.start + i;
            root.draw(&Rectangle::new(
                [(bar_x0, y), (bar_x1, y + 1)],
                viridis(t).filled(),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(bar_x0, px_y.start), (bar_x1, px_y.end)],
            BLACK.stroke_width(1),
        ))?;
        let left =
            TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for k in 0..=4 {
            let t = f64::from(k) / 4.0;
            let y = px_y.end - (t * f64::from(bar_h)).round() as i32;
            let mut value = v_min + t * (v_max - v_min);
            if value.abs() < 1e-6 * (v_max - v_min) {
                value = 0.0; // a rounding residue such as 1.7e-17 reads as 0
            }
            let text = match k {
                0 => format!("min {}", fmt_num(value)),
                4 => format!("max {}", fmt_num(value)),
                _ => fmt_num(value),
            };
            root.draw(&PathElement::new(vec![(bar_x1, y), (bar_x1 + 4, y)], BLACK))?;
            root.draw(&Text::new(text, (bar_x1 + 7, y), left.clone()))?;
        }
        Ok(())
    })
}

/// Violin plots: one panel per gene in a grid of up to 4 columns, and in each panel one violin
/// per group (e.g. "control", "real stimulated", "predicted").
///
/// `panels[p] = (gene_name, groups)` and `groups[g] = (group_name, values)`; groups keep their
/// order and colour across panels. Each violin is a Gaussian kernel density estimate of the
/// group's finite values (Scott's bandwidth `σ · n^(-1/5)`, floored at 10⁻³ × the group's
/// range, or 10⁻³ for constant values), scaled to the same maximum width and mirrored around
/// the group's x position; the median is marked by a white dot and the interquartile range by
/// a dark bar. A group without negative values gets no density below 0 (expression cannot be
/// negative, so the kernel's tail is clipped there). Empty groups (or groups without finite
/// values) are drawn as nothing but still labelled; a panel without groups is an empty frame.
/// Each panel is 320 × 280 px below a 50 px title strip, and the figure is at least
/// 1200 px wide (few panels are stretched).
///
/// # Errors
/// [`Error::Param`] if `panels` is empty or has more than 256 panels; [`Error::Io`] if the
/// file cannot be written; [`Error::Internal`] if plotters fails to draw.
///
/// `y_label` goes on every panel's y axis (e.g. "log1p-normalised expression"; empty for
/// none).
pub fn violin_plot(path: &Path, title: &str, y_label: &str, panels: &[ViolinPanel]) -> Result<()> {
    if panels.is_empty() {
        return Err(Error::Param(
            "violin plot: no panels (genes) to draw".into(),
        ));
    }
    if panels.len() > VIOLIN_MAX_PANELS {
        return Err(Error::Param(format!(
            "violin plot: {} panels requested, at most {VIOLIN_MAX_PANELS} fit in one figure",
            panels.len()
        )));
    }
    let (n_cols, n_rows) = violin_grid(panels.len());
    let size = violin_size(panels.len());
    let shapes: Vec<Vec<Option<Violin>>> = panels
        .iter()
        .map(|(_, groups)| groups.iter().map(|(_, v)| Violin::new(v)).collect())
        .collect();

    // Shrink the title font (24 px down to 11 px) so that a long title fits a narrow figure;
    // a glyph of DejaVu Sans is about 0.55 em wide.
    let title_px =
        (f64::from(size.0) * 1.8 / title.chars().count().max(1) as f64).clamp(11.0, 24.0);
    render_png(path, size, |root| {
        let (top, grid) = root.split_vertically(VIOLIN_TITLE_HEIGHT);
        top.draw(&Text::new(
            title,
            (i32::try_from(size.0 / 2).unwrap_or(0), 12),
            TextStyle::from(("sans-serif", title_px).into_font())
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        let cells = grid.split_evenly((n_rows, n_cols));
        for (((gene, groups), shapes), cell) in panels.iter().zip(&shapes).zip(&cells) {
            draw_violin_panel(root, cell, gene, y_label, groups, shapes)?;
        }
        Ok(())
    })
}

/// Draws one gene panel of [`violin_plot`] into `cell`; group labels go onto `root` (absolute
/// pixel coordinates) because they sit outside the plotting area.
fn draw_violin_panel(
    root: &Canvas<'_>,
    cell: &Canvas<'_>,
    gene: &str,
    y_label: &str,
    groups: &[ViolinGroup],
    shapes: &[Option<Violin>],
) -> DrawResult {
    let n_groups = groups.len().max(1);
    let extent = finite_range(shapes.iter().flatten().flat_map(|v| [v.lo, v.hi]));
    let (y0, y1) = padded_range(extent, 0.03);
    let mut chart = ChartBuilder::on(cell)
        .caption(shorten(gene), ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(if y_label.is_empty() { 55 } else { 75 })
        .build_cartesian_2d(-0.5..n_groups as f64 - 0.5, y0..y1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(shorten(y_label))
        .x_label_formatter(&|_| String::new())
        .set_tick_mark_size(LabelAreaPosition::Bottom, 0)
        .y_labels(6)
        .label_style(("sans-serif", 12))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;

    for (g, shape) in shapes.iter().enumerate() {
        let Some(v) = shape else { continue };
        let color = PALETTE[g % PALETTE.len()];
        let gx = g as f64;
        let half_width = 0.4;
        if let Some(profile) = &v.profile {
            let outline: Vec<(f64, f64)> = profile
                .iter()
                .map(|&(y, d)| (gx + half_width * d, y))
                .chain(profile.iter().rev().map(|&(y, d)| (gx - half_width * d, y)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(
                outline.clone(),
                color.mix(0.55).filled(),
            )))?;
            chart.draw_series(std::iter::once(PathElement::new(
                outline,
                color.stroke_width(1),
            )))?;
        }
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(gx, v.q1), (gx, v.q3)],
            RGBColor(40, 40, 40).stroke_width(4),
        )))?;
        chart.draw_series(std::iter::once(Circle::new(
            (gx, v.median),
            4,
            WHITE.filled(),
        )))?;
        chart.draw_series(std::iter::once(Circle::new(
            (gx, v.median),
            4,
            BLACK.stroke_width(1),
        )))?;
    }

    // Group names, centred under each violin and fitted to the space available.
    let (px_x, px_y) = chart.plotting_area().get_pixel_range();
    let slot_px = (px_x.end - px_x.start) / i32::try_from(n_groups).unwrap_or(i32::MAX);
    for (g, (name, _)) in groups.iter().enumerate() {
        let px = chart.backend_coord(&(g as f64, y0)).0;
        let (text, style) = fit_label(root, name, u32::try_from(slot_px - 4).unwrap_or(0))?;
        let style = style.pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(text, (px, px_y.end + 5), style))?;
    }
    Ok(())
}

/// `label` in the largest font size of 12, 11 or 10 px in which it is at most `max_px` wide,
/// shortened with "…" if it does not fit even at 10 px.
fn fit_label(
    root: &Canvas<'_>,
    label: &str,
    max_px: u32,
) -> std::result::Result<(String, TextStyle<'static>), Box<dyn std::error::Error>> {
    let mut text = shorten(label);
    for size in [12, 11, 10] {
        let style = TextStyle::from(("sans-serif", size).into_font());
        if root.estimate_text_size(&text, &style)?.0 <= max_px {
            return Ok((text, style));
        }
    }
    let style = TextStyle::from(("sans-serif", 10).into_font());
    let mut chars = text.chars().count();
    while chars > 2 && root.estimate_text_size(&text, &style)?.0 > max_px {
        chars -= 1;
        text = shorten_to(label, chars);
    }
    Ok((text, style))
}

/// The shape and summary statistics of one violin.
#[derive(Debug, Clone, PartialEq)]
struct Violin {
    /// Density profile `(y, density / max density)` from `lo` to `hi`; `None` if the values
    /// are too extreme for a finite density grid (only the median and quartiles are drawn).
    profile: Option<Vec<(f64, f64)>>,
    /// Lower and upper end of the drawn shape.
    lo: f64,
    hi: f64,
    q1: f64,
    median: f64,
    q3: f64,
}

impl Violin {
    /// Number of points of the density grid.
    const GRID: usize = 128;
    /// The shape extends this many bandwidths beyond the extreme values.
    const CUT: f64 = 3.0;

    /// Gaussian KDE of the finite `values`; `None` if there are none.
    fn new(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let (min, max) = (v[0], v[n - 1]);
        let (q1, median, q3) = (quantile(&v, 0.25), quantile(&v, 0.5), quantile(&v, 0.75));

        let mean = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let range = max - min;
        let floor = if range > 0.0 { 1e-3 * range } else { 1e-3 };
        let scott = var.sqrt() * (n as f64).powf(-0.2);
        let h = if scott.is_finite() {
            scott.max(floor)
        } else {
            floor
        };
        let (mut lo, hi) = (min - Self::CUT * h, max + Self::CUT * h);
        if min >= 0.0 {
            // Non-negative values (expression): no density below 0.
            lo = lo.max(0.0);
        }
        let step = (hi - lo) / (Self::GRID - 1) as f64;
        if !(h.is_finite() && h > 0.0 && step.is_finite() && step > 0.0) {
            return Some(Self {
                profile: None,
                lo: min,
                hi: max,
                q1,
                median,
                q3,
            });
        }

        // Only points within 6 bandwidths contribute noticeably (exp(-18) ≈ 1.5e-8).
        let mut profile: Vec<(f64, f64)> = (0..Self::GRID)
            .map(|i| {
                let y = lo + step * i as f64;
                let start = v.partition_point(|&a| a < y - 6.0 * h);
                let end = v.partition_point(|&a| a <= y + 6.0 * h);
                let d: f64 = v[start..end]
                    .iter()
                    .map(|&a| {
                        let z = (y - a) / h;
                        (-0.5 * z * z).exp()
                    })
                    .sum();
                (y, d)
            })
            .collect();
        let peak = profile.iter().map(|p| p.1).fold(0.0, f64::max);
        if !(peak > 0.0 && peak.is_finite()) {
            return Some(Self {
                profile: None,
                lo: min,
                hi: max,
                q1,
                median,
                q3,
            });
        }
        profile.iter_mut().for_each(|p| p.1 /= peak);
        Some(Self {
            profile: Some(profile),
            lo,
            hi,
            q1,
            median,
            q3,
        })
    }
}

/// Linear-interpolation quantile (`q` in [0, 1]) of sorted, non-empty values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(sorted.len() - 1);
    let t = pos - i as f64;
    sorted[i] + t * (sorted[j] - sorted[i])
}

/// Panel grid (columns, rows) of a violin plot with `n` panels.
fn violin_grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, VIOLIN_MAX_COLUMNS);
    (cols, n.div_ceil(cols).max(1))
}

/// Pixel size of a violin plot with `n` panels.
fn violin_size(n: usize) -> (u32, u32) {
    let (cols, rows) = violin_grid(n);
    let (w, h) = VIOLIN_PANEL_SIZE;
    (
        (w * cols as u32).max(VIOLIN_MIN_WIDTH),
        VIOLIN_TITLE_HEIGHT + h * rows as u32,
    )
}

/// Pixel height of a heatmap with `n_rows` rows.
fn heatmap_height(n_rows: usize) -> u32 {
    let h = 150u64.saturating_add(22u64.saturating_mul(n_rows as u64));
    h.clamp(400, 3000) as u32
}

/// Scatter plots of 2-D points (e.g. UMAP coordinates), one panel per entry of `panels`,
/// side by side in rows of up to 3 panels, below a figure `title` and beside a shared legend.
///
/// Each panel is 600 × 560 px, captioned with its title, its axes labelled `x_label` and
/// `y_label` and fitted to its own finite points (3 % padding; constant data get a padded
/// range). Within a panel the [`PointStyle::Palette`] groups are drawn first, in order, as
/// filled circles of radius 2 px, then the [`PointStyle::Overlay`] groups as small
/// near-black, half-transparent crosses on top. Points with a non-finite coordinate (and the
/// few beyond ±`f64::MAX`/4, which no axis can hold) are skipped; groups without points are
/// fine. The legend column (260 px) on the right lists every group name once, in first-seen
/// order over all panels, with the marker of its first occurrence; after 40 entries the rest
/// are summarised as "… N more". The figure is `3 × 600 + 260` px wide for three or more
/// panels (`n × 600 + 260` for fewer) and `50 + rows × 560` px high, taller if the legend
/// needs it.
///
/// # Errors
/// [`Error::Param`] if `panels` is empty or has more than 30 panels, or a panel has no groups
/// or no finite point; [`Error::Io`] if the file cannot be written; [`Error::Internal`] if
/// plotters fails to draw.
pub fn scatter_panels(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    panels: &[ScatterPanel],
) -> Result<()> {
    if panels.is_empty() {
        return Err(Error::Param("scatter plot: no panels to draw".into()));
    }
    if panels.len() > SCATTER_MAX_PANELS {
        return Err(Error::Param(format!(
            "scatter plot: {} panels requested, at most {SCATTER_MAX_PANELS} fit in one figure",
            panels.len()
        )));
    }
    let shapes: Vec<ScatterShape> = panels
        .iter()
        .map(ScatterShape::new)
        .collect::<Result<_>>()?;
    let legend = scatter_legend(panels);
    let (n_cols, n_rows) = scatter_grid(panels.len());
    let size = scatter_size(panels.len(), scatter_legend_lines(legend.len()));

    // Shrink the title font (24 px down to 11 px) so that a long title fits; a glyph of
    // DejaVu Sans is about 0.55 em wide.
    let title_px =
        (f64::from(size.0) * 1.8 / title.chars().count().max(1) as f64).clamp(11.0, 24.0);
    render_png(path, size, |root| {
        let (top, rest) = root.split_vertically(SCATTER_TITLE_HEIGHT);
        top.draw(&Text::new(
            title,
            (i32::try_from(size.0 / 2).unwrap_or(0), 12),
            TextStyle::from(("sans-serif", title_px).into_font())
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        let grid_size = (
            SCATTER_PANEL_SIZE.0 * n_cols as u32,
            SCATTER_PANEL_SIZE.1 * n_rows as u32,
        );
        let (grid, legend_area) = rest.split_horizontally(grid_size.0);
        let (grid, _) = grid.split_vertically(grid_size.1);
        let cells = grid.split_evenly((n_rows, n_cols));
        for ((panel, shape), cell) in panels.iter().zip(&shapes).zip(&cells) {
            draw_scatter_panel(cell, &panel.title, x_label, y_label, shape)?;
        }
        draw_scatter_legend(&legend_area, &legend)
    })
}

/// The finite points of one [`ScatterPanel`] in drawing order, with its axis ranges.
#[derive(Debug, Clone, PartialEq)]
struct ScatterShape {
    x: (f64, f64),
    y: (f64, f64),
    /// `(style, points)` of every group: the palette groups first, then the overlays.
    layers: Vec<(PointStyle, Vec<(f64, f64)>)>,
}

impl ScatterShape {
    fn new(panel: &ScatterPanel) -> Result<Self> {
        if panel.groups.is_empty() {
            return Err(Error::Param(format!(
                "scatter plot: panel `{}` has no point groups",
                panel.title
            )));
        }
        let is_overlay = |g: &&ScatterGroup| g.style == PointStyle::Overlay;
        let mut layers: Vec<(PointStyle, Vec<(f64, f64)>)> = panel
            .groups
            .iter()
            .filter(|g| !is_overlay(g))
            .chain(panel.groups.iter().filter(is_overlay))
            .map(|g| {
                let finite = g
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect();
                (g.style, finite)
            })
            .collect();
        let points = || layers.iter().flat_map(|l| &l.1);
        let (Some(x), Some(y)) = (
            finite_range(points().map(|p| p.0)),
            finite_range(points().map(|p| p.1)),
        ) else {
            return Err(Error::Param(format!(
                "scatter plot: panel `{}` has no point with finite coordinates",
                panel.title
            )));
        };
        let (x, y) = (padded_range(Some(x), 0.03), padded_range(Some(y), 0.03));
        // `padded_range` clamps at ±f64::MAX/4; points beyond cannot be placed on the axes.
        let inside = |p: &(f64, f64)| (x.0..=x.1).contains(&p.0) && (y.0..=y.1).contains(&p.1);
        for (_, points) in &mut layers {
            points.retain(inside);
        }
        Ok(Self { x, y, layers })
    }
}

/// Draws one panel of [`scatter_panels`] into `cell`.
fn draw_scatter_panel(
    cell: &Canvas<'_>,
    title: &str,
    x_label: &str,
    y_label: &str,
    shape: &ScatterShape,
) -> DrawResult {
    let mut chart = ChartBuilder::on(cell)
        .caption(shorten(title), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(shape.x.0..shape.x.1, shape.y.0..shape.y.1)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_desc(shorten(x_label))
        .y_desc(shorten(y_label))
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (style, points) in &shape.layers {
        match *style {
            PointStyle::Palette(i) => {
                let color = scatter_colour(i).filled();
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, SCATTER_POINT_RADIUS, color)),
                )?;
            }
            PointStyle::Overlay => {
                let style = overlay_style();
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| Cross::new(p, SCATTER_CROSS_SIZE, style)),
                )?;
            }
        }
    }
    Ok(())
}

/// Draws the legend column of [`scatter_panels`] into `area` (coordinates relative to it).
fn draw_scatter_legend(area: &Canvas<'_>, entries: &[(&str, PointStyle)]) -> DrawResult {
    let (marker_x, text_x) = (16, 30);
    let max_text_px = SCATTER_LEGEND_WIDTH - 38;
    let line_y = |k: usize| {
        i32::try_from(SCATTER_LEGEND_PAD + SCATTER_LEGEND_LINE * k as u32 + SCATTER_LEGEND_LINE / 2)
            .unwrap_or(i32::MAX)
    };
    for (k, &(name, style)) in entries.iter().take(SCATTER_MAX_LEGEND).enumerate() {
        let y = line_y(k);
        match style {
            PointStyle::Palette(i) => {
                area.draw(&Circle::new((marker_x, y), 4, scatter_colour(i).filled()))?;
            }
            PointStyle::Overlay => {
                area.draw(&Cross::new((marker_x, y), 4, overlay_style()))?;
            }
        }
        let (text, text_style) = fit_label(area, name, max_text_px)?;
        let text_style = text_style.pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(text, (text_x, y), text_style))?;
    }
    if entries.len() > SCATTER_MAX_LEGEND {
        let more = entries.len() - SCATTER_MAX_LEGEND;
        let style = TextStyle::from(("sans-serif", 12).into_font())
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(
            format!("… {more} more"),
            (text_x, line_y(SCATTER_MAX_LEGEND)),
            style,
        ))?;
    }
    Ok(())
}

/// Every group name of `panels` once, in first-seen order, with its first style.
fn scatter_legend(panels: &[ScatterPanel]) -> Vec<(&str, PointStyle)> {
    let mut seen = std::collections::HashSet::new();
    panels
        .iter()
        .flat_map(|p| &p.groups)
        .filter(|g| seen.insert(g.name.as_str()))
        .map(|g| (g.name.as_str(), g.style))
        .collect()
}

/// Number of legend lines for `n_entries` entries (the capped entries plus "… N more").
fn scatter_legend_lines(n_entries: usize) -> usize {
    n_entries.min(SCATTER_MAX_LEGEND) + usize::from(n_entries > SCATTER_MAX_LEGEND)
}

/// Colour `i` (cycled) of [`SCATTER_PALETTE`].
fn scatter_colour(i: usize) -> RGBColor {
    SCATTER_PALETTE[i % SCATTER_PALETTE.len()]
}

/// Stroke of [`PointStyle::Overlay`] markers.
fn overlay_style() -> ShapeStyle {
    OVERLAY_COLOUR.mix(OVERLAY_ALPHA).stroke_width(1)
}

/// Panel grid (columns, rows) of a scatter figure with `n` panels.
fn scatter_grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, SCATTER_MAX_COLUMNS);
    (cols, n.div_ceil(cols).max(1))
}

/// Pixel size of a scatter figure with `n` panels and `legend_lines` legend lines.
fn scatter_size(n: usize, legend_lines: usize) -> (u32, u32) {
    let (cols, rows) = scatter_grid(n);
    let (w, h) = SCATTER_PANEL_SIZE;
    let legend_h = 2 * SCATTER_LEGEND_PAD + SCATTER_LEGEND_LINE * legend_lines as u32;
    (
        w * cols as u32 + SCATTER_LEGEND_WIDTH,
        SCATTER_TITLE_HEIGHT + (h * rows as u32).max(legend_h),
    )
}

/// Smallest and largest finite value, or `None` if there is none.
fn finite_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// An axis range around `range`, widened by `pad` × its span on each side. Missing data give
/// [0, 1], a (near-)constant value `v` gives `v ± |v|/10` (`±0.5` around 0), and ranges too
/// wide for `f64` are clamped, so the result is always finite with `lo < hi`.
fn padded_range(range: Option<(f64, f64)>, pad: f64) -> (f64, f64) {
    const LIMIT: f64 = f64::MAX / 4.0;
    let Some((lo, hi)) = range else {
        return (0.0, 1.0);
    };
    let (lo, hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    let span = hi - lo;
    let scale = lo.abs().max(hi.abs());
    if span <= scale * 1e-9 || span < 1e-300 {
        let mid = lo + span / 2.0;
        let half = if mid.abs() > 1e-300 {
            (mid.abs() / 10.0).max(span)
        } else {
            0.5
        };
        return (mid - half, mid + half);
    }
    (lo - pad * span, hi + pad * span)
}

/// Viridis-like colour for `t` in [0, 1] (clamped; NaN maps to the low end).
fn viridis(t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + f * (f64::from(b) - f64::from(a))).round() as u8;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Compact number for axis and colour-bar labels: up to 3 decimals, scientific notation for
/// very small or large magnitudes.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || (a != 0.0 && !(1e-3..1e5).contains(&a)) {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// `label` shortened to [`MAX_LABEL_CHARS`] characters.
fn shorten(label: &str) -> String {
    shorten_to(label, MAX_LABEL_CHARS)
}

/// `label` shortened to at most `max` characters, ending in "…" when cut.
fn shorten_to(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" family (once per process).
fn ensure_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        // The embedded font is known to parse; if it ever did not, drawing text would fail
        // with a plotters error that `render_png` reports.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        );
    });
}

/// The temporary sibling of `path` that a figure is drawn into: `.<name>.tmp-<pid>-<n>.png`,
/// unique per process and call (the `.png` extension selects the PNG encoder).
fn temp_path(path: &Path) -> PathBuf {
    // `.NAME.tmp-PID-N` (io::output's pattern, so stale ones are cleaned) plus `.png`: the
    // bitmap encoder picks the format from the extension.
    let mut name = celldiff::io::output::temp_sibling(path).into_os_string();
    name.push(".png");
    PathBuf::from(name)
}

/// Draws a `size` figure with `draw` onto a white canvas and writes it atomically to `path`
/// as PNG (see the module documentation).
fn render_png<F>(path: &Path, size: (u32, u32), draw: F) -> Result<()>
where
    F: FnOnce(&Canvas<'_>) -> DrawResult,
{
    if path.file_name().is_none() {
        return Err(Error::Param(format!(
            "plot output `{}` is not a file name",
            path.display()
        )));
    }
    if path.is_dir() {
        let e = io::Error::new(io::ErrorKind::IsADirectory, "output path is a directory");
        return Err(Error::io(path, e));
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    ensure_font();

    celldiff::io::output::remove_stale_temps(path);
    // Removed on every error path when dropped.
    let guard = celldiff::io::output::TempPath::new(temp_path(path));
    let tmp = guard.path().to_path_buf();
    // Creating the file up front reports an unwritable location as an I/O error rather than
    // as an opaque encoder failure.
    fs::File::create_new(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // The backend (which writes the file on `present` and, failing that, on drop) lives only
    // inside this closure, so the temporary file is complete or abandoned when it returns.
    let drawn = panic::catch_unwind(AssertUnwindSafe(|| -> DrawResult {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    }));
    let failure = match drawn {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the plotting library panicked".to_string()),
    };
    if let Some(e) = failure {
        return Err(Error::Internal(format!("plotting {}: {e}", path.display())));
    }
    // Replaces only a regular file (never a directory, link, FIFO or device).
    celldiff::io::output::publish_file(&tmp, path, true)?;
    guard.keep();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A fresh, empty directory under the system temp dir.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("celldiff-plot-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A decoded 8-bit RGB PNG.
    struct Image {
        width: usize,
        height: usize,
        rgb: Vec<u8>,
    }

    impl Image {
        fn pixel(&self, x: usize, y: usize) -> (u8, u8, u8) {
            let i = 3 * (y * self.width + x);
            (self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])
        }

        fn pixels(&self) -> impl Iterator<Item = (u8, u8, u8)> + '_ {
            self.rgb.chunks_exact(3).map(|p| (p[0], p[1], p[2]))
        }

        fn distinct_colours(&self) -> usize {
            let mut c: Vec<_> = self.pixels().collect();
            c.sort_unstable();
            c.dedup();
            c.len()
        }

        /// Whether some pixel is within `tol` (per channel) of `colour`.
        fn has_colour_near(&self, colour: (u8, u8, u8), tol: u8) -> bool {
            self.pixels().any(|p| {
                p.0.abs_diff(colour.0) <= tol
                    && p.1.abs_diff(colour.1) <= tol
                    && p.2.abs_diff(colour.2) <= tol
            })
        }
    }

    /// Minimal PNG decoder for what the bitmap encoder writes (8-bit RGB, not interlaced):
    /// checks the signature, reads IHDR, inflates IDAT and undoes the scanline filters.
    fn decode_png(path: &Path) -> Image {
        let bytes = fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let (width, height) = (be32(&bytes[16..20]), be32(&bytes[20..24]));
        assert_eq!(
            (bytes[24], bytes[25], bytes[28]),
            (8, 2, 0),
            "8-bit RGB, no interlace"
        );
        let mut idat = Vec::new();
        let mut pos = 8;
        while pos + 8 <= bytes.len() {
            let len = be32(&bytes[pos..pos + 4]);
            if &bytes[pos + 4..pos + 8] == b"IDAT" {
                idat.extend_from_slice(&bytes[pos + 8..pos + 8 + len]);
            }
            pos += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .unwrap();
        let stride = 3 * width;
        assert_eq!(raw.len(), height * (stride + 1));
        let mut rgb = vec![0u8; height * stride];
        for y in 0..height {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for i in 0..stride {
                let a = if i >= 3 {
                    i32::from(rgb[y * stride + i - 3])
                } else {
                    0
                };
                let b = if y > 0 {
                    i32::from(rgb[(y - 1) * stride + i])
                } else {
                    0
                };
                let c = if y > 0 && i >= 3 {
                    i32::from(rgb[(y - 1) * stride + i - 3])
                } else {
                    0
                };
                let predictor = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => {
                        let p = a + b - c;
                        let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                        if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        }
                    }
                    f => panic!("bad PNG filter {f}"),
                };
                rgb[y * stride + i] = (i32::from(line[i]) + predictor) as u8;
            }
        }
        Image { width, height, rgb }
    }

    /// Asserts that `dir` holds exactly the files `expected` (no temporary leftovers).
    fn assert_only_files(dir: &Path, expected: &[&str]) {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(names, expected);
    }

    fn lambda_grid(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64 / (n - 1) as f64).collect()
    }

    #[test]
    fn line_plot_writes_png_with_lines() {
        let dir = scratch_dir("line");
        let path = dir.join("nested/metrics.png");
        let x = lambda_grid(11);
        let mut series = vec![
            Series {
                name: "corr with A".into(),
                y: x.iter().map(|l| 1.0 - l).collect(),
            },
            Series {
                name: "corr with B".into(),
                y: x.clone(),
            },
            Series {
                name: "with gap".into(),
                y: x.iter().map(|l| l.sqrt() * 0.5).collect(),
            },
        ];
        series[2].y[4] = f64::NAN;
        line_plot(&path, "Interpolation A → B", "λ", "Pearson r", &x, &series).unwrap();

        let img = decode_png(&path);
        assert_eq!((img.width, img.height), (900, 600));
        assert!(
            img.distinct_colours() > 20,
            "expected anti-aliased text and lines"
        );
        let (r, g, b) = (PALETTE[0].0, PALETTE[0].1, PALETTE[0].2);
        assert!(
            img.has_colour_near((r, g, b), 2),
            "first series colour is drawn"
        );
        assert!(img.has_colour_near((PALETTE[2].0, PALETTE[2].1, PALETTE[2].2), 2));
        assert_eq!(img.pixel(0, 0), (255, 255, 255), "white background");
        assert_only_files(&dir.join("nested"), &["metrics.png"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn line_plot_edge_cases_do_not_fail() {
        let dir = scratch_dir("line-edge");
        let path = dir.join("edge.png");
        let one = |y: Vec<f64>| {
            vec![Series {
                name: "s".into(),
                y,
            }]
        };
        // A single point, a constant series, all-NaN data, extreme magnitudes.
        line_plot(&path, "single", "x", "y", &[0.5], &one(vec![2.0])).unwrap();
        line_plot(
            &path,
            "constant",
            "x",
            "y",
            &[0.0, 1.0, 2.0],
            &one(vec![3.0; 3]),
        )
        .unwrap();
        line_plot(&path, "zero", "x", "y", &[0.0, 1.0], &one(vec![0.0; 2])).unwrap();
        line_plot(&path, "nan", "x", "y", &[0.0, 1.0], &one(vec![f64::NAN; 2])).unwrap();
        let x = [f64::NEG_INFINITY, -1e308, 0.0, 1e308, f64::NAN];
        line_plot(
            &path,
            "huge",
            "x",
            "y",
            &x,
            &one(vec![1e308, -1e308, 1e-320, 5.0, 1.0]),
        )
        .unwrap();
        let x = [1.0, 1.0 + 1e-15];
        line_plot(&path, "tiny", "x", "y", &x, &one(vec![1e-300, 2e-300])).unwrap();
        let img = decode_png(&path);
        assert_eq!((img.width, img.height), (900, 600));
        assert_only_files(&dir, &["edge.png"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn line_plot_rejects_bad_input() {
        let dir = scratch_dir("line-bad");
        let path = dir.join("bad.png");
        let s = vec![Series {
            name: "short".into(),
            y: vec![1.0],
        }];
        let err = line_plot(&path, "t", "x", "y", &[0.0, 1.0], &s).unwrap_err();
        assert!(
            matches!(&err, Error::Param(m) if m.contains("short")),
            "{err}"
        );
        assert!(matches!(
            line_plot(&path, "t", "x", "y", &[], &[]),
            Err(Error::Param(_))
        ));
        assert!(matches!(
            line_plot(&path, "t", "x", "y", &[0.0], &[]),
            Err(Error::Param(_))
        ));
        assert_only_files(&dir, &[]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn heatmap_writes_png_with_colour_map() {
        let dir = scratch_dir("heat");
        let path = dir.join("heat.png");
        let x = lambda_grid(21);
        let rows: Vec<String> = (0..6).map(|r| format!("gene-{r}")).collect();
        let mut values: Vec<Vec<f64>> = (0..6)
            .map(|r| x.iter().map(|l| (l * 3.0 + r as f64).sin()).collect())
            .collect();
        values[0][0] = -5.0; // minimum
        values[1][1] = 5.0; // maximum
        values[2][3] = f64::NAN;
        heatmap(&path, "Gene expression along λ", "λ", &x, &rows, &values).unwrap();

        let img = decode_png(&path);
        assert_eq!(
            (img.width as u32, img.height as u32),
            (900, heatmap_height(6))
        );
        let (lo, hi) = (VIRIDIS[0], VIRIDIS[4]);
        assert!(img.has_colour_near(lo, 1), "minimum colour appears");
        assert!(img.has_colour_near(hi, 1), "maximum colour appears");
        assert!(img.distinct_colours() > 50);
        assert_only_files(&dir, &["heat.png"]);

        // Unsorted positions, one column, constant and all-NaN values, many rows.
        let one_row = vec!["only".to_string()];
        heatmap(&path, "t", "x", &[1.0, 0.0], &one_row, &[vec![2.0, 2.0]]).unwrap();
        heatmap(&path, "t", "x", &[0.3], &one_row, &[vec![f64::NAN]]).unwrap();
        let many: Vec<String> = (0..500).map(|r| format!("g{r}")).collect();
        let big: Vec<Vec<f64>> = (0..500).map(|r| vec![r as f64, -(r as f64)]).collect();
        heatmap(&path, "many", "x", &[0.0, 1.0], &many, &big).unwrap();
        assert_eq!(decode_png(&path).height, 3000);
        assert_only_files(&dir, &["heat.png"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn heatmap_rejects_mismatched_shapes() {
        let dir = scratch_dir("heat-bad");
        let path = dir.join("bad.png");
        let rows = vec!["a".to_string(), "b".to_string()];
        let x = [0.0, 1.0];
        let short_row = vec![vec![1.0, 2.0], vec![1.0]];
        let err = heatmap(&path, "t", "x", &x, &rows, &short_row).unwrap_err();
        assert!(matches!(&err, Error::Param(m) if m.contains('b')), "{err}");
        let missing_row = vec![vec![1.0, 2.0]];
        assert!(matches!(
            heatmap(&path, "t", "x", &x, &rows, &missing_row),
            Err(Error::Param(_))
        ));
        assert!(matches!(
            heatmap(&path, "t", "x", &[], &rows, &[]),
            Err(Error::Param(_))
        ));
        assert!(matches!(
            heatmap(&path, "t", "x", &x, &[], &[]),
            Err(Error::Param(_))
        ));
        assert_only_files(&dir, &[]);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn groups(shift: f64) -> Vec<ViolinGroup> {
        let sample = |mu: f64| (0..200).map(|i| mu + ((i as f64) * 0.7).sin()).collect();
        vec![
            ("control".into(), sample(0.0)),
            ("real stimulated".into(), sample(shift)),
            ("predicted".into(), sample(shift * 0.9)),
        ]
    }

    #[test]
    fn violin_plot_writes_grid_of_panels() {
        let dir = scratch_dir("violin");
        let path = dir.join("violins.png");
        let mut panels: Vec<ViolinPanel> = (0..5)
            .map(|p| (format!("GENE{p}"), groups(p as f64)))
            .collect();
        panels[1].1[0].1.clear(); // empty group
        panels[2].1[1].1 = vec![4.0]; // single value
        panels[3].1[2].1 = vec![f64::NAN, 7.0, 7.0, f64::INFINITY]; // constant after NaN
        panels[4].1.clear(); // no groups at all
        violin_plot(&path, "Perturbation: real vs predicted", "", &panels).unwrap();

        let img = decode_png(&path);
        assert_eq!((img.width, img.height), (4 * 320, 50 + 2 * 280));
        assert_eq!(violin_size(1), (1200, 50 + 280));
        assert_eq!((img.width as u32, img.height as u32), violin_size(5));
        for c in &PALETTE[..3] {
            // The filled body blends the group colour with the white background.
            let blend = |ch: u8| (f64::from(ch) * 0.55 + 255.0 * 0.45).round() as u8;
            assert!(img.has_colour_near((blend(c.0), blend(c.1), blend(c.2)), 3));
        }
        assert_only_files(&dir, &["violins.png"]);

        violin_plot(
            &path,
            "one",
            "",
            &[("G".into(), vec![("a".into(), vec![1.0])])],
        )
        .unwrap();
        assert_eq!(decode_png(&path).width, 1200);
        let huge = vec![("G".into(), vec![("a".into(), vec![-1e308, 1e308, 0.0])])];
        violin_plot(&path, "huge", "", &huge).unwrap();
        assert_only_files(&dir, &["violins.png"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn violin_plot_rejects_empty_input() {
        let dir = scratch_dir("violin-bad");
        let path = dir.join("bad.png");
        assert!(matches!(
            violin_plot(&path, "t", "", &[]),
            Err(Error::Param(_))
        ));
        let too_many: Vec<_> = (0..300).map(|p| (format!("g{p}"), Vec::new())).collect();
        assert!(matches!(
            violin_plot(&path, "t", "", &too_many),
            Err(Error::Param(_))
        ));
        assert_only_files(&dir, &[]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A UMAP-like panel: `clusters` blobs of real cells (`per_cluster` points each, as
    /// palette groups) and `generated` overlay points spread over all of them.
    fn umap_panel(
        title: &str,
        clusters: usize,
        per_cluster: usize,
        generated: usize,
    ) -> ScatterPanel {
        let blob = |c: usize, i: usize| {
            let angle = c as f64 / clusters as f64 * std::f64::consts::TAU;
            let (r, t) = ((i as f64 * 0.37).sin().abs(), i as f64 * 2.399);
            (
                10.0 * angle.cos() + r * t.cos(),
                10.0 * angle.sin() + r * t.sin(),
            )
        };
        let mut groups: Vec<ScatterGroup> = (0..clusters)
            .map(|c| ScatterGroup {
                name: format!("cluster {c}"),
                points: (0..per_cluster).map(|i| blob(c, i)).collect(),
                style: PointStyle::Palette(c),
            })
            .collect();
        // The overlay comes first in the list but must be drawn last.
        groups.insert(
            0,
            ScatterGroup {
                name: "generated".into(),
                points: (0..generated)
                    .map(|i| blob(i % clusters, i * 7 + 3))
                    .collect(),
                style: PointStyle::Overlay,
            },
        );
        ScatterPanel {
            title: title.into(),
            groups,
        }
    }

    #[test]
    fn scatter_panels_writes_side_by_side_panels() {
        let dir = scratch_dir("scatter");
        let path = dir.join("nested/umap.png");
        let mut panels = vec![
            umap_panel("ω = −1", 12, 1500, 2000),
            umap_panel("ω = 1", 12, 1500, 2000),
        ];
        // Non-finite points are skipped, empty groups are fine.
        panels[0].groups[1]
            .points
            .extend([(f64::NAN, 0.0), (0.0, f64::INFINITY)]);
        panels[1].groups.push(ScatterGroup {
            name: "empty".into(),
            points: Vec::new(),
            style: PointStyle::Palette(12),
        });
        scatter_panels(&path, "UMAP: real vs generated", "UMAP1", "UMAP2", &panels).unwrap();

        let img = decode_png(&path);
        assert_eq!((img.width, img.height), (2 * 600 + 260, 50 + 560));
        assert_eq!((img.width as u32, img.height as u32), scatter_size(2, 14));
        assert_eq!(img.pixel(0, 0), (255, 255, 255), "white background");
        for c in [SCATTER_PALETTE[0], SCATTER_PALETTE[11], SCATTER_PALETTE[12]] {
            assert!(img.has_colour_near((c.0, c.1, c.2), 0), "{c:?} is drawn");
        }
        // Overlay crosses blend half of the near-black over the white legend background ...
        let over = |ch: u8, base: u8| {
            (f64::from(base) * (1.0 - OVERLAY_ALPHA) + f64::from(ch) * OVERLAY_ALPHA).round() as u8
        };
        let o = OVERLAY_COLOUR;
        assert!(img.has_colour_near((over(o.0, 255), over(o.1, 255), over(o.2, 255)), 2));
        assert_only_files(&dir.join("nested"), &["umap.png"]);

        // ... and over the palette circles, because they are drawn after them.
        let on_top = vec![ScatterPanel {
            title: "order".into(),
            groups: vec![
                ScatterGroup {
                    name: "gen".into(),
                    points: vec![(0.5, 0.5)],
                    style: PointStyle::Overlay,
                },
                ScatterGroup {
                    name: "real".into(),
                    points: vec![(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)],
                    style: PointStyle::Palette(3),
                },
            ],
        }];
        scatter_panels(&path, "order", "x", "y", &on_top).unwrap();
        let img = decode_png(&path);
        assert_eq!((img.width, img.height), (600 + 260, 50 + 560));
        let c = SCATTER_PALETTE[3];
        let blended = (over(o.0, c.0), over(o.1, c.1), over(o.2, c.2));
        assert!(img.has_colour_near(blended, 2), "overlay drawn on top");
        assert_only_files(&dir.join("nested"), &["umap.png"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scatter_panels_layout_and_edge_cases() {
        let dir = scratch_dir("scatter-edge");
        let path = dir.join("edge.png");
        let single = |title: &str, points: Vec<(f64, f64)>| ScatterPanel {
            title: title.into(),
            groups: vec![ScatterGroup {
                name: "g".into(),
                points,
                style: PointStyle::Palette(0),
            }],
        };
        // Four panels wrap into two rows of three; single points, constant and extreme data.
        let panels = vec![
            single("one", vec![(1.0, 2.0)]),
            single("constant", vec![(0.0, 0.0); 3]),
            single(
                "huge",
                vec![(-f64::MAX, 1e308), (f64::MAX, -1e308), (0.0, 1e-320)],
            ),
            single("tiny", vec![(1.0, 1e-300), (1.0 + 1e-15, 2e-300)]),
        ];
        scatter_panels(&path, "grid", "x", "y", &panels).unwrap();
        let img = decode_png(&path);
        assert_eq!((img.width, img.height), (3 * 600 + 260, 50 + 2 * 560));

        // A long legend is capped at 40 entries plus "… N more" and makes the figure taller.
        let many = ScatterPanel {
            title: "many".into(),
            groups: (0..55)
                .map(|c| ScatterGroup {
                    name: format!("a rather long cluster name number {c}"),
                    points: vec![(c as f64, (c * c) as f64)],
                    style: if c % 10 == 9 {
                        PointStyle::Overlay
                    } else {
                        PointStyle::Palette(c)
                    },
                })
                .collect(),
        };
        let legend = scatter_legend(std::slice::from_ref(&many));
        assert_eq!(legend.len(), 55);
        assert_eq!(scatter_legend_lines(55), 41);
        assert_eq!(scatter_legend_lines(3), 3);
        scatter_panels(&path, "many", "x", "y", &[many.clone(), many]).unwrap();
        let img = decode_png(&path);
        assert_eq!(
            (img.width, img.height),
            (2 * 600 + 260, (50 + 2 * 20 + 41 * 18) as usize)
        );
        assert_only_files(&dir, &["edge.png"]);

        // The legend is the union over panels in first-seen order.
        let p = |names: &[&str]| ScatterPanel {
            title: "p".into(),
            groups: names
                .iter()
                .map(|n| ScatterGroup {
                    name: n.to_string(),
                    points: vec![(0.0, 0.0)],
                    style: PointStyle::Palette(0),
                })
                .collect(),
        };
        let panels = [p(&["b", "a"]), p(&["a", "c", "b"])];
        let names: Vec<&str> = scatter_legend(&panels).iter().map(|e| e.0).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(scatter_grid(1), (1, 1));
        assert_eq!(scatter_grid(7), (3, 3));
        assert_eq!(scatter_colour(20), SCATTER_PALETTE[0]);
        assert_eq!(SCATTER_PALETTE[..10], PALETTE);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scatter_panels_rejects_bad_input() {
        let dir = scratch_dir("scatter-bad");
        let path = dir.join("bad.png");
        let group = |points: Vec<(f64, f64)>| ScatterGroup {
            name: "g".into(),
            points,
            style: PointStyle::Overlay,
        };
        let panel = |title: &str, groups: Vec<ScatterGroup>| ScatterPanel {
            title: title.into(),
            groups,
        };
        assert!(matches!(
            scatter_panels(&path, "t", "x", "y", &[]),
            Err(Error::Param(_))
        ));
        let good = panel("good", vec![group(vec![(0.0, 1.0)])]);
        let cases = [
            panel("no groups", Vec::new()),
            panel("empty groups", vec![group(Vec::new()), group(Vec::new())]),
            panel(
                "all nan",
                vec![group(vec![(f64::NAN, 0.0), (1.0, f64::NEG_INFINITY)])],
            ),
        ];
        for bad in cases {
            let err =
                scatter_panels(&path, "t", "x", "y", &[good.clone(), bad.clone()]).unwrap_err();
            assert!(
                matches!(&err, Error::Param(m) if m.contains(&bad.title)),
                "{err}"
            );
        }
        let too_many = vec![good; SCATTER_MAX_PANELS + 1];
        assert!(matches!(
            scatter_panels(&path, "t", "x", "y", &too_many),
            Err(Error::Param(_))
        ));
        assert_only_files(&dir, &[]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writing_onto_a_directory_fails_without_leftovers() {
        let dir = scratch_dir("dir-target");
        let target = dir.join("taken");
        fs::create_dir(&target).unwrap();
        let s = vec![Series {
            name: "s".into(),
            y: vec![1.0, 2.0],
        }];
        let err = line_plot(&target, "t", "x", "y", &[0.0, 1.0], &s).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let rows = vec!["r".to_string()];
        let err = heatmap(&target, "t", "x", &[0.0], &rows, &[vec![1.0]]).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let panels = vec![("G".to_string(), groups(1.0))];
        assert!(matches!(
            violin_plot(&target, "t", "", &panels),
            Err(Error::Io { .. })
        ));
        let scatter = vec![umap_panel("ω = 1", 2, 10, 5)];
        assert!(matches!(
            scatter_panels(&target, "t", "x", "y", &scatter),
            Err(Error::Io { .. })
        ));
        // A parent that is a file cannot be created either.
        let blocked = dir.join("file");
        fs::write(&blocked, b"x").unwrap();
        let err = line_plot(&blocked.join("p.png"), "t", "x", "y", &[0.0, 1.0], &s).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_only_files(&dir, &["file", "taken"]);
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_draw_removes_temp_file() {
        let dir = scratch_dir("draw-fail");
        let path = dir.join("fail.png");
        let err = render_png(&path, (50, 50), |_| Err("boom".into())).unwrap_err();
        assert!(
            matches!(&err, Error::Internal(m) if m.contains("boom")),
            "{err}"
        );
        let err = render_png(&path, (50, 50), |_| panic!("inside plotters")).unwrap_err();
        assert!(matches!(err, Error::Internal(_)));
        assert_only_files(&dir, &[]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn helpers_behave() {
        assert_eq!(padded_range(None, 0.1), (0.0, 1.0));
        assert_eq!(padded_range(Some((0.0, 0.0)), 0.1), (-0.5, 0.5));
        let (lo, hi) = padded_range(Some((5.0, 5.0)), 0.1);
        assert!(lo < 5.0 && hi > 5.0);
        assert_eq!(padded_range(Some((0.0, 10.0)), 0.1), (-1.0, 11.0));
        let (lo, hi) = padded_range(Some((-f64::MAX, f64::MAX)), 0.1);
        assert!(lo.is_finite() && hi.is_finite() && lo < hi);
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(f64::NAN), RGBColor(68, 1, 84));
        assert_eq!(fmt_num(0.5), "0.5");
        assert_eq!(fmt_num(-0.0001), "-1.00e-4");
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(shorten_to("abcdef", 4), "abc…");
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        let v = Violin::new(&[3.0, 3.0, 3.0]).unwrap();
        assert_eq!(v.median, 3.0);
        let profile = v.profile.unwrap();
        assert!(profile.iter().all(|p| (0.0..=1.0).contains(&p.1)));
        assert!(Violin::new(&[f64::NAN]).is_none());
        // Expression with many zeros: the shape starts at 0, not a kernel width below.
        let v = Violin::new(&[0.0, 0.0, 0.0, 0.5, 2.0]).unwrap();
        assert_eq!(v.lo, 0.0);
        assert!(v.profile.unwrap().iter().all(|p| p.0 >= 0.0));
        // Negative values keep the tail.
        assert!(Violin::new(&[-1.0, 0.0, 1.0]).unwrap().lo < -1.0);
        assert_eq!(violin_grid(9), (4, 3));
        assert_eq!(heatmap_height(1), 400);
    }
}
