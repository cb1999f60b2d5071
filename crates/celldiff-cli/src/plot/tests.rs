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
fn umap_panel(title: &str, clusters: usize, per_cluster: usize, generated: usize) -> ScatterPanel {
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
        let err = scatter_panels(&path, "t", "x", "y", &[good.clone(), bad.clone()]).unwrap_err();
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
