//! The item stream an import's `Data` carries: base64 of frames `[u32 opcode][i32 length][payload]`,
//! checked frame by frame and stored exactly as sent.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use exchange_simulator::DEMO;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{create_body, frame, item_stream, spawn_importing};

#[tokio::test]
async fn data_that_is_not_base64_of_a_well_formed_item_stream_is_refused_with_400_naming_the_problem(
) {
    let (t, url, body) = spawn_importing().await;
    let inbox = body["FolderId"].as_str().unwrap();
    let mut truncated = item_stream("x");
    truncated.pop();
    let mut empty_buffer = item_stream("x");
    empty_buffer.extend(frame(2, b""));
    let mut unknown_opcode = item_stream("x");
    unknown_opcode.extend(frame(9, b"?"));
    let mut negative_length = item_stream("x");
    negative_length.extend(2u32.to_le_bytes());
    negative_length.extend((-1i32).to_le_bytes());
    let mut short_header = item_stream("x");
    short_header.extend([2, 0, 0]);

    let data = |bytes: &[u8]| STANDARD.encode(bytes);
    let cases = [
        (
            "Data that is not base64",
            "not base64!".to_owned(),
            "base64",
        ),
        (
            "a last frame cut short",
            data(&truncated),
            "declares 1 payload bytes but only 0 remain",
        ),
        ("an empty TransferBuffer", data(&empty_buffer), "is empty"),
        (
            "an unknown opcode",
            data(&unknown_opcode),
            "unknown opcode 9",
        ),
        (
            "a Config frame alone",
            data(&frame(1, &[0; 8])),
            "no TransferBuffer",
        ),
        ("empty Data", String::new(), "no TransferBuffer"),
        (
            "a negative frame length",
            data(&negative_length),
            "negative length -1",
        ),
        (
            "a frame header cut short",
            data(&short_header),
            "3 bytes left, 8 needed",
        ),
    ];
    for (case, data, names) in cases {
        let body = json!({"FolderId": inbox, "Mode": "create", "Data": data});
        let (status, answer) = t.import(&url, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        let message = answer["Message"].as_str().unwrap();
        assert!(
            message.contains(names),
            "{case}: {message} should name {names}"
        );
        if names != "base64" {
            assert!(
                message.contains("item stream"),
                "{case}: {message} should name the item stream"
            );
        }
    }
    assert!(t.sim.items(DEMO.mailbox_id).is_empty());
}

#[tokio::test]
async fn a_stream_of_any_fast_transfer_frames_is_stored_byte_for_byte() {
    let (t, url, body) = spawn_importing().await;
    let inbox = body["FolderId"].as_str().unwrap();
    // Config, TransferBuffer, IsInterfaceOk, TellPartnerVersion and the other FastTransfer calls.
    let data: Vec<u8> = [1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 17]
        .into_iter()
        .flat_map(|opcode| frame(opcode, &[opcode as u8; 3]))
        .collect();
    let (status, answer) = t.import(&url, &create_body(inbox, &data)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let items = t.sim.items(DEMO.mailbox_id);
    assert_eq!(items.len(), 1);
    assert_eq!(&items[0].data[..], &data[..]);
}
