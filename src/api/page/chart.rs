//! The course page's chart: the daily average and the daily count of the last 90 days, read
//! from course_daily_stats (the buckets the 90-day figures are summed from, so the chart and
//! the figures beside it cannot disagree), drawn as inline SVG on the server. The SVG has a
//! title and a description for assistive technology, and a table of the same figures follows
//! it as its text alternative.

use deadpool_postgres::Pool;

use super::escape;
use crate::api::ApiError;

/// One day of the window: its UTC date, its valid reviews and their average (none that day:
/// 0 and None).
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub day: String,
    pub count: i64,
    pub average: Option<f64>,
}

/// The 90 days ending at the window's today (`reviewflow_today()`, the stats worker's clock),
/// oldest first, every day present.
pub async fn days(pool: &Pool, course: i64) -> Result<Vec<Day>, ApiError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT d::date::text, coalesce(s.review_count, 0),
                    (s.rating_sum / NULLIF(s.review_count, 0))::float8
             FROM generate_series((reviewflow_today() - 89)::timestamp,
                                  reviewflow_today()::timestamp, interval '1 day') d
             LEFT JOIN course_daily_stats s ON s.course_id = $1 AND s.day = d::date
             ORDER BY d",
            &[&course],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Day {
            day: r.get(0),
            count: r.get(1),
            average: r.get(2),
        })
        .collect())
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 40.0;
const RIGHT: f64 = 44.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The chart and its table, as the `#chart` section's content.
pub fn html(days: &[Day]) -> String {
    let reviewed: Vec<&Day> = days.iter().filter(|d| d.count > 0).collect();
    let most = days.iter().map(|d| d.count).max().unwrap_or(0).max(1);
    let total: i64 = days.iter().map(|d| d.count).sum();
    let (first, last) = match (days.first(), days.last()) {
        (Some(f), Some(l)) => (f.day.as_str(), l.day.as_str()),
        _ => ("", ""),
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / days.len().max(1) as f64;
    let x = |i: usize| LEFT + (i as f64 + 0.5) * slot;
    let y_avg = |a: f64| TOP + plot_h * (1.0 - a / 5.0);
    let mut bars = String::new();
    let mut points = String::new();
    let mut line = Vec::new();
    for (i, d) in days.iter().enumerate() {
        if d.count == 0 {
            continue;
        }
        let h = plot_h * d.count as f64 / most as f64;
        bars.push_str(&format!(
            "<rect class=\"count\" data-day=\"{day}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"/>",
            x(i) - slot * 0.4,
            TOP + plot_h - h,
            slot * 0.8,
            day = escape(&d.day),
        ));
        if let Some(a) = d.average {
            points.push_str(&format!(
                "<circle class=\"average\" data-day=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"/>",
                escape(&d.day),
                x(i),
                y_avg(a)
            ));
            line.push(format!("{:.1},{:.1}", x(i), y_avg(a)));
        }
    }
    let polyline = if line.len() > 1 {
        format!(
            "<polyline class=\"average\" points=\"{}\"/>",
            line.join(" ")
        )
    } else {
        String::new()
    };
    let axis_y = TOP + plot_h;
    let text_y = HEIGHT - 8.0;
    let description = if reviewed.is_empty() {
        format!("No valid review was written from {first} to {last}.")
    } else {
        format!(
            "Bars: valid reviews per UTC day, from {first} to {last}, {total} in all, at most \
             {most} on a day (right axis). Points and line: that day's average rating, from 0 \
             to 5 stars (left axis). {} of the 90 days had reviews; the table below lists them.",
            reviewed.len()
        )
    };
    let svg = format!(
        "<svg role=\"img\" aria-labelledby=\"chart-title chart-desc\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         preserveAspectRatio=\"xMidYMid meet\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"chart-title\">Daily average rating and daily review count, last 90 days</title>\
         <desc id=\"chart-desc\">{description}</desc>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{axis_y}\" x2=\"{right}\" y2=\"{axis_y}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{axis_y}\"/>\
         <line class=\"axis\" x1=\"{right}\" y1=\"{TOP}\" x2=\"{right}\" y2=\"{axis_y}\"/>\
         {bars}{polyline}{points}\
         <text x=\"{lx}\" y=\"{top_text}\" text-anchor=\"end\">5★</text>\
         <text x=\"{lx}\" y=\"{axis_y}\" text-anchor=\"end\">0★</text>\
         <text x=\"{rx}\" y=\"{top_text}\">{most}</text>\
         <text x=\"{rx}\" y=\"{axis_y}\">0</text>\
         <text x=\"{LEFT}\" y=\"{text_y}\">{first}</text>\
         <text x=\"{right}\" y=\"{text_y}\" text-anchor=\"end\">{last}</text>\
         </svg>",
        description = escape(&description),
        right = WIDTH - RIGHT,
        lx = LEFT - 4.0,
        rx = WIDTH - RIGHT + 4.0,
        top_text = TOP + 8.0,
        first = escape(first),
        last = escape(last),
    );
    let mut rows = String::new();
    for d in reviewed.iter().rev() {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&d.day),
            d.count,
            d.average.map_or("–".to_string(), |a| format!("{a:.2}"))
        ));
    }
    let table = if reviewed.is_empty() {
        String::new()
    } else {
        format!(
            "<details>\n<summary>The chart's figures, by day</summary>\n<table>\n\
             <tr><th scope=\"col\">Day (UTC)</th><th scope=\"col\">Reviews</th><th scope=\"col\">Average</th></tr>\n\
             {rows}</table>\n</details>"
        )
    };
    format!("<h2>Last 90 days</h2>\n<figure>{svg}</figure>\n{table}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(n: usize, count: i64, average: Option<f64>) -> Day {
        Day {
            day: format!("2026-01-{:02}", n + 1),
            count,
            average,
        }
    }

    #[test]
    fn days_with_reviews_get_a_bar_and_a_point_and_a_row() {
        let mut days: Vec<Day> = (0..30).map(|n| day(n, 0, None)).collect();
        days[3] = day(3, 2, Some(4.5));
        days[29] = day(29, 1, Some(2.0));
        let html = html(&days);
        assert_eq!(html.matches("<circle").count(), 2);
        assert_eq!(html.matches("<rect").count(), 2);
        assert!(html.contains("data-day=\"2026-01-30\""));
        assert!(html.contains("<tr><td>2026-01-30</td><td>1</td><td>2.00</td></tr>"));
        assert!(html.contains("<title id=\"chart-title\">"));
        assert!(html.contains("3 in all"));
    }

    #[test]
    fn a_window_without_reviews_says_so() {
        let days: Vec<Day> = (0..90).map(|n| day(n % 28, 0, None)).collect();
        let html = html(&days);
        assert!(html.contains("No valid review was written"));
        assert!(!html.contains("<circle") && !html.contains("<details>"));
    }
}
