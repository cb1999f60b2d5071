//! Line plots (one series per gene or metric over a shared x axis).

use super::*;

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
