//! Aligned plain-text tables for people: a header row, columns two spaces apart, numbers
//! right-aligned, no trailing spaces. Scripts use `--json`; this format may change.
//!
//! Widths count `char`s: every cell `mecgw ctl` prints is ASCII (ids, addresses, names the
//! API restricts to printable ASCII), so that is the display width.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table being filled.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(header: &[(&'static str, Align)]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Missing cells are blank; cells beyond the header are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as lines, each ending in `\n`.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|(h, _)| (*h).to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.header[i].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_numbers_right() {
        let mut t = Table::new(&[
            ("ID", Align::Right),
            ("ACTION", Align::Left),
            ("DESTINATIONS", Align::Left),
        ]);
        t.row(vec!["10".into(), "LOCAL".into(), "192.0.2.0/24".into()]);
        t.row(vec!["7".into(), "PASSTHROUGH".into(), String::new()]);
        assert_eq!(
            t.render(),
            "ID  ACTION       DESTINATIONS\n\
             10  LOCAL        192.0.2.0/24\n\
             \x207  PASSTHROUGH\n"
        );
    }

    #[test]
    fn short_rows_are_padded_and_long_ones_cut() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["x".into()]);
        t.row(vec!["1".into(), "2".into(), "3".into()]);
        assert_eq!(t.render(), "A  B\nx\n1  2\n");
    }
}
