//! Properties over arbitrary input: decoders of on-disk data never panic, and injection keeps
//! any body byte-exact.

use mta::inject::{prepare, Defaults, Origin, Request};
use mta::queue::record::{decode_todo, frame, Frame, Record};
use proptest::prelude::*;

fn defaults() -> Defaults {
    Defaults {
        defaulthost: "example.org".into(),
        defaultdomain: "example.org".into(),
        plusdomain: "example.org".into(),
        idhost: "example.org".into(),
    }
}

proptest! {
    #[test]
    fn log_frames_of_arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut at = 0;
        while let Frame::Whole(body, n) = frame(&buf[at..], 0) {
            let _ = Record::decode(body, 0);
            at += n;
        }
        let _ = decode_todo(&buf);
    }

    #[test]
    fn valid_frames_with_arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 1..256)) {
        let mut buf = (body.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        buf.extend_from_slice(&body);
        if let Frame::Whole(b, _) = frame(&buf, 0) {
            let _ = Record::decode(b, 0);
        }
    }

    #[test]
    fn injection_keeps_any_body_byte_exact(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut msg = b"Subject: x\n\n".to_vec();
        msg.extend_from_slice(&body);
        let req = Request {
            sender: None,
            extract: false,
            recipients: vec!["fred".into()],
            message: &msg,
            now: 0,
            unique: "u".into(),
        };
        let p = prepare(&req, &defaults(), &Origin::default()).unwrap();
        prop_assert!(p.data.ends_with(&body));
        let mut tail = b"\n\n".to_vec();
        tail.extend_from_slice(&body);
        prop_assert!(p.data.ends_with(&tail));
    }

    #[test]
    fn injection_of_arbitrary_messages_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..512), t in any::<bool>()) {
        let req = Request {
            sender: None,
            extract: t,
            recipients: vec!["fred".into()],
            message: &msg,
            now: 0,
            unique: "u".into(),
        };
        let _ = prepare(&req, &defaults(), &Origin::default());
    }
}
