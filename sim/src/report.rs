//! The campaign's results as data — sections of prose and tables, each with its verdict —
//! and the one place they become Markdown. Scenarios fill rows; nothing else writes the
//! report's text.

use std::fmt::Write as _;

/// A column: its heading and whether it holds numbers (right-aligned).
#[derive(Debug, Clone, Copy)]
pub struct Col {
    pub name: &'static str,
    pub numeric: bool,
}

/// A text column.
pub const fn text(name: &'static str) -> Col {
    Col {
        name,
        numeric: false,
    }
}

/// A numeric column.
pub const fn num(name: &'static str) -> Col {
    Col {
        name,
        numeric: true,
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub cols: Vec<Col>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(cols: &[Col]) -> Table {
        Table {
            cols: cols.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Add a row; a row of the wrong width is a bug in the scenario that made it.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.cols.len(),
            "row width for {:?}",
            self.cols
        );
        self.rows.push(cells);
    }

    fn markdown(&self, out: &mut String) {
        let line = |cells: Vec<&str>| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(self.cols.iter().map(|c| c.name).collect()));
        let rule = self
            .cols
            .iter()
            .map(|c| if c.numeric { "---:" } else { "---" })
            .collect();
        out.push_str(&line(rule));
        for r in &self.rows {
            out.push_str(&line(r.iter().map(|c| c.as_str()).collect()));
        }
    }
}

/// Cells from anything printable: `cells![a, b, format!("{x:.1}")]`.
#[macro_export]
macro_rules! cells {
    ($($x:expr),* $(,)?) => { vec![$($x.to_string()),*] };
}

/// A part of a section, in order.
#[derive(Debug, Clone)]
pub enum Block {
    Text(String),
    Table(Table),
}

#[derive(Debug, Clone)]
pub struct Section {
    pub title: String,
    pub blocks: Vec<Block>,
    /// False when anything in the section failed.
    pub ok: bool,
}

impl Section {
    pub fn new(title: &str) -> Section {
        Section {
            title: title.into(),
            blocks: Vec::new(),
            ok: true,
        }
    }
    pub fn text(mut self, t: impl Into<String>) -> Section {
        self.blocks.push(Block::Text(t.into()));
        self
    }
    pub fn table(mut self, t: Table) -> Section {
        self.blocks.push(Block::Table(t));
        self
    }
    /// Count a check into the verdict.
    pub fn check(&mut self, passed: bool) {
        self.ok &= passed;
    }
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Doc {
    pub title: String,
    pub preamble: String,
    pub sections: Vec<Section>,
    pub wall_secs: f64,
}

impl Doc {
    pub fn ok(&self) -> bool {
        self.sections.iter().all(|s| s.ok)
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n\n{}\n", self.title, self.preamble);
        for s in &self.sections {
            let _ = write!(out, "\n## {}\n", s.title);
            for b in &s.blocks {
                out.push('\n');
                match b {
                    Block::Text(t) => {
                        out.push_str(t);
                        out.push('\n');
                    }
                    Block::Table(t) => t.markdown(&mut out),
                }
            }
        }
        let verdict = if self.ok() { "pass" } else { "FAIL" };
        let _ = write!(
            out,
            "\nVerdict: **{verdict}** in {:.1} s of wall time.\n",
            self.wall_secs
        );
        out
    }
}

/// "yes", or a loud "**NO**".
pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**NO**"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sections_tables_and_a_verdict_that_fails_with_any_section() {
        let mut t = Table::new(&[text("scenario"), num("states")]);
        t.row(cells!["install", 268]);
        let mut s = Section::new("Enumeration")
            .text("Every operation.")
            .table(t);
        let doc = |s: Section| Doc {
            title: "Campaign".into(),
            preamble: "Seed 1.".into(),
            sections: vec![s],
            wall_secs: 2.0,
        };
        assert_eq!(
            doc(s.clone()).markdown(),
            "# Campaign\n\nSeed 1.\n\n## Enumeration\n\nEvery operation.\n\n\
             | scenario | states |\n| --- | ---: |\n| install | 268 |\n\n\
             Verdict: **pass** in 2.0 s of wall time.\n"
        );
        s.check(false);
        assert!(doc(s).markdown().contains("**FAIL**"));
    }
}
