//! `.qmail` files: which file applies to an address extension, and what its lines say.

/// One delivery instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// A path ending in `/`.
    Maildir(String),
    /// Any other path.
    Mbox(String),
    /// `|command`.
    Program(String),
    /// `&address` or a bare address.
    Forward(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// qmail refuses a file whose first line is blank (temporary failure).
    BlankFirstLine,
}

/// Parse a .qmail file. An empty file (no instructions) means the default delivery.
pub fn parse(text: &str) -> Result<Vec<Instruction>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty() {
            if i == 0 && text.len() > 1 {
                return Err(ParseError::BlankFirstLine);
            }
            continue;
        }
        match line.as_bytes()[0] {
            b'#' => {}
            b'.' | b'/' if line.ends_with('/') => out.push(Instruction::Maildir(line.into())),
            b'.' | b'/' => out.push(Instruction::Mbox(line.into())),
            b'|' => out.push(Instruction::Program(line[1..].into())),
            b'&' => out.push(Instruction::Forward(line[1..].trim().into())),
            _ => out.push(Instruction::Forward(line.trim().into())),
        }
    }
    Ok(out)
}

/// The `.qmail` file names to try for `dash` + `ext`, most specific first, each with the part
/// of the extension it leaves for `$DEFAULT`. The extension is lowercased and `.` becomes `:`.
pub fn candidates(dash: &str, ext: &str) -> Vec<(String, String)> {
    let ext = ext.to_ascii_lowercase().replace('.', ":");
    if dash.is_empty() {
        return vec![(".qmail".into(), String::new())];
    }
    let mut v = vec![(format!(".qmail{dash}{ext}"), String::new())];
    // `.qmail-a-b-default`, `.qmail-a-default`, then `.qmail-default`.
    let mut cut = ext.len();
    while let Some(i) = ext[..cut].rfind('-') {
        v.push((
            format!(".qmail{dash}{}-default", &ext[..i]),
            ext[i + 1..].to_string(),
        ));
        cut = i;
    }
    v.push((format!(".qmail{dash}default"), ext.clone()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions() {
        let t = "# comment\n./Maildir/\n./Mailbox\n/var/mail/fred\n|preline procmail\n&joe\nbill@irs.gov\n\n";
        assert_eq!(
            parse(t).unwrap(),
            vec![
                Instruction::Maildir("./Maildir/".into()),
                Instruction::Mbox("./Mailbox".into()),
                Instruction::Mbox("/var/mail/fred".into()),
                Instruction::Program("preline procmail".into()),
                Instruction::Forward("joe".into()),
                Instruction::Forward("bill@irs.gov".into()),
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("\n./Mailbox\n"), Err(ParseError::BlankFirstLine));
    }

    #[test]
    fn lookup_order() {
        assert_eq!(
            candidates("", ""),
            vec![(".qmail".to_string(), String::new())]
        );
        let c = candidates("-", "List.Sub-x");
        let names: Vec<_> = c.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
        assert_eq!(
            names,
            vec![
                (".qmail-list:sub-x", ""),
                (".qmail-list:sub-default", "x"),
                (".qmail-default", "list:sub-x"),
            ]
        );
        let c = candidates("-", "a-b-c");
        assert_eq!(c[1].0, ".qmail-a-b-default");
        assert_eq!(c[2], (".qmail-a-default".to_string(), "b-c".to_string()));
        assert_eq!(c[3], (".qmail-default".to_string(), "a-b-c".to_string()));
    }
}
