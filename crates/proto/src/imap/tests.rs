//! IMAP core tests: S: transcripts fed in pieces of every size.

use proptest::prelude::*;

use super::*;

/// Feeds `wire` in `chunk`-byte pieces; returns the events with body bytes
/// gathered, as (responses, bodies).
fn run(wire: &[u8], chunk: usize) -> Result<(Vec<Response>, Vec<Vec<u8>>), ImapError> {
    let mut reader = ResponseReader::new(Limits::default());
    let mut buf: Vec<u8> = Vec::new();
    let mut responses = Vec::new();
    let mut bodies = Vec::new();
    let mut fed = 0;
    loop {
        let (n, ev) = reader.next(&buf)?;
        match ev {
            Some(Event::Response(r)) => responses.push(r),
            Some(Event::BodyStart(_)) => bodies.push(Vec::new()),
            Some(Event::BodyData(d)) => bodies.last_mut().unwrap().extend_from_slice(d),
            Some(Event::BodyEnd) => {}
            None if n == 0 => {
                if fed >= wire.len() {
                    return Ok((responses, bodies));
                }
                let end = (fed + chunk.max(1)).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
                continue;
            }
            None => {}
        }
        buf.drain(..n);
    }
}

const SESSION: &[u8] = b"* PREAUTH [CAPABILITY IMAP4rev1 UIDPLUS IDLE] Logged in as u\r\n\
* 2 EXISTS\r\n\
* OK [UIDVALIDITY 1795309769] UIDs valid\r\n\
* OK [UIDNEXT 3] Predicted next UID\r\n\
A1 OK [READ-WRITE] Select completed.\r\n\
* 1 FETCH (UID 1 RFC822.SIZE 30 FLAGS (\\Seen) BODY[] {30}\r\n\
Subject: ab\r\n\r\nbody {5}\r\n.\r\n\r\n)\r\n\
* 2 FETCH (UID 2 BODY[] {4}\r\nabcd RFC822.SIZE 4)\r\n\
* 1 FETCH (FLAGS (\\Seen \\Deleted))\r\n\
A2 OK Fetch completed.\r\n\
* LIST (\\HasNoChildren) \"/\" {10}\r\nlists/r&-d\r\n\
* LIST (\\Noselect) NIL INBOX\r\n\
+ idling\r\n\
* 1 EXPUNGE\r\n\
A3 NO [TRYCREATE] no such mailbox\r\n";

#[test]
fn transcript_parses_and_streams_bodies() {
    let (responses, bodies) = run(SESSION, 1 << 20).unwrap();
    assert_eq!(bodies, vec![b"Subject: ab\r\n\r\nbody {5}\r\n.\r\n\r\n".to_vec(), b"abcd".to_vec()]);
    assert!(matches!(
        &responses[0],
        Response::Untagged(Untagged::Status { status: Status::PreAuth, code: Some(Code::Capability(c)), .. }) if c.contains(&"UIDPLUS".to_string())
    ));
    assert_eq!(responses[1], Response::Untagged(Untagged::Exists(2)));
    assert!(matches!(
        &responses[2],
        Response::Untagged(Untagged::Status { code: Some(Code::UidValidity(1795309769)), .. })
    ));
    assert!(matches!(&responses[3], Response::Untagged(Untagged::Status { code: Some(Code::UidNext(3)), .. })));
    assert!(
        matches!(&responses[4], Response::Tagged { tag, status: Status::Ok, code: Some(Code::ReadWrite), .. } if tag == "A1")
    );
    match &responses[5] {
        Response::Untagged(Untagged::Fetch(f)) => {
            assert_eq!((f.seq, f.uid, f.size), (1, Some(1), Some(30)));
            assert_eq!(f.flags.as_deref(), Some(&["\\Seen".to_string()][..]));
            assert_eq!(f.body, Some(Value::Streamed));
        }
        other => panic!("{other:?}"),
    }
    match &responses[6] {
        Response::Untagged(Untagged::Fetch(f)) => {
            assert_eq!((f.uid, f.size, f.body.is_some()), (Some(2), Some(4), true))
        }
        other => panic!("{other:?}"),
    }
    match &responses[7] {
        Response::Untagged(Untagged::Fetch(f)) => assert_eq!((f.uid, f.body.as_ref()), (None, None)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&responses[8], Response::Tagged { status: Status::Ok, .. }));
    assert_eq!(
        responses[9],
        Response::Untagged(Untagged::List {
            flags: vec!["\\HasNoChildren".into()],
            delimiter: Some('/'),
            name: b"lists/r&-d".to_vec()
        })
    );
    assert!(matches!(&responses[10], Response::Untagged(Untagged::List { delimiter: None, .. })));
    assert_eq!(responses[11], Response::Continuation("idling".into()));
    assert_eq!(responses[12], Response::Untagged(Untagged::Expunge(1)));
    assert!(
        matches!(&responses[13], Response::Tagged { status: Status::No, code: Some(Code::Other(c)), .. } if c == "TRYCREATE")
    );
    assert_eq!(responses.len(), 14);
}

#[test]
fn byte_at_a_time_matches_whole() {
    assert_eq!(run(SESSION, 1).unwrap(), run(SESSION, 1 << 20).unwrap());
}

#[test]
fn every_read_is_bounded_huge_literal_is_refused() {
    let wire = b"* 1 FETCH (UID 1 BODY[] {10737418240}\r\n";
    assert_eq!(run(wire, 64), Err(ImapError::LiteralTooLarge { len: 10_737_418_240, limit: 1 << 30 }));
    let wire = b"* LIST () \"/\" {99999999}\r\n";
    assert!(matches!(run(wire, 64), Err(ImapError::LiteralTooLarge { .. })));
}

#[test]
fn every_read_is_bounded_endless_line_is_refused() {
    let mut reader = ResponseReader::new(Limits { max_line: 1000, ..Limits::default() });
    let flood = vec![b'x'; 5000];
    assert_eq!(reader.next(&flood), Err(ImapError::LineTooLong(1000)));
}

#[test]
fn every_read_is_bounded_response_size() {
    let mut reader = ResponseReader::new(Limits { max_response: 100, ..Limits::default() });
    let mut wire = Vec::new();
    for _ in 0..10 {
        wire.extend_from_slice(b"* LIST () \"/\" {20}\r\naaaaaaaaaaaaaaaaaaaa");
    }
    let mut consumed = 0;
    let err = loop {
        match reader.next(&wire[consumed..]) {
            Ok((0, None)) => panic!("needs more without a limit error"),
            Ok((n, _)) => consumed += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err, ImapError::ResponseTooLarge(100));
}

#[test]
fn empty_body_literal() {
    let (r, b) = run(b"* 1 FETCH (UID 7 BODY[] {0}\r\n)\r\n", 3).unwrap();
    assert_eq!(b, vec![Vec::<u8>::new()]);
    assert!(matches!(&r[0], Response::Untagged(Untagged::Fetch(f)) if f.uid == Some(7)));
}

#[test]
fn malformed_responses_are_errors_not_panics() {
    assert!(run(b"garbage\r\n", 4).is_err());
    assert!(run(b"A1 MAYBE done\r\n", 4).is_err());
    assert!(run(b"* 1 FETCH (UID)\r\n", 4).is_err());
    assert!(run(b"* 1 FETCH (UID \"x)\r\n", 4).is_err());
}

#[test]
fn commands_and_sets() {
    assert_eq!(Command::Select("INBOX".into()).to_wire("A1"), b"A1 SELECT \"INBOX\"\r\n");
    assert_eq!(Command::Login("u".into(), "p\"q".into()).to_wire("A2"), b"A2 LOGIN \"u\" \"p\\\"q\"\r\n");
    assert!(!format!("{:?}", Command::Login("u".into(), "hunter2".into())).contains("hunter2"));
    assert_eq!(uid_set(&[5, 1, 2, 3, 9, 10, 7]), "1:3,5,7,9:10");
    assert_eq!(uid_set(&[4]), "4");
    assert_eq!(uid_set(&[]), "");
    let mut t = Tagger::default();
    assert_eq!((t.next_tag(), t.next_tag()), ("A1".to_string(), "A2".to_string()));
}

#[test]
fn modified_utf7() {
    assert_eq!(utf7::encode("INBOX"), "INBOX");
    assert_eq!(utf7::encode("R&D"), "R&-D");
    // RFC 3501's example.
    assert_eq!(utf7::encode("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    assert_eq!(utf7::decode(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-").as_deref(), Some("~peter/mail/台北/日本語"));
    assert_eq!(utf7::decode(b"Entw&APw-rfe").as_deref(), Some("Entwürfe"));
    assert_eq!(utf7::decode(b"bad&"), None);
}

proptest! {
    #[test]
    fn utf7_round_trip(s in "\\PC{0,20}") {
        prop_assert_eq!(utf7::decode(utf7::encode(&s).as_bytes()), Some(s));
    }

    #[test]
    fn reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), chunk in 1usize..50) {
        let _ = run(&data, chunk);
    }

    #[test]
    fn bodies_of_any_content_stream_intact(body in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..300) {
        let mut wire = format!("* 3 FETCH (UID 9 RFC822.SIZE {} BODY[] {{{}}}\r\n", body.len(), body.len()).into_bytes();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b")\r\nA1 OK done\r\n");
        let (r, b) = run(&wire, chunk).unwrap();
        prop_assert_eq!(b, vec![body]);
        prop_assert_eq!(r.len(), 2);
    }
}

/// A header section, with the field list in its brackets, is streamed like
/// a body but reported as a header: it can never be taken for the message.
#[test]
fn header_sections_stream_and_are_never_the_body() {
    let wire = b"* 1 FETCH (UID 4 RFC822.SIZE 99 BODY[HEADER.FIELDS.NOT (X-UID STATUS)] {8}\r\nA: b\r\n\r\n)\r\n\
* 2 FETCH (UID 5 BODY[HEADER] {4}\r\n\r\n\r\n)\r\n";
    let (responses, bodies) = run(wire, 1 << 20).unwrap();
    assert_eq!(bodies, vec![b"A: b\r\n\r\n".to_vec(), b"\r\n\r\n".to_vec()]);
    for r in &responses {
        let Response::Untagged(Untagged::Fetch(f)) = r else { panic!("{r:?}") };
        assert_eq!(f.body, None);
        assert_eq!(f.header, Some(Value::Streamed));
    }
}

#[test]
fn greetings_are_classified_one_way() {
    assert_eq!(Greeting::parse(b"* OK [CAPABILITY IMAP4rev1] ready\r\n"), Greeting::Ok);
    assert_eq!(Greeting::parse(b"* ok ready\r\n"), Greeting::Ok, "status words are case-insensitive");
    assert_eq!(Greeting::parse(b"* PREAUTH [CAPABILITY IMAP4rev1] logged in\r\nmore"), Greeting::PreAuth);
    assert_eq!(Greeting::parse(b"* BYE go away\r\n"), Greeting::Bye("go away".into()));
    assert!(matches!(Greeting::parse(b"+OK POP3 ready\r\n"), Greeting::NotImap(_)));
    assert!(matches!(Greeting::parse(b"* PREAUTH no line end"), Greeting::NotImap(_)));
    assert!(matches!(Greeting::parse(b"SSH-2.0-OpenSSH\r\n"), Greeting::NotImap(_)));
    assert!(matches!(Greeting::parse(b"* PREAUTH {5}\r\nhello\r\n"), Greeting::NotImap(_)), "no literals");
}

#[test]
fn rfc_5530_login_refusal_codes_are_typed() {
    let (responses, _) =
        run(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\na2 NO [authorizationfailed] no\r\n", 7).unwrap();
    assert!(
        matches!(&responses[0], Response::Tagged { code: Some(Code::AuthenticationFailed), text, .. } if text == "Authentication failed.")
    );
    assert!(matches!(&responses[1], Response::Tagged { code: Some(Code::AuthorizationFailed), .. }));
}
