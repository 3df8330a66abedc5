//! The markdown the benchmark writes, as formatting only: tables, section
//! titles, and numbers to about three significant digits; a figure over
//! runs is a cell `median [min–max]`. Scenarios and the report use it; it
//! knows the figures it formats ([`Spread`]) and nothing that measures or
//! assembles them.

use std::fmt::Write;

use crate::measure::stats::Spread;

/// A section's title, `### title`.
pub fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "### {title}\n");
}

/// `median [min–max]`.
pub fn cell(spread: &Spread) -> String {
    if spread.median.is_nan() {
        return "–".into();
    }
    format!(
        "{} [{}–{}]",
        number(spread.median),
        number(spread.min),
        number(spread.max)
    )
}

/// The ratio of medians, e.g. `1.23×`.
pub fn ratio(ours: &Spread, rung: &Spread) -> String {
    times(ours.ratio(rung))
}

/// `1.23×`, or `–` when there is no ratio.
pub fn times(r: f64) -> String {
    if r.is_finite() {
        format!("{}×", number(r))
    } else {
        "–".into()
    }
}

/// About three significant digits, no exponent.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let magnitude = x.abs();
    let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
        0
    } else {
        (2.0 - magnitude.log10().floor()).max(0.0) as usize
    };
    format!("{x:.decimals$}")
}

/// A markdown table.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render_into(&self, out: &mut String) {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let _ = writeln!(out, "{}", line(&self.headers));
        let rule: Vec<String> = self.headers.iter().map(|_| "---".into()).collect();
        let _ = writeln!(out, "{}", line(&rule));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.012345), "0.0123");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(f64::NAN), "–");
    }
}
