//! Header fix-ups of `mta inject` over an arbitrary message from a local user.

use crate::inject::{parse_address_list, prepare, split_header, Defaults, Origin, Request};
use crate::queue::MAX_ADDR;

fn defaults() -> Defaults {
    Defaults {
        defaulthost: "heaven.af.mil".into(),
        defaultdomain: "af.mil".into(),
        plusdomain: "af.mil".into(),
        idhost: "heaven.af.mil".into(),
    }
}

/// Byte 0: flags (`-t`, `-f`, a QMAILNAME); then the message. The body after the header
/// stays byte for byte; the result has Date, Message-ID and From and none of the dropped
/// headers; every envelope address is one the queue takes; and fixing up the result again
/// changes nothing.
pub fn inject_headers(data: &[u8]) {
    let Some((&flags, message)) = data.split_first() else {
        return;
    };
    let (_, _, body) = split_header(message);
    let req = Request {
        sender: (flags & 2 != 0).then(|| "boss+".to_string()),
        extract: flags & 1 != 0,
        recipients: if flags & 4 != 0 {
            vec![]
        } else {
            vec!["fred".into()]
        },
        message,
        now: 1_795_311_725,
        unique: "u1".into(),
    };
    let origin = Origin {
        user: Some("joe".into()),
        host: None,
        name: (flags & 8 != 0).then(|| "Joe User".to_string()),
    };
    for a in parse_address_list(&String::from_utf8_lossy(message)) {
        assert!(!a.is_empty() && a == a.trim(), "{a:?}");
    }
    let Ok(p) = prepare(&req, &defaults(), &origin) else {
        return;
    };
    assert!(p.data.ends_with(body), "the body changed");
    assert!(!p.recipients.is_empty());
    for a in p.recipients.iter().chain([&p.sender]) {
        assert!(
            a.len() <= MAX_ADDR && !a.bytes().any(|b| b"\0\r\n<>".contains(&b)),
            "{a:?}"
        );
    }
    let (fields, _, _) = split_header(&p.data);
    let has = |n: &str| fields.iter().any(|f| f.name == n);
    assert!(has("date") && has("message-id") && has("from"));
    assert!(!["bcc", "return-path", "content-length"]
        .iter()
        .any(|n| has(n)));
    let again = Request {
        message: &p.data,
        extract: false,
        recipients: vec!["fred".into()],
        ..req
    };
    let q = prepare(&again, &defaults(), &origin).expect("the result is injectable");
    assert!(q.data == p.data, "fix-ups are not idempotent");
}
