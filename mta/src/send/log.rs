//! qmail-send's log lines. Reports are made one line: newline → `/`, space and anything
//! unprintable → `_`.

pub fn report(s: &str) -> String {
    s.trim_end()
        .chars()
        .map(|c| match c {
            '\n' => '/',
            c if c == ' ' || !c.is_ascii_graphic() => '_',
            c => c,
        })
        .collect()
}

/// Somewhere else every log line goes too (a simulated host's record of what it said).
pub type Sink = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Emit one log line (target `mta::send`, so it can be routed on its own).
pub fn line(text: &str) {
    tracing::info!(target: "mta::send", "{text}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_encoding() {
        assert_eq!(super::report("did 1+0+0/\n"), "did_1+0+0/");
        assert_eq!(super::report("a b\nc\td"), "a_b/c_d");
    }
}
