//! What the commands share for reports: best-of-N timing, the table style and width, and money.

use std::time::Instant;

use comfy_table::{ColumnConstraint, ContentArrangement, Table, Width as ComfyWidth, presets::UTF8_FULL_CONDENSED};
use unicode_width::UnicodeWidthStr;

/// Runs `f` `repeat` times (at least once); returns the last result and the best time in ms.
pub fn best_of<T>(repeat: usize, f: impl Fn() -> T) -> (T, f64) {
    let once = || {
        let start = Instant::now();
        let out = f();
        (out, start.elapsed().as_secs_f64() * 1000.0)
    };
    let (mut out, mut best) = once();
    for _ in 1..repeat {
        let (next, ms) = once();
        out = next;
        best = best.min(ms);
    }
    (out, best)
}

/// Table width when stdout is not a terminal and `COLUMNS` does not say.
pub const DEFAULT_WIDTH: u16 = 100;

/// The narrowest width a table is fitted to (a `COLUMNS` below it is taken as this).
pub const MIN_WIDTH: u16 = 40;

/// The width tables are fitted to: the terminal's when stdout is one (and its size is known), else
/// `COLUMNS` when it is a number, else [`DEFAULT_WIDTH`].
pub fn width() -> u16 {
    // comfy-table asks the terminal only when stdout is one.
    Table::new()
        .width()
        .unwrap_or_else(|| width_from(std::env::var("COLUMNS").ok().as_deref()))
        .max(MIN_WIDTH)
}

fn width_from(columns: Option<&str>) -> u16 {
    columns
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|&w| w > 0)
        .map_or(DEFAULT_WIDTH, |w| w.max(MIN_WIDTH))
}

/// A table in the CLI's style with this header, fitted to [`width`]: cells wrap instead of lines.
/// [`keep_words`] (or [`first_fitting`]) then keeps words whole where the width allows.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    table_with_width(header, width())
}

/// [`table`] fitted to `width` columns whatever stdout is.
pub fn table_with_width<const N: usize>(header: [&str; N], width: u16) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_width(width.max(MIN_WIDTH));
    if N > 0 {
        t.set_header(header);
    }
    t
}

/// Per column, the widest word (header included): the narrowest the column can be without
/// splitting one.
fn longest_words(t: &Table) -> Vec<usize> {
    let mut widths: Vec<usize> = Vec::new();
    for row in t.header().into_iter().chain(t.row_iter()) {
        for (i, cell) in row.cell_iter().enumerate() {
            let w = cell
                .content()
                .split_whitespace()
                .map(UnicodeWidthStr::width)
                .max()
                .unwrap_or(0);
            if widths.len() <= i {
                widths.resize(i + 1, 0);
            }
            widths[i] = widths[i].max(w);
        }
    }
    widths
}

/// The narrowest the table can be drawn without splitting a word: every column as wide as its
/// longest word, with padding and borders.
pub fn unsplit_width(t: &Table) -> usize {
    let words = longest_words(t);
    words.iter().map(|w| w.max(&1) + 2).sum::<usize>() + words.len() + 1
}

/// Keeps every word whole when the table's width allows it: each column at least as wide as its
/// longest word, only the rest of the width shared out by wrapping at spaces. Returns whether it
/// could (when not, the table is left to split words to stay inside its width).
pub fn keep_words(t: &mut Table) -> bool {
    let width = usize::from(t.width().unwrap_or(DEFAULT_WIDTH));
    if unsplit_width(t) > width {
        return false;
    }
    for (i, w) in longest_words(t).into_iter().enumerate() {
        if let Some(c) = t.column_mut(i) {
            let padded = u16::try_from(w.max(1) + 2).unwrap_or(u16::MAX);
            c.set_constraint(ColumnConstraint::LowerBoundary(ComfyWidth::Fixed(padded)));
        }
    }
    true
}

/// The first of `layouts` (widest first, all of one width) that fits without splitting a word, with
/// its words kept whole; else the last, words split as needed to stay inside the width.
pub fn first_fitting(layouts: impl IntoIterator<Item = Table>) -> Table {
    let mut last = None;
    for mut t in layouts {
        if keep_words(&mut t) {
            return t;
        }
        last = Some(t);
    }
    last.unwrap_or_default()
}

/// A table of `rows` under `header`, fitted to `width`.
pub fn rows_table(header: &[&str], rows: &[Vec<String>], width: u16) -> Table {
    let mut t = table_with_width([], width);
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r.clone());
    }
    t
}

/// `rows` under `header` when that fits `width` with words whole, else [`transposed`].
pub fn rows_or_transposed(header: &[&str], rows: &[Vec<String>], width: u16) -> Table {
    first_fitting([rows_table(header, rows, width), transposed(header, rows, width)])
}

/// `rows` (first cell a label) turned on their side: one column per row, headed by its label, one
/// line per other column, headed by its header. For tables with many numeric columns and few rows.
pub fn transposed(header: &[&str], rows: &[Vec<String>], width: u16) -> Table {
    let mut t = table_with_width([], width);
    let mut top = vec![header.first().copied().unwrap_or_default().to_string()];
    top.extend(rows.iter().map(|r| r.first().cloned().unwrap_or_default()));
    t.set_header(top);
    for (i, name) in header.iter().enumerate().skip(1) {
        let mut line = vec![(*name).to_string()];
        line.extend(rows.iter().map(|r| r.get(i).cloned().unwrap_or_default()));
        t.add_row(line);
    }
    t
}

/// A price or saving for printing: never `-0.0000` (a sum of nothing is negative zero in Rust,
/// and rounding a tiny negative gives it too).
pub fn money(x: f64) -> f64 {
    if x.abs() < 5e-9 { 0.0 } else { x }
}

#[cfg(test)]
pub mod testing {
    //! Width checks for the commands' tables.

    use comfy_table::Table;
    use unicode_width::UnicodeWidthStr;

    /// Renders `t` (built for `width` columns); panics when a line is wider than `width` or when a
    /// word of a cell is not on one line of the output (split, or lost).
    pub fn assert_fits(t: &Table, width: u16, name: &str) -> String {
        let out = t.to_string();
        for line in out.lines() {
            assert!(
                line.width() <= usize::from(width),
                "{name}: a line of {} columns at width {width}:\n{out}",
                line.width()
            );
        }
        for row in t.header().into_iter().chain(t.row_iter()) {
            for cell in row.cell_iter() {
                for word in cell.content().split_whitespace() {
                    assert!(
                        out.contains(word),
                        "{name}: {word:?} split or lost at width {width}:\n{out}"
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testing::assert_fits;

    #[test]
    fn width_comes_from_columns_or_defaults_to_100() {
        assert_eq!(width_from(None), 100);
        assert_eq!(width_from(Some("80")), 80);
        assert_eq!(width_from(Some(" 132 ")), 132);
        assert_eq!(width_from(Some("wide")), 100);
        assert_eq!(width_from(Some("0")), 100);
        assert_eq!(width_from(Some("10")), MIN_WIDTH);
    }

    #[test]
    fn wide_rows_wrap_at_spaces_inside_the_width() {
        for width in [80, 100] {
            let mut t = table_with_width(["name", "long column header", "c"], width);
            t.add_row(["abcdefghij-klmnopqrst".to_string(), "word ".repeat(40), "z".into()]);
            assert!(keep_words(&mut t));
            let out = assert_fits(&t, width, "wide");
            assert!(out.lines().count() > 5, "wrapped into more lines:\n{out}");
        }
    }

    #[test]
    fn layouts_fall_back_to_the_narrower_one_and_then_split_words() {
        let wide = |width| {
            let mut t = table_with_width(["a", "b", "c", "d"], width);
            t.add_row(["x".repeat(30), "y".repeat(30), "z".repeat(30), "w".into()]);
            t
        };
        let narrow = |width| {
            let mut t = table_with_width(["a", "b"], width);
            t.add_row(["x".repeat(30), "y".repeat(30)]);
            t
        };
        // Three 30-character words and a short one, each padded, and five borders.
        assert_eq!(unsplit_width(&wide(110)), 30 * 3 + 1 + 4 * 2 + 5);
        let t = first_fitting([wide(110), narrow(110)]);
        assert_eq!(t.header().map(|h| h.cell_count()), Some(4));
        assert_fits(&t, 110, "wide");
        let t = first_fitting([wide(80), narrow(80)]);
        assert_eq!(t.header().map(|h| h.cell_count()), Some(2));
        assert_fits(&t, 80, "narrow");
        // Nothing fits 40 columns whole: the last layout, words split, still inside the width.
        let t = first_fitting([wide(40), narrow(40)]);
        assert!(t.to_string().lines().all(|l| l.width() <= 40), "{t}");
    }

    #[test]
    fn transposed_tables_swap_rows_and_columns() {
        let rows = vec![
            vec!["500".to_string(), "1.5".to_string(), "7".to_string()],
            vec!["2000".to_string(), "6.0".to_string(), "9".to_string()],
        ];
        let t = transposed(&["nodes", "cost", "ms"], &rows, 80);
        let lines: Vec<String> = t.to_string().lines().map(str::to_string).collect();
        assert!(
            lines[1].contains("nodes") && lines[1].contains("500") && lines[1].contains("2000"),
            "{t}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("cost") && l.contains("1.5") && l.contains("6.0")),
            "{t}"
        );
    }

    #[test]
    fn money_has_no_negative_zero() {
        let nothing: f64 = Vec::<f64>::new().iter().sum();
        assert_eq!(format!("{:.4}", money(nothing)), "0.0000");
        assert_eq!(format!("{:.4}", money(-1e-12)), "0.0000");
        assert_eq!(format!("{:.4}", money(-0.5)), "-0.5000");
        assert_eq!(format!("{:.2}", money(2.71)), "2.71");
    }
}
