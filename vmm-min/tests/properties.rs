//! Property tests of everything the VMM decodes from a peer or a guest:
//! migration frames, page batches, the JSON messages of the protocol and
//! the migration state, and the guest's HTTP request parser (the guest's
//! own source file, compiled for the host). Each property runs a fixed
//! number of cases, so CI time stays bounded.

extern crate alloc;

#[path = "../guest/src/net/request.rs"]
#[allow(dead_code)]
mod guest_request;

use proptest::prelude::*;
use vmm_min::migration::protocol::{Complete, Hello, HelloReply, Ready, Started};
use vmm_min::migration::state::MigrationState;
use vmm_min::migration::wire::{pages, parse_json, FrameReader, FrameWriter, Kind, WireError};

/// Cases per property (six properties run in CI).
const CASES: u32 = 512;

const KINDS: [Kind; 10] = [
    Kind::Hello,
    Kind::HelloReply,
    Kind::Pages,
    Kind::State,
    Kind::Digest,
    Kind::Complete,
    Kind::Ready,
    Kind::Abort,
    Kind::Commit,
    Kind::Started,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Arbitrary bytes never panic the frame reader, and it never reads
    /// past what it was given.
    #[test]
    fn frame_reader_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut r = FrameReader::new(&bytes[..]);
        for _ in 0..4 {
            match r.recv() {
                Ok((_, payload)) => prop_assert!(payload.len() <= bytes.len()),
                Err(_) => break,
            }
        }
    }

    /// Frames written are read back in order, intact; one flipped bit in
    /// any of them is caught.
    #[test]
    fn frames_round_trip_and_corruption_is_caught(
        frames in proptest::collection::vec((0usize..KINDS.len(), proptest::collection::vec(any::<u8>(), 0..512)), 1..6),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut w = FrameWriter::new(Vec::new());
        for (k, p) in &frames {
            w.send_parts(KINDS[*k], &[p]).expect("write");
        }
        let bytes = w.into_inner();
        let mut r = FrameReader::new(&bytes[..]);
        for (k, p) in &frames {
            let (kind, payload) = r.recv().expect("read back");
            prop_assert_eq!(kind, KINDS[*k]);
            prop_assert_eq!(payload, &p[..]);
        }
        let mut bad = bytes.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 1 << bit;
        let mut r = FrameReader::new(&bad[..]);
        let mut all_ok = true;
        for (k, p) in &frames {
            match r.recv() {
                Ok((kind, payload)) if kind == KINDS[*k] && payload == &p[..] => {}
                _ => { all_ok = false; break; }
            }
        }
        prop_assert!(!all_ok, "a flipped bit at byte {} went unnoticed", i);
    }

    /// Page batches: arbitrary payloads never panic the decoder, and what
    /// it accepts lies inside guest RAM with exactly one page of data per
    /// non-zero entry.
    #[test]
    fn page_batches_are_checked(payload in proptest::collection::vec(any::<u8>(), 0..9000), ram_pages in 0u64..4096) {
        if let Ok((entries, data)) = pages::decode(&payload, ram_pages) {
            let data_pages = entries.iter().filter(|e| *e & pages::ZERO_PAGE == 0).count();
            prop_assert!(entries.iter().all(|e| (e & !pages::ZERO_PAGE) < ram_pages));
            prop_assert_eq!(data.len(), data_pages * 4096);
        }
    }

    /// An encoded batch decodes to the same entries.
    #[test]
    fn page_batches_round_trip(pfns in proptest::collection::vec((0u64..1024, any::<bool>()), 0..64)) {
        let entries: Vec<u64> = pfns.iter().map(|&(p, z)| if z { p | pages::ZERO_PAGE } else { p }).collect();
        let mut table = Vec::new();
        pages::encode_table(&entries, &mut table);
        let data = vec![0xa5u8; entries.iter().filter(|e| *e & pages::ZERO_PAGE == 0).count() * 4096];
        let payload = [table, data.clone()].concat();
        let (back, d) = pages::decode(&payload, 1024).expect("decode");
        prop_assert_eq!(back, entries);
        prop_assert_eq!(d, &data[..]);
    }

    /// The protocol's JSON messages and the migration state: arbitrary
    /// bytes, and arbitrary JSON, give an error or a value, never a panic.
    #[test]
    fn messages_and_state_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), json in json_value()) {
        let text = json.to_string();
        for input in [&bytes[..], text.as_bytes()] {
            let _ = parse_json::<Hello>(input, Kind::Hello);
            let _ = parse_json::<HelloReply>(input, Kind::HelloReply);
            let _ = parse_json::<Complete>(input, Kind::Complete);
            let _ = parse_json::<Ready>(input, Kind::Ready);
            let _ = parse_json::<Started>(input, Kind::Started);
            let _: Result<MigrationState, WireError> = parse_json(input, Kind::State);
        }
    }

    /// The guest's HTTP request parser: any bytes give Incomplete, Bad or a
    /// request whose offsets lie inside the buffer.
    #[test]
    fn guest_http_parser_survives_any_bytes(bytes in http_like()) {
        if let guest_request::Parsed::Request { target_start, target_end, consumed, .. } = guest_request::parse(&bytes) {
            prop_assert!(target_start <= target_end && target_end <= consumed && consumed <= bytes.len());
            prop_assert_eq!(bytes[target_start], b'/');
        }
    }
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("wire_version".to_string()),
                    Just("config".to_string()),
                    Just("ok".to_string()),
                    ".{0,8}".prop_map(|s| s)
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes that are often close to an HTTP request head.
fn http_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (
            prop_oneof![Just("GET"), Just("HEAD"), Just("POST"), Just(""), Just("G\0T")],
            "[ -~]{0,40}",
            prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0"), Just("HTTP/2"), Just("")],
            proptest::collection::vec("[ -~]{0,30}", 0..8),
            prop_oneof![Just("\r\n"), Just("\n"), Just("")],
        )
            .prop_map(|(m, t, v, headers, end)| {
                let mut s = format!("{m} {t} {v}\r\n");
                for h in headers {
                    s.push_str(&h);
                    s.push_str("\r\n");
                }
                s.push_str(end);
                s.into_bytes()
            }),
    ]
}
