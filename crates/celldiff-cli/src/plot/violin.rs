//! Violin plots: one panel per gene, a kernel density per group, quartiles marked.

use super::*;

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
pub(super) fn draw_violin_panel(
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
pub(super) fn fit_label(
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
pub(super) struct Violin {
    /// Density profile `(y, density / max density)` from `lo` to `hi`; `None` if the values
    /// are too extreme for a finite density grid (only the median and quartiles are drawn).
    pub(super) profile: Option<Vec<(f64, f64)>>,
    /// Lower and upper end of the drawn shape.
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) q1: f64,
    pub(super) median: f64,
    pub(super) q3: f64,
}

impl Violin {
    /// Number of points of the density grid.
    const GRID: usize = 128;
    /// The shape extends this many bandwidths beyond the extreme values.
    const CUT: f64 = 3.0;

    /// Gaussian KDE of the finite `values`; `None` if there are none.
    pub(super) fn new(values: &[f64]) -> Option<Self> {
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
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(sorted.len() - 1);
    let t = pos - i as f64;
    sorted[i] + t * (sorted[j] - sorted[i])
}

/// Panel grid (columns, rows) of a violin plot with `n` panels.
pub(super) fn violin_grid(n: usize) -> (usize, usize) {
    let cols = n.clamp(1, VIOLIN_MAX_COLUMNS);
    (cols, n.div_ceil(cols).max(1))
}

/// Pixel size of a violin plot with `n` panels.
pub(super) fn violin_size(n: usize) -> (u32, u32) {
    let (cols, rows) = violin_grid(n);
    let (w, h) = VIOLIN_PANEL_SIZE;
    (
        (w * cols as u32).max(VIOLIN_MIN_WIDTH),
        VIOLIN_TITLE_HEIGHT + h * rows as u32,
    )
}
