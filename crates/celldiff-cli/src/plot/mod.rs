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

mod heatmap;
mod line;
mod scatter;
mod violin;

pub use heatmap::*;
pub use line::*;
pub use scatter::*;
pub use violin::*;

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
            include_bytes!("../../assets/DejaVuSans.ttf"),
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
mod tests;
