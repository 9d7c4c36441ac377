//! Line charts and parallel-coordinates plots as standalone SVG files, drawn with plotters.

use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// What a chart shows.
#[derive(Debug, Clone, Default)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
    /// Draw markers at every point (for few points, e.g. one per run).
    pub markers: bool,
    /// Draw the series' points as markers only, joined by no line (runs of a search, whose
    /// order along x says nothing).
    pub scatter: bool,
    /// A point to circle in red (the best run).
    pub highlight: Option<(f64, f64)>,
    /// Names for integer x positions (a categorical axis), instead of numbers.
    pub x_categories: Option<Vec<String>>,
    /// Log-scale x axis (hyperparameters such as learning rates).
    pub log_x: bool,
    /// The x axis counts things (runs): labelled at whole numbers only.
    pub integer_x: bool,
    /// Show the legend (off for many anonymous lines).
    pub legend: bool,
    /// Points marked with a cross (where pruned runs stopped).
    pub crosses: Vec<(f64, f64)>,
    /// Points drawn as dots and joined by no line (one per run, say).
    pub dots: Vec<(f64, f64)>,
    /// Lines of many noisy points (losses) drawn faint, under their smoothed means.
    pub smooth: bool,
    /// A log-scale y axis when the values span more than a factor of 10 (an FID falls from
    /// the thousands to single digits: on a linear axis its first evaluation flattens the
    /// rest).
    pub log_y_when_wide: bool,
}

/// Where the legend hides the fewest points: the corner whose quarter of the plot holds the
/// fewest (upper right on a tie). `x` and `y` are each axis's range and whether it is
/// logarithmic.
fn legend_corner(
    points: impl Iterator<Item = (f64, f64)>,
    x: (f64, f64, bool),
    y: (f64, f64, bool),
) -> SeriesLabelPosition {
    let share = |v: f64, (lo, hi, log): (f64, f64, bool)| {
        if log {
            (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            (v - lo) / (hi - lo)
        }
    };
    // Upper right, upper left, lower right, lower left.
    let mut counts = [0usize; 4];
    for (px, py) in points.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        let (right, upper) = (share(px, x) >= 0.5, share(py, y) >= 0.5);
        counts[usize::from(!upper) * 2 + usize::from(!right)] += 1;
    }
    let fewest = (0..4).min_by_key(|&i| (counts[i], i)).unwrap_or(0);
    [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ][fewest]
        .clone()
}

/// Whether values from `lo` to `hi` (all positive) are drawn on a log axis by a chart that
/// allows it.
fn wide(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi > 10.0 * lo
}

const SIZE: (u32, u32) = (720, 400);

/// The data's range, padded so lines do not sit on the frame; a flat range gets width.
fn padded(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        return (lo / 1.5, hi * 1.5);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.1
    };
    (lo - pad, hi + pad)
}

pub fn format_number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) {
        format!("{v:.1e}").replace(".0e", "e")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A line of many points as drawn `columns` wide: in each of `columns` equal spans of x, its
/// first, lowest, highest and last points, in order (the M4 reduction of Jugel et al. 2014).
/// The drawing is the same as the whole line's to the pixel (spikes included), and a run
/// logged at every one of a million steps stays a small file. `points` are sorted by x.
fn envelope(points: &[(f64, f64)], columns: usize, log_x: bool) -> Vec<(f64, f64)> {
    if points.len() <= 4 * columns {
        return points.to_vec();
    }
    let mut kept = Vec::with_capacity(4 * columns);
    for span in spans(points, columns, log_x) {
        let by_y = |a: &&(f64, f64), b: &&(f64, f64)| a.1.total_cmp(&b.1);
        let low = span.iter().min_by(by_y).expect("spans are not empty");
        let high = span.iter().max_by(by_y).expect("spans are not empty");
        let (first, last) = (span[0], span[span.len() - 1]);
        let mut four = [first, *low, *high, last];
        four.sort_by(|a, b| a.0.total_cmp(&b.0));
        for point in four {
            if kept.last() != Some(&point) {
                kept.push(point);
            }
        }
    }
    kept
}

/// `points` (sorted by x, at least two) cut into the runs that fall in each of `count` equal
/// spans of x.
fn spans(points: &[(f64, f64)], count: usize, log_x: bool) -> impl Iterator<Item = &[(f64, f64)]> {
    let at = move |x: f64| if log_x { x.ln() } else { x };
    let (lo, hi) = (at(points[0].0), at(points[points.len() - 1].0));
    let width = (hi - lo) / count as f64;
    let span = move |x: f64| (((at(x) - lo) / width) as usize).min(count - 1);
    points.chunk_by(move |a, b| span(a.0) == span(b.0))
}

/// How many spans a long smoothed line averages over: the trend of a noisy loss, as
/// TensorBoard's smoothing shows it.
const SMOOTH_SPANS: usize = 150;

/// The fewest points a span of a smoothed line averages: a shorter line (a run of a few
/// thousand steps logged every 10) gets fewer, wider spans rather than no smoothing.
const SMOOTH_POINTS_PER_SPAN: usize = 8;

/// The fewest spans a smoothed line has: a shorter one is drawn as it is.
const SMOOTH_MIN_SPANS: usize = 8;

/// The mean point of each of up to [`SMOOTH_SPANS`] spans of x (each of about
/// [`SMOOTH_POINTS_PER_SPAN`] points or more), or `None` when there are too few points for
/// that to leave [`SMOOTH_MIN_SPANS`].
fn smoothed(points: &[(f64, f64)], log_x: bool) -> Option<Vec<(f64, f64)>> {
    let count = (points.len() / SMOOTH_POINTS_PER_SPAN).min(SMOOTH_SPANS);
    (count >= SMOOTH_MIN_SPANS).then(|| {
        spans(points, count, log_x)
            .map(|span| {
                let n = span.len() as f64;
                let (x, y) = span.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0, y + p.1));
                (x / n, y / n)
            })
            .collect()
    })
}

/// Renders `chart` as an SVG document.
pub fn svg(chart: &Chart) -> Result<String, String> {
    let mut out = String::new();
    draw(chart, &mut out).map_err(|e| format!("drawing `{}`: {e}", chart.title))?;
    Ok(out)
}

fn draw<'a>(
    chart: &'a Chart<'a>,
    out: &'a mut String,
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || {
        let lines = chart.series.iter().flat_map(|s| s.points.iter());
        lines.chain(&chart.dots).chain(&chart.crosses)
    };
    let (x0, x1) = match &chart.x_categories {
        Some(names) => (-0.5, names.len() as f64 - 0.5),
        None => padded(all().map(|p| p.0), chart.log_x),
    };
    let ys = || all().map(|p| p.1).filter(|v| v.is_finite());
    let log_y = chart.log_y_when_wide
        && wide(
            ys().fold(f64::INFINITY, f64::min),
            ys().fold(f64::NEG_INFINITY, f64::max),
        );
    let (y0, y1) = padded(all().map(|p| p.1), log_y);
    let legend_at = if chart.legend {
        let log_x = chart.log_x && chart.x_categories.is_none();
        legend_corner(all().copied(), (x0, x1, log_x), (y0, y1, log_y))
    } else {
        SeriesLabelPosition::UpperRight
    };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70);
    let categories = chart.x_categories.clone();
    let integer_x = chart.integer_x;
    let x_fmt = move |x: &f64| match &categories {
        Some(names) => {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
        None if integer_x && x.fract() != 0.0 => String::new(),
        None => format_number(*x),
    };
    // At most one label per whole number: plotters picks the roundest step that gives no
    // more labels than asked for.
    let whole_numbers = (x1.floor() - x0.ceil() + 1.0).max(1.0) as usize;
    let linear_labels = if chart.integer_x {
        whole_numbers.min(10)
    } else {
        10
    };
    let y_fmt = |y: &f64| format_number(*y);
    let palette = |i: usize| Palette99::pick(i).to_rgba();
    macro_rules! plot {
        ($ctx:expr, $x_labels:expr) => {{
            let mut ctx = $ctx;
            ctx.configure_mesh()
                .x_desc(chart.x_label)
                .y_desc(chart.y_label)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .x_labels($x_labels)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            for (i, s) in chart.series.iter().enumerate() {
                let color = palette(i);
                let circles = || {
                    s.points
                        .iter()
                        .map(move |&p| Circle::new(p, 4, color.filled()))
                };
                let raw = || envelope(&s.points, SIZE.0 as usize, chart.log_x);
                let drawn = if chart.scatter {
                    ctx.draw_series(circles())?
                } else if let Some(means) = chart
                    .smooth
                    .then(|| smoothed(&s.points, chart.log_x))
                    .flatten()
                {
                    ctx.draw_series(LineSeries::new(raw(), color.mix(0.15).stroke_width(1)))?;
                    ctx.draw_series(LineSeries::new(means, color.stroke_width(2)))?
                } else {
                    ctx.draw_series(LineSeries::new(raw(), color.stroke_width(2)))?
                };
                if chart.legend {
                    // The key shows a series as it is drawn: a point, or a stroke.
                    let scatter = chart.scatter;
                    drawn.label(s.name.clone()).legend(move |(x, y)| {
                        if scatter {
                            Circle::new((x + 9, y), 4, color.filled()).into_dyn()
                        } else {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                                .into_dyn()
                        }
                    });
                }
                // A line of one point (a run evaluated once, at its end) draws nothing.
                if (chart.markers || s.points.len() == 1) && !chart.scatter {
                    ctx.draw_series(circles())?;
                }
            }
            let dot = RGBColor(70, 110, 170).filled();
            ctx.draw_series(chart.dots.iter().map(|&p| Circle::new(p, 4, dot)))?;
            ctx.draw_series(
                chart
                    .crosses
                    .iter()
                    .map(|&p| Cross::new(p, 6, BLACK.stroke_width(2))),
            )?;
            if let Some(p) = chart.highlight {
                ctx.draw_series(std::iter::once(Circle::new(p, 9, RED.stroke_width(3))))?;
            }
            if chart.legend && !chart.series.is_empty() {
                ctx.configure_series_labels()
                    .position(legend_at.clone())
                    .label_font(("sans-serif", 13))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .draw()?;
            }
        }};
    }
    let ys = y0..y1;
    match (&chart.x_categories, chart.log_x, log_y) {
        (None, true, false) => plot!(builder.build_cartesian_2d((x0..x1).log_scale(), ys)?, 8),
        (None, true, true) => plot!(
            builder.build_cartesian_2d((x0..x1).log_scale(), ys.log_scale())?,
            8
        ),
        (Some(names), _, false) => {
            plot!(builder.build_cartesian_2d(x0..x1, ys)?, names.len() * 2 + 1)
        }
        (Some(names), _, true) => plot!(
            builder.build_cartesian_2d(x0..x1, ys.log_scale())?,
            names.len() * 2 + 1
        ),
        (None, false, false) => plot!(builder.build_cartesian_2d(x0..x1, ys)?, linear_labels),
        (None, false, true) => plot!(
            builder.build_cartesian_2d(x0..x1, ys.log_scale())?,
            linear_labels
        ),
    }
    root.present()?;
    Ok(())
}

/// One vertical axis of a parallel-coordinates plot: its name and labelled positions
/// (0 = bottom, 1 = top).
#[derive(Debug, Clone)]
pub struct Axis {
    pub name: String,
    pub ticks: Vec<(f64, String)>,
}

/// One run across the axes: its position on each (0..=1, NaN when it has no value there) and
/// its score, 0 for the best run and 1 for the worst, which sets its colour.
#[derive(Debug, Clone)]
pub struct Polyline {
    pub positions: Vec<f64>,
    pub score: f64,
    pub dashed: bool,
}

const PARALLEL_SIZE: (u32, u32) = (960, 420);

/// From dark blue (best) through teal to pale orange (worst).
fn score_color(score: f64) -> RGBColor {
    let stops = [
        (20.0, 50.0, 140.0),
        (40.0, 150.0, 140.0),
        (245.0, 185.0, 110.0),
    ];
    let t = score.clamp(0.0, 1.0) * 2.0;
    let (a, b, f) = if t <= 1.0 {
        (stops[0], stops[1], t)
    } else {
        (stops[1], stops[2], t - 1.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * f) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A parallel-coordinates plot: one axis per setting (and the score last), one line per run,
/// the best runs drawn last (on top) and darkest; `dashed` lines (runs that did not finish,
/// e.g. pruned) are thinner.
pub fn parallel_svg(title: &str, axes: &[Axis], lines: &[Polyline]) -> Result<String, String> {
    let mut out = String::new();
    draw_parallel(title, axes, lines, &mut out).map_err(|e| format!("drawing `{title}`: {e}"))?;
    Ok(out)
}

fn draw_parallel<'a>(
    title: &'a str,
    axes: &'a [Axis],
    lines: &'a [Polyline],
    out: &'a mut String,
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let root = SVGBackend::with_string(out, PARALLEL_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (w, h) = (PARALLEL_SIZE.0 as f64, PARALLEL_SIZE.1 as f64);
    let (left, right, top, bottom) = (60.0, 110.0, 70.0, 30.0);
    let x_of = |i: usize| {
        let span = (axes.len().max(2) - 1) as f64;
        (left + (w - left - right) * i as f64 / span) as i32
    };
    let y_of = |p: f64| (top + (h - top - bottom) * (1.0 - p)) as i32;
    root.draw(&Text::new(
        title.to_string(),
        ((w / 2.0) as i32 - 6 * title.len() as i32 / 2, 14),
        ("sans-serif", 20),
    ))?;
    let mut order: Vec<&Polyline> = lines.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    for line in order {
        let color = score_color(line.score);
        let style = if line.dashed {
            color.stroke_width(1)
        } else {
            color.stroke_width(3)
        };
        // Missing values break the line.
        let mut segment = Vec::new();
        for (i, p) in line.positions.iter().enumerate() {
            if p.is_finite() {
                segment.push((x_of(i), y_of(*p)));
            } else if !segment.is_empty() {
                root.draw(&PathElement::new(std::mem::take(&mut segment), style))?;
            }
        }
        root.draw(&PathElement::new(segment, style))?;
    }
    for (i, axis) in axes.iter().enumerate() {
        let x = x_of(i);
        root.draw(&PathElement::new(
            vec![(x, y_of(0.0)), (x, y_of(1.0))],
            BLACK.stroke_width(1),
        ))?;
        let name_x = x - 4 * axis.name.len().min(28) as i32;
        root.draw(&Text::new(
            axis.name.clone(),
            (name_x, y_of(1.0) - 28),
            ("sans-serif", 16),
        ))?;
        for (p, label) in &axis.ticks {
            let y = y_of(*p);
            root.draw(&PathElement::new(
                vec![(x - 4, y), (x, y)],
                BLACK.stroke_width(1),
            ))?;
            // A pale backing keeps the label legible where runs' lines cross it (the best
            // and worst runs' run along the axes' ends, where the extreme labels are).
            let width = 8 * label.chars().count() as i32;
            root.draw(&Rectangle::new(
                [(x + 4, y - 9), (x + 8 + width, y + 7)],
                WHITE.mix(0.8).filled(),
            ))?;
            root.draw(&Text::new(
                label.clone(),
                (x + 6, y - 8),
                ("sans-serif", 14),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_labels_escaped() {
        let svg = svg(&Chart {
            title: "losses <of> run",
            x_label: "step",
            y_label: "loss",
            series: vec![Series {
                name: "D".into(),
                points: vec![(0.0, 1.0), (10.0, 0.5)],
            }],
            markers: true,
            highlight: Some((10.0, 0.5)),
            legend: true,
            crosses: vec![(10.0, 0.5)],
            dots: vec![(5.0, 0.7)],
            ..Default::default()
        })
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        assert!(svg.contains("&lt;of&gt;") && !svg.contains("<of>"));
    }

    #[test]
    fn the_legend_goes_to_the_emptiest_corner() {
        let at = |points: &[(f64, f64)], log_y: bool| {
            format!(
                "{:?}",
                legend_corner(
                    points.iter().copied(),
                    (0.0, 10.0, false),
                    (1.0, 1000.0, log_y)
                )
            )
        };
        let upper_right = [(9.0, 900.0), (8.0, 800.0)];
        assert_eq!(at(&upper_right, false), "UpperLeft");
        assert_eq!(at(&[], false), "UpperRight");
        // Everywhere but the lower left.
        let three = [(9.0, 900.0), (1.0, 900.0), (9.0, 5.0)];
        assert_eq!(at(&three, false), "LowerLeft");
        // On a log axis 40 is in the upper half of 1..1000; on a linear one, the lower.
        let at_40 = [(9.0, 40.0), (1.0, 40.0)];
        assert_eq!(at(&at_40, true), "LowerRight");
        assert_eq!(at(&at_40, false), "UpperRight");
    }

    #[test]
    fn long_lines_are_drawn_from_their_envelope_with_every_spike() {
        let mut points: Vec<(f64, f64)> = (1..=1_000_000)
            .map(|step| (step as f64, (step as f64 / 5000.0).sin()))
            .collect();
        points[123_456].1 = 9.0;
        points[654_321].1 = -7.0;
        let kept = envelope(&points, 720, false);
        assert!(kept.len() <= 4 * 720, "{}", kept.len());
        assert_eq!(kept.first(), points.first());
        assert_eq!(kept.last(), points.last());
        assert!(kept.contains(&points[123_456]) && kept.contains(&points[654_321]));
        assert!(kept.windows(2).all(|w| w[0].0 < w[1].0), "in step order");
        let few = &points[..100];
        assert_eq!(envelope(few, 720, false), few);
        let chart = Chart {
            title: "losses",
            series: vec![Series {
                name: "D".into(),
                points,
            }],
            ..Default::default()
        };
        let size = svg(&chart).unwrap().len();
        assert!(size < 400_000, "{size} bytes");
    }

    #[test]
    fn noisy_lines_are_smoothed_to_the_mean_of_each_span() {
        // A loss alternating 0 and 1 around a slow ramp: the means follow the ramp.
        let points: Vec<(f64, f64)> = (0..30_000)
            .map(|i| (i as f64, i as f64 / 30_000.0 + (i % 2) as f64))
            .collect();
        let means = smoothed(&points, false).unwrap();
        assert_eq!(means.len(), SMOOTH_SPANS);
        for (x, y) in &means {
            assert!((y - (x / 30_000.0 + 0.5)).abs() < 1e-3, "({x}, {y})");
        }
        assert!(means.windows(2).all(|w| w[0].0 < w[1].0), "in step order");
        // A shorter line (3000 steps logged every 10) is smoothed over fewer, wider spans;
        // one too short to leave 8 spans of 8 points is drawn as it is.
        let short = smoothed(&points[..300], false).unwrap();
        assert_eq!(short.len(), 300 / SMOOTH_POINTS_PER_SPAN);
        assert!(
            short.iter().all(|(_, y)| (y - 0.5).abs() < 0.1),
            "{short:?}"
        );
        assert_eq!(smoothed(&points[..64], false).map(|m| m.len()), Some(8));
        assert_eq!(smoothed(&points[..63], false), None);
        let chart = |smooth| Chart {
            title: "losses",
            series: vec![Series {
                name: "D".into(),
                points: points.clone(),
            }],
            smooth,
            ..Default::default()
        };
        // The faint raw line under the mean: one more path than without smoothing.
        let paths = |svg: String| svg.matches("<polyline").count();
        assert_eq!(
            paths(svg(&chart(true)).unwrap()),
            paths(svg(&chart(false)).unwrap()) + 1
        );
    }

    #[test]
    fn fid_curves_spanning_decades_get_a_log_axis() {
        let chart = |points: Vec<(f64, f64)>, log_y_when_wide| Chart {
            title: "LeNet-FID over training",
            series: vec![Series {
                name: "run".into(),
                points,
            }],
            log_y_when_wide,
            ..Default::default()
        };
        let falling = vec![
            (1000.0, 1349.0),
            (2000.0, 526.0),
            (4000.0, 46.0),
            (12000.0, 8.8),
        ];
        let (log, linear) = (
            svg(&chart(falling.clone(), true)).unwrap(),
            svg(&chart(falling, false)).unwrap(),
        );
        // Ticks at powers of ten on the log axis; on the linear one, steps of 200.
        let label = |svg: &str, text: &str| svg.lines().any(|line| line.trim() == text);
        assert!(label(&log, "100") && !label(&log, "1200"), "{log}");
        assert!(label(&linear, "1200") && !label(&linear, "100"), "{linear}");
        // Within one decade the axis stays linear.
        let narrow = vec![(1000.0, 40.0), (2000.0, 21.0), (3000.0, 9.5)];
        assert_eq!(
            svg(&chart(narrow.clone(), true)).unwrap(),
            svg(&chart(narrow, false)).unwrap()
        );
    }

    #[test]
    fn run_counts_are_labelled_at_whole_numbers_only() {
        let label = |svg: &str, text: &str| svg.lines().any(|line| line.trim() == text);
        for runs in [2, 3, 7, 40] {
            let points: Vec<(f64, f64)> = (1..=runs).map(|i| (i as f64, 10.0 + i as f64)).collect();
            let chart = |integer_x| Chart {
                title: "history",
                x_label: "run (in start order)",
                series: vec![Series {
                    name: "best so far".into(),
                    points: points.clone(),
                }],
                integer_x,
                ..Default::default()
            };
            let (counted, plain) = (svg(&chart(true)).unwrap(), svg(&chart(false)).unwrap());
            assert!(label(&counted, "1") || label(&counted, "0"), "{counted}");
            assert!(label(&counted, &runs.to_string()) || runs > 10, "{counted}");
            for half in ["1.5", "1.2", "2.5", "0.5"] {
                assert!(!label(&counted, half), "{runs} runs: {half} in {counted}");
            }
            if runs == 2 {
                assert!(label(&plain, "1.2"), "plotters' own steps: {plain}");
            }
        }
    }

    #[test]
    fn scatter_charts_draw_points_and_no_line() {
        let chart = |scatter| Chart {
            title: "FID vs train.lr",
            series: vec![Series {
                name: "runs".into(),
                points: vec![(1e-4, 300.0), (2e-4, 250.0), (3e-4, 280.0)],
            }],
            markers: true,
            scatter,
            ..Default::default()
        };
        let (lines, points) = (svg(&chart(false)).unwrap(), svg(&chart(true)).unwrap());
        // (The axes and the grid are polylines too.)
        let count = |svg: &str, element: &str| svg.matches(element).count();
        assert_eq!(count(&lines, "<polyline"), count(&points, "<polyline") + 1);
        assert_eq!(count(&points, "<circle"), 3);
        assert_eq!(count(&lines, "<circle"), 3);
        // With a legend, a scatter's key is one more point and a line's key one more stroke.
        let keyed = |scatter| {
            svg(&Chart {
                legend: true,
                ..chart(scatter)
            })
            .unwrap()
        };
        let (lines_keyed, points_keyed) = (keyed(false), keyed(true));
        assert_eq!(count(&points_keyed, "<circle"), 4);
        assert_eq!(count(&lines_keyed, "<circle"), 3);
        assert_eq!(
            count(&lines_keyed, "<polyline"),
            count(&points_keyed, "<polyline") + 2
        );
    }

    #[test]
    fn a_line_of_one_point_is_drawn_as_a_point() {
        let chart = Chart {
            title: "LeNet-FID over training",
            series: ["a", "b"]
                .map(|name| Series {
                    name: name.into(),
                    points: vec![(800.0, 140.0)],
                })
                .into(),
            ..Default::default()
        };
        assert_eq!(svg(&chart).unwrap().matches("<circle").count(), 2);
    }

    #[test]
    fn parallel_plots_draw_every_axis_and_skip_missing_values() {
        let axes = vec![
            Axis {
                name: "train.lr".into(),
                ticks: vec![(0.0, "1e-5".into()), (1.0, "1e-2".into())],
            },
            Axis {
                name: "FID".into(),
                ticks: vec![(0.0, "300".into()), (1.0, "20".into())],
            },
        ];
        let lines = vec![
            Polyline {
                positions: vec![0.2, 0.9],
                score: 0.0,
                dashed: false,
            },
            Polyline {
                positions: vec![f64::NAN, 0.1],
                score: 1.0,
                dashed: true,
            },
        ];
        let svg = parallel_svg("settings <-> FID", &axes, &lines).unwrap();
        assert!(svg.contains("train.lr") && svg.contains("1e-2") && svg.contains("&lt;-&gt;"));
        assert_eq!(score_color(0.0), RGBColor(20, 50, 140));
        assert_eq!(score_color(1.0), RGBColor(245, 185, 110));
    }

    #[test]
    fn empty_and_flat_charts_still_draw() {
        for points in [vec![], vec![(1.0, 2.0)], vec![(1e-4, 3.0), (1e-3, 3.0)]] {
            let chart = Chart {
                title: "t",
                x_label: "lr",
                y_label: "fid",
                series: vec![Series {
                    name: "s".into(),
                    points,
                }],
                markers: true,
                log_x: true,
                ..Default::default()
            };
            assert!(svg(&chart).unwrap().contains("</svg>"));
        }
    }
}
