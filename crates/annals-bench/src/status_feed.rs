//! One open overview page of the admin UI, as `bench ui` holds it: a plain HTTP/1.1 connection
//! (hyper's client) that fetches the page (`GET /`) and then keeps `GET /status/live` open,
//! counting the server-sent `status` events and the consumer rows of the last one. Nothing of a
//! browser beyond that: no script runs, no asset or chart is fetched.

use std::pin::Pin;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::error::{BenchError, Context, ensure};

/// The longest line of the feed kept while waiting for its end (a snapshot is one line of JSON,
/// some 300 bytes per consumer).
const FEED_LINE_BYTES_MAX: usize = 16 << 20;

/// What one page got from the server.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PageSeen {
    /// Bytes of the page's HTML.
    pub(crate) page_bytes: u64,
    /// `status` events the feed delivered.
    pub(crate) status_events: u64,
    /// Consumer rows in the last `status` event.
    pub(crate) consumers: u64,
    /// The largest `lagEvents` of a consumer row in any `status` event.
    pub(crate) lag_events_max: u64,
    /// The sum of `lagEvents` over every consumer row of every `status` event, and those rows.
    pub(crate) lag_events_sum: u64,
    pub(crate) lag_rows: u64,
}

impl PageSeen {
    /// Adds what another page (or phase) saw; the last consumer count wins.
    pub(crate) fn add(&mut self, other: &PageSeen) {
        self.page_bytes += other.page_bytes;
        self.status_events += other.status_events;
        self.consumers = other.consumers;
        self.lag_events_max = self.lag_events_max.max(other.lag_events_max);
        self.lag_events_sum += other.lag_events_sum;
        self.lag_rows += other.lag_rows;
    }
}

/// Fetches the overview page from the server at `authority`, then holds its live feed open
/// until `stop` changes (or its sender goes).
pub(crate) async fn hold_page(
    authority: String,
    mut stop: watch::Receiver<bool>,
) -> Result<PageSeen, BenchError> {
    let (mut sender, driver) = http1(&authority).await?;
    let held = async {
        let mut seen = PageSeen::default();
        let mut page = get(&mut sender, &authority, "/").await?;
        while let Some(frame) = next_frame(&mut page, "the overview page").await? {
            if let Ok(data) = frame.into_data() {
                seen.page_bytes += data.len() as u64;
            }
        }
        let mut feed = get(&mut sender, &authority, "/status/live").await?;
        let mut lines = FeedLines::default();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                frame = next_frame(&mut feed, "the status feed") => {
                    let Some(frame) = frame? else {
                        return Err(BenchError::Check(
                            "the server ended the status feed".to_owned(),
                        ));
                    };
                    if let Ok(data) = frame.into_data() {
                        lines.push(&data, &mut seen)?;
                    }
                }
            }
        }
        Ok(seen)
    }
    .await;
    driver.abort();
    held
}

/// An HTTP/1.1 connection to `authority`, and the task driving it (abort it when done).
pub(crate) async fn http1(
    authority: &str,
) -> Result<
    (
        SendRequest<String>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    ),
    BenchError,
> {
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .context(|| format!("cannot reach the server at {authority}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)
            .context(|| format!("HTTP/1.1 handshake with {authority}"))?;
    Ok((sender, tokio::spawn(connection)))
}

/// Sends `GET path` and checks the answer is 200.
pub(crate) async fn get(
    sender: &mut SendRequest<String>,
    authority: &str,
    path: &str,
) -> Result<Incoming, BenchError> {
    sender
        .ready()
        .await
        .map_err(std::io::Error::other)
        .context(|| format!("the connection to {authority} closed"))?;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(String::new())
        .map_err(std::io::Error::other)
        .context(|| format!("building GET {path}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)
        .context(|| format!("GET {path} from {authority}"))?;
    ensure(response.status() == hyper::StatusCode::OK, || {
        format!("GET {path} answered {}", response.status())
    })?;
    Ok(response.into_body())
}

/// The next frame of `body`; `None` at its end.
pub(crate) async fn next_frame(
    body: &mut Incoming,
    what: &str,
) -> Result<Option<Frame<Bytes>>, BenchError> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .transpose()
        .map_err(std::io::Error::other)
        .context(|| format!("reading {what}"))
}

/// The feed's text split into lines, across frames.
#[derive(Debug, Default)]
struct FeedLines {
    partial: Vec<u8>,
    /// The lines since the last `event: status` belong to it (until a blank line).
    in_status: bool,
}

impl FeedLines {
    fn push(&mut self, data: &[u8], seen: &mut PageSeen) -> Result<(), BenchError> {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.line(line, seen)?;
        }
        ensure(self.partial.len() <= FEED_LINE_BYTES_MAX, || {
            format!("a status feed line longer than {FEED_LINE_BYTES_MAX} bytes")
        })
    }

    fn line(&mut self, line: &[u8], seen: &mut PageSeen) -> Result<(), BenchError> {
        if line == b"event: status" {
            seen.status_events += 1;
            self.in_status = true;
        } else if line.is_empty() {
            self.in_status = false;
        } else if let Some(data) = line.strip_prefix(b"data: ")
            && self.in_status
        {
            let snapshot: serde_json::Value = serde_json::from_slice(data)?;
            let rows = snapshot
                .get("consumers")
                .and_then(serde_json::Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            seen.consumers = rows.len() as u64;
            for row in rows {
                let lag = row
                    .get("lagEvents")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                seen.lag_events_max = seen.lag_events_max.max(lag);
                seen.lag_events_sum += lag;
                seen.lag_rows += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_events_are_counted_across_frames() {
        let mut lines = FeedLines::default();
        let mut seen = PageSeen::default();
        let text = b": keep-alive\n\nevent: status\ndata: {\"head\":1,\"consumers\":[{},{}]}\n\n\
                     event: status\r\ndata: {\"consumers\":[{\"lagEvents\":4},{},{\"lagEvents\":2}]}\r\n\r\n";
        for chunk in text.chunks(7) {
            lines.push(chunk, &mut seen).unwrap();
        }
        assert_eq!(seen.status_events, 2);
        assert_eq!(seen.consumers, 3);
        assert_eq!(
            (seen.lag_events_max, seen.lag_events_sum, seen.lag_rows),
            (4, 6, 5)
        );
        assert!(lines.partial.is_empty());
    }
}
