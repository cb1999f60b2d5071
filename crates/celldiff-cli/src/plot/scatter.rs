//! Scatter panels (UMAP/PCA embeddings of real and generated cells) with a shared legend.

use super::*;

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
pub(super) struct ScatterShape {
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
pub(super) fn draw_scatter_panel(
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
pub(super) fn draw_scatter_legend(area: &Canvas<'_>, entries: &[(&str, PointStyle)]) -> DrawResult {
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
pub(super) fn scatter_legend(panels: &[ScatterPanel]) -> Vec<(&str, PointStyle)> {
    let mut seen = std::collections::HashSet::new();
    panels
        .iter()
        .flat_map(|p| &p.groups)
        .filter(|g| seen.insert(g.name.as_str()))
        .map(|g| (g.name.as_str(), g.style))
        .collect()
}

/// Number of legend lines for `n_entries` entries (the capped entries plus "… N more").
pub(super) fn scatter_legend_lines(n_entries: usize) -> usize {
    n_entries.min(SCATTER_MAX_LEGEND) + usize::from(n_entries > SCATTER_MAX_LEGEND)
}

/// Colour `i` (cycled) of [`SCATTER_PALETTE`].
pub(super) fn scatter_colour(i: usize) -> RGBColor {
    SCATTER_PALETTE[i % SCATTER_PALETTE.len()]
}

/// Stroke of [`PointStyle::Overlay`] markers.
pub(super) fn overlay_style() -> ShapeStyle {
    OVERLAY_COLOUR.mix(OVERLAY_ALPHA).stroke_width(1)
}

/// Panel grid (columns, rows) of a scatter figure with `n` panels.
pub(super) fn scatter_grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, SCATTER_MAX_COLUMNS);
    (cols, n.div_ceil(cols).max(1))
}

/// Pixel size of a scatter figure with `n` panels and `legend_lines` legend lines.
pub(super) fn scatter_size(n: usize, legend_lines: usize) -> (u32, u32) {
    let (cols, rows) = scatter_grid(n);
    let (w, h) = SCATTER_PANEL_SIZE;
    let legend_h = 2 * SCATTER_LEGEND_PAD + SCATTER_LEGEND_LINE * legend_lines as u32;
    (
        w * cols as u32 + SCATTER_LEGEND_WIDTH,
        SCATTER_TITLE_HEIGHT + (h * rows as u32).max(legend_h),
    )
}
