//! Just enough Server-Sent Events to read an upstream's stream message by
//! message and write messages to a client.
//!
//! Only the aggregating mode parses streams (it must rewrite ids in
//! server-to-client requests); pass-through workspaces never come here.

use bytes::{Buf, Bytes, BytesMut};

/// One event: its `data` (lines joined with `\n`) and its `id`, which the
/// gateway needs to resume an upstream stream that closed early. Event types
/// are not kept: MCP uses only the default `message` type.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SseError {
    /// One event grew beyond the bound: the stream is refused, not buffered.
    TooLarge,
}

/// Incremental parser: feed it chunks, take complete events out.
pub struct Parser {
    buf: BytesMut,
    data: String,
    has_data: bool,
    id: Option<String>,
    /// The last `retry:` the stream asked for, in milliseconds.
    pub retry_ms: Option<u64>,
    max_event: usize,
}

impl Parser {
    pub fn new(max_event: usize) -> Self {
        Parser {
            buf: BytesMut::new(),
            data: String::new(),
            has_data: false,
            id: None,
            retry_ms: None,
            max_event,
        }
    }

    /// Adds `chunk` and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR LF pair is one line end; a lone CR at the end of the
            // buffer may be the first half of one, so wait for more.
            let end_len = if self.buf[pos] == b'\r' {
                match self.buf.get(pos + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => break,
                }
            } else {
                1
            };
            let line = self.buf.split_to(pos);
            self.buf.advance(end_len);
            self.line(&line, &mut out);
        }
        if self.buf.len() + self.data.len() > self.max_event {
            return Err(SseError::TooLarge);
        }
        Ok(out)
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data || self.id.is_some() {
                out.push(Event {
                    data: std::mem::take(&mut self.data),
                    id: self.id.take(),
                });
                self.has_data = false;
            }
            return;
        }
        if line[0] == b':' {
            return; // comment (e.g. keep-alive)
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"id" => self.id = Some(String::from_utf8_lossy(value).into_owned()),
            b"retry" => self.retry_ms = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse().ok()),
            _ => {}
        }
    }
}

/// One message as an SSE event.
pub fn encode(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(b"event: message\n");
    // JSON serialised by serde_json has no raw newlines; split anyway so a
    // message can never break the framing.
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datas(events: Vec<Event>) -> Vec<String> {
        events.into_iter().map(|e| e.data).collect()
    }

    #[test]
    fn events_split_across_chunks_and_line_ends() {
        let mut p = Parser::new(1 << 20);
        assert!(p.feed(b"event: message\nid: 1\ndata: {\"a\"").unwrap().is_empty());
        assert_eq!(datas(p.feed(b":1}\n\n").unwrap()), vec![r#"{"a":1}"#]);
        assert_eq!(datas(p.feed(b": keep-alive\n\ndata:x\r\ndata: y\r").unwrap()), Vec::<String>::new());
        assert_eq!(datas(p.feed(b"\n\r\n").unwrap()), vec!["x\ny"]);
        assert_eq!(datas(p.feed(b"retry: 5\n\ndata\n\n").unwrap()), vec![""]);
    }

    #[test]
    fn ids_and_retry_are_kept_for_resumption() {
        let mut p = Parser::new(1 << 20);
        let events = p.feed(b"id: ev-1\nretry: 500\ndata:\n\nid: ev-2\ndata: {}\n\n").unwrap();
        assert_eq!(
            events,
            vec![
                Event {
                    data: String::new(),
                    id: Some("ev-1".into())
                },
                Event {
                    data: "{}".into(),
                    id: Some("ev-2".into())
                }
            ]
        );
        assert_eq!(p.retry_ms, Some(500));
    }

    #[test]
    fn an_event_over_the_bound_is_refused() {
        let mut p = Parser::new(16);
        assert_eq!(p.feed(&[b'a'; 40]), Err(SseError::TooLarge));
    }

    #[test]
    fn encode_round_trips() {
        let mut p = Parser::new(1 << 20);
        let bytes = encode(br#"{"jsonrpc":"2.0"}"#);
        assert_eq!(datas(p.feed(&bytes).unwrap()), vec![r#"{"jsonrpc":"2.0"}"#]);
    }
}
