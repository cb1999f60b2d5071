//! Heatmaps (rows × columns of values on the viridis scale).

use super::*;

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

/// Pixel height of a heatmap with `n_rows` rows.
pub(super) fn heatmap_height(n_rows: usize) -> u32 {
    let h = 150u64.saturating_add(22u64.saturating_mul(n_rows as u64));
    h.clamp(400, 3000) as u32
}
