//! qmail's VERP and stripvdomprepend: the envelope names a recipient's copy and a bounce use.

use std::collections::BTreeMap;

/// The marker at the end of a sender that asks for VERP.
const VERP: &str = "-@[]";

/// The sender of `recipient`'s copy: a sender `owner-@host-@[]` becomes
/// `owner-recipbox=reciphost@host` (qmail-send's VERP), so each copy's bounce names its
/// recipient; any other sender is used as it is.
pub fn sender_for(sender: &str, recipient: &str) -> String {
    let Some(stem) = sender.strip_suffix(VERP) else {
        return sender.to_string();
    };
    match (stem.rsplit_once('@'), recipient.rsplit_once('@')) {
        (Some((owner, host)), Some((rbox, rhost))) => format!("{owner}{rbox}={rhost}@{host}"),
        _ => sender.to_string(),
    }
}

/// Where the bounce of a VERP message goes when it is not a recipient's copy: the sender
/// without its VERP marker (`owner-@host`).
pub fn bounce_to(sender: &str) -> &str {
    match sender.strip_suffix(VERP) {
        Some(stem) if stem.contains('@') => stem,
        _ => sender,
    }
}

/// qmail-send's stripvdomprepend: a recipient that `virtualdomains` rewrote to
/// `prepend-local@domain` is named `local@domain` in bounces, as its sender wrote it. The
/// domain's entry is looked up as qmail-send does: the domain, its `.suffix` entries longest
/// first, then the catch-all; an empty prepend stops the search.
pub fn strip_vdom_prepend<'a>(vdoms: &BTreeMap<String, String>, recipient: &'a str) -> &'a str {
    let Some((_, domain)) = recipient.rsplit_once('@') else {
        return recipient;
    };
    let domain = domain.to_ascii_lowercase();
    let keys = std::iter::once(domain.as_str())
        .chain(domain.match_indices('.').map(|(i, _)| &domain[i..]))
        .chain(std::iter::once(""));
    for k in keys {
        let Some(prepend) = vdoms.get(k) else {
            continue;
        };
        return match recipient.strip_prefix(prepend.as_str()) {
            Some(rest) if !prepend.is_empty() => rest.strip_prefix('-').unwrap_or(recipient),
            _ => recipient,
        };
    }
    recipient
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verp_names_the_recipient_in_the_sender() {
        assert_eq!(
            sender_for("list-return-@lists.example-@[]", "fred@heaven.af.mil"),
            "list-return-fred=heaven.af.mil@lists.example"
        );
        assert_eq!(sender_for("joe@x.org", "fred@y"), "joe@x.org");
        assert_eq!(sender_for("", "fred@y"), "");
        assert_eq!(sender_for("nohost-@[]", "fred@y"), "nohost-@[]");
        assert_eq!(bounce_to("list-@l.example-@[]"), "list-@l.example");
        assert_eq!(bounce_to("a@b"), "a@b");
    }

    #[test]
    fn stripvdomprepend_as_qmail_send() {
        let mut v = BTreeMap::new();
        v.insert("virt.example".to_string(), "fred".to_string());
        v.insert(".sub.example".to_string(), "subby".to_string());
        v.insert("relay.example".to_string(), String::new());
        v.insert(String::new(), "catch".to_string());
        assert_eq!(
            strip_vdom_prepend(&v, "fred-bob@virt.example"),
            "bob@virt.example"
        );
        assert_eq!(
            strip_vdom_prepend(&v, "subby-x@a.sub.example"),
            "x@a.sub.example"
        );
        assert_eq!(
            strip_vdom_prepend(&v, "fred-bob@relay.example"),
            "fred-bob@relay.example"
        );
        assert_eq!(strip_vdom_prepend(&v, "catch-z@other.org"), "z@other.org");
        assert_eq!(
            strip_vdom_prepend(&v, "other-z@virt.example"),
            "other-z@virt.example"
        );
        assert_eq!(
            strip_vdom_prepend(&v, "fredbob@virt.example"),
            "fredbob@virt.example"
        );
        assert_eq!(strip_vdom_prepend(&BTreeMap::new(), "a@b"), "a@b");
    }
}
