//! The latency plot: p50, p95 and p99 against the offered rate, one line per round of each
//! latency phase, as a PNG. Text is drawn with
//! a font bundled in the binary (DejaVu Sans Mono, assets/fonts), so the plot is the same on
//! a machine with no fonts installed.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::latency::RatePoint;
use super::website::ProbePoint;
use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (960, 600);

/// One run of one phase: (offered rate, [p50, p95, p99]) per rate.
struct Line {
    phase: &'static str,
    round: u64,
    width: u32,
    points: Vec<(f64, [f64; 3])>,
}

/// Both latency phases, one line per round and percentile: the website-shaped phase bold,
/// the bench's own load thin.
pub fn latency(
    points: &[RatePoint],
    website: &[ProbePoint],
    title: &str,
    path: &Path,
) -> Result<()> {
    if points.is_empty() && website.is_empty() {
        return Err(Error::Config("no latency figures to plot".into()));
    }
    let mut lines: Vec<Line> = Vec::new();
    let mut add = |phase, width, round, offered: u64, p: [f64; 3]| match lines
        .iter_mut()
        .find(|l| l.phase == phase && l.round == round)
    {
        Some(l) => l.points.push((offered as f64, p)),
        None => lines.push(Line {
            phase,
            round,
            width,
            points: vec![(offered as f64, p)],
        }),
    };
    let website = website.iter().map(|w| ("website", 3, &w.probes));
    for (phase, width, p) in website.chain(points.iter().map(|p| ("bench's own", 1, p))) {
        add(
            phase,
            width,
            p.round,
            p.offered,
            [p.p50_ms, p.p95_ms, p.p99_ms],
        );
    }
    register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| Error::Config("the bundled font cannot be read".into()))?;
    let (w, h) = SIZE;
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    draw(&lines, title, &mut pixels).map_err(|e| Error::Command {
        what: "drawing the latency plot".into(),
        detail: e.to_string(),
    })?;
    write_png(path, &pixels)
}

fn draw(
    lines: &[Line],
    title: &str,
    pixels: &mut [u8],
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let max_rate = all().map(|p| p.0).fold(1.0_f64, f64::max);
    let max_ms = all().map(|p| p.1[2]).fold(100.0_f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_rate * 1.08, 0.0..max_ms)?;
    chart
        .configure_mesh()
        .x_desc("offered rate (reviews/s; website: background changes/s)")
        .y_desc("commit to course_stats visible (ms)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 16))
        .draw()?;
    let percentiles = [
        ("p50", RGBColor(46, 125, 50)),
        ("p95", RGBColor(245, 124, 0)),
        ("p99", RGBColor(198, 40, 40)),
    ];
    for line in lines {
        for (i, (name, colour)) in percentiles.into_iter().enumerate() {
            let xy: Vec<(f64, f64)> = line.points.iter().map(|(x, p)| (*x, p[i])).collect();
            let style = colour.stroke_width(line.width);
            let drawn = chart.draw_series(LineSeries::new(xy.clone(), style))?;
            // One legend entry per phase and percentile; further rounds are more lines.
            if line.round == 0 {
                drawn
                    .label(format!("{name}, {} load, one line per round", line.phase))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
            }
            chart.draw_series(
                xy.into_iter()
                    .map(|xy| Circle::new(xy, 2 + line.width, colour.filled())),
            )?;
        }
    }
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(
            [(0.0, 100.0), (max_rate * 1.08, 100.0)],
            grey.stroke_width(1),
        ))?
        .label("target: p99 100 ms")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], grey.stroke_width(1)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn write_png(path: &Path, pixels: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
    }
    let file = std::fs::File::create(path).map_err(|e| Error::io_path("create", path, e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| Error::Command {
        what: format!("writing {}", path.display()),
        detail: e.to_string(),
    };
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(pixels).map_err(fail)?;
    writer.finish().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let point = |offered, p50_ms| RatePoint {
            round: 0,
            offered,
            achieved: offered as f64,
            samples: 100,
            p50_ms,
            p95_ms: p50_ms * 2.0,
            p99_ms: p50_ms * 3.0,
            max_ms: p50_ms * 4.0,
            flagged: 0,
            hops: Vec::new(),
        };
        let dir = std::env::temp_dir().join(format!("rf-plot-{}", std::process::id()));
        let path = dir.join("p.png");
        latency(&[point(1000, 20.0), point(5000, 45.0)], &[], "test", &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
