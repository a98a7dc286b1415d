//! Loki's push request in protobuf (`pkg/push/push.proto`, package `logproto`), as hand-written
//! prost messages (no protoc, no build script), and the body Loki takes: the message encoded,
//! then snappy *block* compressed (not the framed format).
//!
//! ```proto
//! message PushRequest      { repeated StreamAdapter streams = 1; }
//! message StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2; }
//! message EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
//!                            repeated LabelPairAdapter structuredMetadata = 3; }
//! message LabelPairAdapter { string name = 1; string value = 2; }
//! message Timestamp        { int64 seconds = 1; int32 nanos = 2; }
//! ```
//! Fields clients must not set (`StreamAdapter.hash`, `EntryAdapter.parsed`) are left out.

use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// Prometheus label syntax: `{job="netsleuth", type="PACKETLOSS"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The push body: `req` encoded and snappy block-compressed.
pub fn encode_snappy(req: &PushRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    // Compression fails only for inputs over ~4 GiB (snappy's limit); batches are bounded by
    // `batchSize` far below that. Should it ever fail, an empty body makes Loki answer 400 and
    // the batch is counted as rejected.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-exact against a hand-assembled encoding (protobuf wire format), and back through
    /// snappy.
    #[test]
    fn wire_format() {
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: "{a=\"b\"}".into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1,
                        nanos: 2,
                    }),
                    line: "x".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "k".into(),
                        value: "v".into(),
                    }],
                }],
            }],
        };
        let want: Vec<u8> = vec![
            0x0a, 28, // streams, 28 bytes
            0x0a, 7, b'{', b'a', b'=', b'"', b'b', b'"', b'}', // labels
            0x12, 17, // entries, 17 bytes
            0x0a, 4, 0x08, 1, 0x10, 2, // timestamp {seconds 1, nanos 2}
            0x12, 1, b'x', // line
            0x1a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // structuredMetadata {k, v}
        ];
        assert_eq!(req.encode_to_vec(), want);
        let body = encode_snappy(&req);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(raw, want);
        assert_eq!(PushRequest::decode(raw.as_slice()).unwrap(), req);
    }
}
