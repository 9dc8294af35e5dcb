//! Rewriting the addresses of an address-list header field (`To: fred, Joe <joe@host>`) in
//! place, as qmail-inject qualifies them: display names, comments, quoting, groups and
//! folding stay as they were; only each address is replaced.

/// Where a character of a field value stands.
#[derive(Default)]
struct Scan {
    quoted: bool,
    depth: u32,
    angle: bool,
    escaped: bool,
}

impl Scan {
    /// Take `c`; true when it is outside comments (quotes and brackets count as outside).
    fn see(&mut self, c: char) -> bool {
        if std::mem::take(&mut self.escaped) {
            return self.depth == 0;
        }
        match c {
            '\\' if self.quoted || self.depth > 0 => {
                self.escaped = true;
                self.depth == 0
            }
            '"' if self.depth == 0 => {
                self.quoted = !self.quoted;
                true
            }
            '(' if !self.quoted && !self.angle => {
                self.depth += 1;
                false
            }
            ')' if !self.quoted && self.depth > 0 => {
                self.depth -= 1;
                false
            }
            _ if self.depth > 0 => false,
            '<' if !self.quoted => {
                self.angle = true;
                true
            }
            '>' if !self.quoted && self.angle => {
                self.angle = false;
                true
            }
            _ => true,
        }
    }

    /// Outside quotes, comments and angle brackets.
    fn top(&self) -> bool {
        !self.quoted && self.depth == 0 && !self.angle
    }
}

/// `value` with every address replaced by `f(address)`.
pub fn rewrite(value: &str, f: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(value.len() + 32);
    let mut s = Scan::default();
    let mut start = 0;
    for (i, c) in value.char_indices() {
        let was_top = s.top();
        s.see(c);
        if was_top && s.top() && (c == ',' || c == ';') {
            out.push_str(&item(&value[start..i], f));
            out.push(c);
            start = i + 1;
        }
    }
    out.push_str(&item(&value[start..], f));
    out
}

/// One list item: `Name <addr>`, `group: addr`, or a bare `addr` (with comments).
fn item(seg: &str, f: &dyn Fn(&str) -> String) -> String {
    let mut s = Scan::default();
    let (mut lt, mut gt, mut colon) = (None, None, None);
    let (mut first, mut last) = (None, 0);
    for (i, c) in seg.char_indices() {
        let was_top = s.top();
        let outside = s.see(c);
        match c {
            '<' if was_top && lt.is_none() => lt = Some(i),
            '>' if lt.is_some() && gt.is_none() && s.top() => gt = Some(i),
            ':' if was_top && lt.is_none() && colon.is_none() => colon = Some(i),
            _ => {}
        }
        if outside && !c.is_whitespace() && (c != ')') {
            first.get_or_insert(i);
            last = i + c.len_utf8();
        }
    }
    if let (Some(lt), Some(gt)) = (lt, gt) {
        let inner = seg[lt + 1..gt].trim();
        if inner.is_empty() || inner.starts_with('@') {
            return seg.to_string();
        }
        return format!("{}{}{}", &seg[..=lt], f(inner), &seg[gt..]);
    }
    if let Some(c) = colon {
        return format!("{}{}", &seg[..=c], item(&seg[c + 1..], f));
    }
    let Some(first) = first else {
        return seg.to_string();
    };
    let token = &seg[first..last];
    if token.contains(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        return seg.to_string();
    }
    format!("{}{}{}", &seg[..first], f(token), &seg[last..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &str) -> String {
        rewrite(v, &|a| {
            if a.contains('@') {
                a.to_string()
            } else {
                format!("{a}@host.example")
            }
        })
    }

    #[test]
    fn qualifies_each_address_and_keeps_the_rest() {
        assert_eq!(q(" fred"), " fred@host.example");
        assert_eq!(q(" fred, joe@x.org"), " fred@host.example, joe@x.org");
        assert_eq!(
            q(" \"Smith, Fred\" <fred>, Joe (the boss) <joe>"),
            " \"Smith, Fred\" <fred@host.example>, Joe (the boss) <joe@host.example>"
        );
        assert_eq!(q(" fred (Fred Smith)"), " fred@host.example (Fred Smith)");
        assert_eq!(
            q(" friends: fred, joe;, bill"),
            " friends: fred@host.example, joe@host.example;, bill@host.example"
        );
        assert_eq!(q(" undisclosed-recipients:;"), " undisclosed-recipients:;");
        assert_eq!(q(" <>, <@route:fred@x>"), " <>, <@route:fred@x>");
        assert_eq!(
            q(" fred,\n  joe\n"),
            " fred@host.example,\n  joe@host.example\n"
        );
        assert_eq!(q(" Fred Smith"), " Fred Smith");
        assert_eq!(q(""), "");
    }
}
