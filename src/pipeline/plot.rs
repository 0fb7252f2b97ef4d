//! Minimal SVG line charts (no plotting dependency): a few series over rounds or training steps.
use std::fmt::Write as _;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    pub bold: bool,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Fixed top of the y range, or `None` to fit the data. The range starts at 0, or lower for negative data.
    pub y_max: Option<f64>,
    pub series: Vec<Series>,
}

const W: f64 = 460.0;
const H: f64 = 300.0;
const PAD_L: f64 = 50.0;
const PAD_R: f64 = 130.0;
const PAD_T: f64 = 30.0;
const PAD_B: f64 = 40.0;
const COLORS: [&str; 10] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Chart {
    fn render(&self, out: &mut String, x0: f64) {
        let xs = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let x_max = xs.fold(1.0f64, f64::max);
        let data_max = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0f64, f64::max);
        let data_min = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0f64, f64::min);
        let y_min = data_min * 1.15;
        let fitted = if data_max > 0.0 {
            data_max * 1.15
        } else if y_min < 0.0 {
            0.0
        } else {
            1.0
        };
        let y_max = self.y_max.unwrap_or(fitted);
        let span = (y_max - y_min).max(1e-12);
        let pw = W - PAD_L - PAD_R;
        let ph = H - PAD_T - PAD_B;
        let px = |x: f64| x0 + PAD_L + pw * x / x_max;
        let py = |y: f64| PAD_T + ph * (1.0 - (y - y_min) / span);
        let _ = writeln!(out, r#"<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>"#, x0 + PAD_L, esc(&self.title));
        let _ = writeln!(out, r##"<rect x="{}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##, x0 + PAD_L);
        for i in 0..=4 {
            let y = y_min + span * i as f64 / 4.0;
            let (l, r, yy) = (x0 + PAD_L, x0 + PAD_L + pw, py(y));
            let _ = writeln!(
                out,
                r##"<line x1="{l}" x2="{r}" y1="{yy}" y2="{yy}" stroke="#eee"/><text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>"##,
                l - 4.0,
                yy + 3.0,
                fmt_num(y, span)
            );
        }
        let every = (x_max as usize).div_ceil(12).max(1);
        for r in (0..=(x_max as usize)).step_by(every) {
            let _ = writeln!(out, r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{r}</text>"#, px(r as f64), PAD_T + ph + 14.0);
        }
        let _ = writeln!(out, r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#, x0 + PAD_L + pw / 2.0, H - 8.0, esc(&self.x_label));
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle" transform="rotate(-90 {0} {1})">{}</text>"#,
            x0 + 12.0,
            PAD_T + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let width = if s.bold { 3.0 } else { 1.5 };
            let dash = if s.dashed { r#" stroke-dasharray="5,3""# } else { "" };
            let pts: Vec<String> = s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
            let _ = writeln!(out, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>"#, pts.join(" "));
            for &(x, y) in &s.points {
                let _ = writeln!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#, px(x), py(y));
            }
            let ly = PAD_T + 8.0 + 15.0 * i as f64;
            let lx = x0 + PAD_L + pw + 10.0;
            let _ = writeln!(
                out,
                r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="{width}"{dash}/><text x="{}" y="{}" font-size="10">{}</text>"#,
                lx + 18.0,
                lx + 22.0,
                ly + 3.0,
                esc(&s.name)
            );
        }
    }
}

/// A tick label with as many decimals as the axis span needs.
fn fmt_num(v: f64, span: f64) -> String {
    let decimals = if span >= 10.0 { 0 } else { (1.0 - span.log10().floor()).clamp(1.0, 6.0) as usize };
    if decimals == 0 || v.fract().abs() < 1e-12 {
        format!("{v:.0}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// Charts side by side in one SVG document.
pub fn svg(charts: &[Chart]) -> String {
    let mut out = String::new();
    let total_w = W * charts.len() as f64;
    let _ = writeln!(out, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{H}" viewBox="0 0 {total_w} {H}" font-family="sans-serif">"#);
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, c) in charts.iter().enumerate() {
        c.render(&mut out, W * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_polyline_per_series_with_every_point() {
        let c = Chart {
            title: "a<b".into(),
            x_label: "round".into(),
            y_label: "%".into(),
            y_max: Some(100.0),
            series: vec![
                Series { name: "all".into(), points: vec![(0.0, 10.0), (1.0, 30.0), (2.0, 25.0)], dashed: false, bold: true },
                Series { name: "x".into(), points: vec![(0.0, 0.0), (1.0, 100.0)], dashed: true, bold: false },
            ],
        };
        let s = svg(&[c]);
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(s.matches("<circle").count(), 5);
        assert!(s.contains("a&lt;b") && s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        // y = 100 sits on the top edge of the plot area, y = 0 on the bottom one.
        assert!(s.contains(&format!(",{PAD_T:.1}")) && s.contains(&format!(",{:.1}", H - PAD_B)));
    }
}
