//! Tables for people: columns padded to line up, the widest free-text
//! cells shortened with `…` when a width applies, colour only on a
//! terminal without `NO_COLOR`. JSON output never comes through here.
//!
//! The rules, as `countersign approvals --help` states them:
//! - width: `COLUMNS` if set; else the terminal's width when stdout is a
//!   terminal; else none (a pipe or a file gets every cell in full);
//! - colour: only when stdout is a terminal and `NO_COLOR` is unset or
//!   empty (<https://no-color.org>).

use std::ffi::OsStr;
use std::io::IsTerminal;

/// Width when stdout is a terminal whose size cannot be read.
const DEFAULT_WIDTH: usize = 80;
/// A free-text column is never cut below this many characters (the last
/// one being `…`).
const MIN_FREE: usize = 4;
/// Between two columns.
const GAP: &str = "  ";

/// How output for people is laid out: decided once, from stdout and the
/// environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// No line is longer than this; `None`: lines are never cut.
    pub width: Option<usize>,
    /// Whether to use ANSI colours.
    pub colour: bool,
}

impl Layout {
    /// For stdout, as this process runs.
    pub fn stdout() -> Layout {
        let tty = std::io::stdout().is_terminal();
        let tty_width = if tty {
            terminal_size::terminal_size().map(|(w, _)| usize::from(w.0))
        } else {
            None
        };
        Layout {
            width: width(std::env::var_os("COLUMNS").as_deref(), tty, tty_width),
            colour: colour(tty, std::env::var_os("NO_COLOR").as_deref()),
        }
    }

    /// Full cells, no colour: what a pipe gets.
    pub const PLAIN: Layout = Layout {
        width: None,
        colour: false,
    };
}

/// The width to fit: a positive `COLUMNS` wins; else the terminal's own
/// width (or 80) when stdout is a terminal; else none.
pub fn width(columns: Option<&OsStr>, tty: bool, tty_width: Option<usize>) -> Option<usize> {
    let columns = columns
        .and_then(OsStr::to_str)
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0);
    match columns {
        Some(c) => Some(c),
        None if tty => Some(tty_width.filter(|&w| w > 0).unwrap_or(DEFAULT_WIDTH)),
        None => None,
    }
}

/// Colour only on a terminal, and not when `NO_COLOR` holds anything.
pub fn colour(tty: bool, no_color: Option<&OsStr>) -> bool {
    tty && no_color.is_none_or(OsStr::is_empty)
}

/// The colours used; each says something about a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Green,
    Yellow,
    Red,
    Dim,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Green => "32",
            Colour::Yellow => "33",
            Colour::Red => "31",
            Colour::Dim => "2",
        }
    }
}

/// `text` in `colour`, if colours are on.
pub fn paint(text: &str, colour: Option<Colour>, layout: Layout) -> String {
    match colour {
        Some(c) if layout.colour && !text.is_empty() => {
            format!("\x1b[{}m{text}\x1b[0m", c.code())
        }
        _ => text.to_owned(),
    }
}

/// `text` cut to at most `max` characters, the last one `…` if cut.
pub fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// A column: its heading, and whether its cells may be shortened (free
/// text such as a principal) or must stay whole (an id to copy).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub free_text: bool,
}

/// One cell: its text and, perhaps, a colour.
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub colour: Option<Colour>,
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, colour: None }
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// The widths to print: each column's widest cell, then, over the
    /// width, the widest free-text columns shrunk first.
    fn widths(&self, width: Option<usize>) -> Vec<usize> {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.title.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.text.chars().count());
            }
        }
        let Some(limit) = width else { return widths };
        let natural = widths.clone();
        let gaps = GAP.len() * widths.len().saturating_sub(1);
        let fixed: usize = self
            .columns
            .iter()
            .zip(&widths)
            .filter(|(c, _)| !c.free_text)
            .map(|(_, w)| w)
            .sum();
        let free: Vec<usize> = (0..widths.len())
            .filter(|&i| self.columns[i].free_text)
            .collect();
        let budget = limit.saturating_sub(fixed + gaps);
        // The largest cap under which the free columns fit the budget.
        let fits = |cap: usize| free.iter().map(|&i| widths[i].min(cap)).sum::<usize>() <= budget;
        let widest = free.iter().map(|&i| widths[i]).max().unwrap_or(0);
        if fits(widest) {
            return widths;
        }
        let mut cap = MIN_FREE;
        while cap < widest && fits(cap + 1) {
            cap += 1;
        }
        for &i in &free {
            widths[i] = widths[i].min(cap);
        }
        // What the cap leaves over goes to the columns it cut, left first.
        let mut spare = budget.saturating_sub(free.iter().map(|&i| widths[i]).sum());
        for &i in &free {
            if spare == 0 {
                break;
            }
            if widths[i] == cap && natural[i] > cap {
                widths[i] += 1;
                spare -= 1;
            }
        }
        widths
    }

    /// The table as lines, none longer than `layout.width` when one is set.
    pub fn render(&self, layout: Layout) -> Vec<String> {
        let widths = self.widths(layout.width);
        let head: Vec<Cell> = self
            .columns
            .iter()
            .map(|c| Cell::from(c.title.to_owned()))
            .collect();
        std::iter::once(&head)
            .chain(&self.rows)
            .map(|row| line(row, &widths, layout))
            .collect()
    }
}

/// One row: cells cut to their column and padded; if the columns that may
/// not shrink still overflow, the line itself is cut (then without colour,
/// which could not be cut safely).
fn line(row: &[Cell], widths: &[usize], layout: Layout) -> String {
    let cut: Vec<String> = row
        .iter()
        .zip(widths)
        .map(|(cell, &w)| ellipsize(&cell.text, w))
        .collect();
    let plain = pad(&cut, widths, |_, text| text.to_owned());
    match layout.width {
        Some(limit) if plain.chars().count() > limit => ellipsize(&plain, limit),
        _ if layout.colour => pad(&cut, widths, |i, text| paint(text, row[i].colour, layout)),
        _ => plain,
    }
}

/// Cells padded to `widths` and joined; the last one not padded.
fn pad(cells: &[String], widths: &[usize], show: impl Fn(usize, &str) -> String) -> String {
    let mut out = String::new();
    for (i, (text, &w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            out.push_str(GAP);
        }
        out.push_str(&show(i, text));
        if i + 1 < cells.len() {
            out.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(text.chars().count()),
            ));
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new(vec![
            Column {
                title: "ID",
                free_text: false,
            },
            Column {
                title: "PRINCIPAL",
                free_text: true,
            },
            Column {
                title: "RESOURCE",
                free_text: true,
            },
            Column {
                title: "N",
                free_text: false,
            },
        ]);
        t.push(vec![
            "ap-1".to_owned().into(),
            r#"User::"agent-7-with-a-long-name""#.to_owned().into(),
            r#"Dataset::"sales""#.to_owned().into(),
            Cell {
                text: "0/1".into(),
                colour: Some(Colour::Yellow),
            },
        ]);
        t
    }

    fn at(width: Option<usize>) -> Layout {
        Layout {
            width,
            colour: false,
        }
    }

    #[test]
    fn without_a_width_nothing_is_cut() {
        let lines = table().render(Layout::PLAIN);
        assert_eq!(
            lines,
            [
                "ID    PRINCIPAL                         RESOURCE          N",
                r#"ap-1  User::"agent-7-with-a-long-name"  Dataset::"sales"  0/1"#,
            ]
        );
    }

    #[test]
    fn the_widest_free_text_column_shrinks_first() {
        let lines = table().render(at(Some(50)));
        assert!(lines.iter().all(|l| l.chars().count() <= 50), "{lines:#?}");
        // The principal gave way; the resource, narrower, still fits.
        assert!(lines[1].contains(r#"User::"agent-7-with-… "#), "{lines:#?}");
        assert!(lines[1].contains(r#"Dataset::"sales""#), "{lines:#?}");
        assert!(lines[1].starts_with("ap-1  ") && lines[1].ends_with("0/1"));
    }

    #[test]
    fn every_line_fits_even_when_the_fixed_columns_do_not() {
        for width in [1, 5, 12, 20, 30] {
            let lines = table().render(at(Some(width)));
            assert!(
                lines.iter().all(|l| l.chars().count() <= width),
                "{width}: {lines:#?}"
            );
        }
    }

    #[test]
    fn colour_only_when_asked_and_never_counted_as_width() {
        let coloured = Layout {
            width: Some(50),
            colour: true,
        };
        let lines = table().render(coloured);
        assert!(lines[1].ends_with("\x1b[33m0/1\x1b[0m"), "{lines:#?}");
        let plain = table().render(at(Some(50)));
        assert_eq!(
            lines[1].replace("\x1b[33m", "").replace("\x1b[0m", ""),
            plain[1]
        );
        assert!(!plain.concat().contains('\x1b'));
    }

    #[test]
    fn width_follows_columns_then_the_terminal() {
        fn c(s: &str) -> Option<&OsStr> {
            Some(OsStr::new(s))
        }
        assert_eq!(width(c("60"), false, None), Some(60));
        assert_eq!(width(c("60"), true, Some(200)), Some(60));
        assert_eq!(width(None, true, Some(132)), Some(132));
        assert_eq!(width(None, true, None), Some(80));
        assert_eq!(width(c("wide"), true, Some(100)), Some(100));
        assert_eq!(width(c("0"), false, None), None);
        assert_eq!(width(None, false, None), None);
    }

    #[test]
    fn no_color_with_any_value_turns_colour_off() {
        fn c(s: &str) -> Option<&OsStr> {
            Some(OsStr::new(s))
        }
        assert!(colour(true, None));
        assert!(colour(true, c("")));
        assert!(!colour(true, c("1")));
        assert!(!colour(true, c("0")));
        assert!(!colour(false, None));
    }

    #[test]
    fn ellipsize_counts_characters() {
        assert_eq!(ellipsize("abcdef", 4), "abc…");
        assert_eq!(ellipsize("abcd", 4), "abcd");
        assert_eq!(ellipsize("äöüß!", 3), "äö…");
        assert_eq!(ellipsize("abc", 0), "");
    }
}
