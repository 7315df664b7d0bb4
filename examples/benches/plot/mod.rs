//! PNG line charts for the benchmarks (plotters, pure Rust). Text is drawn
//! with the system's DejaVu Sans; without it the chart is skipped with a
//! message, never the benchmark.

use plotters::prelude::*;
use std::path::Path;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

/// One line: a name and its (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn font() -> Result<(), String> {
    let bytes = std::fs::read(FONT).map_err(|e| format!("no font at {FONT} ({e}); install fonts-dejavu-core"))?;
    // plotters keeps registered fonts for the process's life.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| "unusable font".to_string())
}

fn range(series: &[Series], of: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let values = series.iter().flat_map(|s| s.points.iter().map(&of));
    values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Draws `series` into a PNG at `path` (relative to the workspace root,
/// since `cargo bench` runs in the package's directory); the y axis is
/// logarithmic when `log_y`, the x axis when `log_x`. Prints where it went,
/// or why not.
pub fn line_chart(path: &Path, title: &str, x: &str, y: &str, log_x: bool, log_y: bool, series: &[Series]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let path = path.as_path();
    match draw(path, title, x, y, log_x, log_y, series) {
        Ok(()) => println!("chart: {}", path.display()),
        Err(e) => println!("chart {} skipped: {e}", path.display()),
    }
}

fn draw(path: &Path, title: &str, x: &str, y: &str, log_x: bool, log_y: bool, series: &[Series]) -> Result<(), String> {
    font()?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (x0, x1) = range(series, |p| p.0);
    let (y0, y1) = range(series, |p| p.1);
    // Log axes in plotters are separate types: map to log10 and label back.
    let fx = |v: f64| if log_x { v.log10() } else { v };
    let fy = |v: f64| if log_y { v.max(1e-9).log10() } else { v };
    let (ya, yb) = if log_y { (fy(y0) - 0.2, fy(y1) + 0.2) } else { (0.0, y1 * 1.1) };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(fx(x0)..fx(x1), ya..yb)
        .map_err(|e| err(&e))?;
    let unlog = |v: f64, log: bool| if log { 10f64.powf(v) } else { v };
    let label = |v: f64| {
        if v >= 1e6 {
            format!("{:.1}M", v / 1e6)
        } else if v >= 1e3 {
            format!("{:.0}k", v / 1e3)
        } else if v >= 1.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(x)
        .y_desc(y)
        .x_label_formatter(&|v| label(unlog(*v, log_x)))
        .y_label_formatter(&|v| label(unlog(*v, log_y)))
        .draw()
        .map_err(|e| err(&e))?;
    for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(a, b)| (fx(a), fy(b))).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(px, py)| PathElement::new(vec![(px, py), (px + 20, py)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
