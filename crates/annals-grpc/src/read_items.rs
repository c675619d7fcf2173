//! What a read's task hands to its response ([`Batch`]: pages of events, shared pages of the
//! live tail, other responses) and the response stream that flattens them into one
//! [`ReadItem`] per event ([`ReadItems`]), each shared page's events encoded once for every
//! subscription that sends them ([`SharedEncodings`]).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use annals_core::{EventRecord, ResolvedEvent};
use annals_engine::{PageEvents, SharedPage};
use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

use crate::convert::{encode_read_event, read_event_len_hint, recorded_event};
use annals_proto::streams::{ReadResp, read_resp};

/// What the task answering a read hands to the response stream.
#[derive(Debug)]
pub(crate) enum Batch {
    /// Events to send in order, each as its own `ReadResp`.
    Events {
        events: Vec<EventRecord>,
        structured: bool,
    },
    /// Events of a page the engine shares between the subscriptions at the head: each is
    /// encoded once for all of them ([`SharedEncodings`]).
    Shared {
        events: PageEvents,
        structured: bool,
    },
    /// Events read through links, each sent with its link record (`resolve_links`).
    Resolved {
        events: Vec<ResolvedEvent>,
        structured: bool,
    },
    /// Any other response (boxed: rare, and much larger than a page of events' handle).
    Message(Box<ReadResp>),
}

/// One response of a read, before it is encoded.
#[derive(Debug)]
pub(crate) enum ReadItem {
    /// An event, with the UUID form the client asked for (structured or string).
    Event(EventRecord, bool),
    /// An event with the link record it was read through.
    Resolved(ResolvedEvent, bool),
    /// An event already encoded as a `ReadResp`.
    Encoded(Bytes),
    Message(Box<ReadResp>),
}

/// The `ReadResp` encodings of a shared page's events, in each UUID form, made on first use and
/// shared by every subscription that sends them.
struct SharedEncodings {
    string: Box<[OnceLock<Bytes>]>,
    structured: Box<[OnceLock<Bytes>]>,
}

impl SharedEncodings {
    fn new(events: &[EventRecord]) -> Self {
        let cells = || events.iter().map(|_| OnceLock::new()).collect();
        Self {
            string: cells(),
            structured: cells(),
        }
    }

    /// The encoding of the page's event `i`.
    fn get(&self, page: &SharedPage, i: usize, structured: bool) -> Option<Bytes> {
        let cells = if structured {
            &self.structured
        } else {
            &self.string
        };
        let e = page.events().get(i)?;
        let bytes = cells.get(i)?.get_or_init(|| {
            let mut buf = Vec::with_capacity(read_event_len_hint(e));
            encode_read_event(e, None, structured, &mut buf);
            Bytes::from(buf)
        });
        Some(bytes.clone())
    }
}

/// The events of a shared page still to send, with their encodings.
struct SharedCursor {
    page: Arc<SharedPage>,
    encodings: Arc<SharedEncodings>,
    indices: std::vec::IntoIter<u32>,
    structured: bool,
}

impl std::fmt::Debug for SharedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCursor")
            .field("left", &self.indices.len())
            .finish_non_exhaustive()
    }
}

impl ReadItem {
    /// The prost form of the response (the hand encoder in [`crate::convert`] skips it).
    pub(crate) fn into_message(self) -> ReadResp {
        match self {
            ReadItem::Event(e, structured) => ReadResp {
                content: Some(read_resp::Content::Event(recorded_event(
                    &e, None, structured,
                ))),
            },
            ReadItem::Resolved(r, structured) => ReadResp {
                content: Some(read_resp::Content::Event(recorded_event(
                    &r.event,
                    r.link.as_ref(),
                    structured,
                ))),
            },
            ReadItem::Encoded(bytes) => {
                <ReadResp as prost::Message>::decode(bytes).unwrap_or_default()
            }
            ReadItem::Message(m) => *m,
        }
    }
}

/// The responses of one read, one per event, from the batches its task sends.
#[derive(Debug)]
pub(crate) struct ReadItems {
    rx: mpsc::Receiver<Result<Batch, Status>>,
    /// Why the task ended the read, when the client was too slow: the last answer.
    too_slow: Arc<parking_lot::Mutex<Option<Status>>>,
    events: std::vec::IntoIter<EventRecord>,
    resolved: std::vec::IntoIter<ResolvedEvent>,
    shared: Option<SharedCursor>,
    structured: bool,
}

impl ReadItems {
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<Batch, Status>>,
        too_slow: Arc<parking_lot::Mutex<Option<Status>>>,
    ) -> Self {
        Self {
            rx,
            too_slow,
            events: Vec::new().into_iter(),
            resolved: Vec::new().into_iter(),
            shared: None,
            structured: false,
        }
    }
}

impl futures::Stream for ReadItems {
    type Item = Result<ReadItem, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(e) = this.events.next() {
                return Poll::Ready(Some(Ok(ReadItem::Event(e, this.structured))));
            }
            if let Some(r) = this.resolved.next() {
                return Poll::Ready(Some(Ok(ReadItem::Resolved(r, this.structured))));
            }
            if let Some(c) = &mut this.shared {
                if let Some(i) = c.indices.next() {
                    if let Some(bytes) = c.encodings.get(&c.page, i as usize, c.structured) {
                        return Poll::Ready(Some(Ok(ReadItem::Encoded(bytes))));
                    }
                    continue;
                }
                this.shared = None;
            }
            match std::task::ready!(this.rx.poll_recv(cx)) {
                Some(Ok(Batch::Events { events, structured })) => {
                    this.events = events.into_iter();
                    this.structured = structured;
                }
                Some(Ok(Batch::Shared { events, structured })) => match events.into_shared() {
                    Ok((page, indices)) => {
                        this.shared = Some(SharedCursor {
                            encodings: page.cache(SharedEncodings::new),
                            page,
                            indices: indices.into_iter(),
                            structured,
                        });
                    }
                    Err(events) => {
                        this.events = events.into_iter();
                        this.structured = structured;
                    }
                },
                Some(Ok(Batch::Resolved { events, structured })) => {
                    this.resolved = events.into_iter();
                    this.structured = structured;
                }
                Some(Ok(Batch::Message(m))) => return Poll::Ready(Some(Ok(ReadItem::Message(m)))),
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None => return Poll::Ready(this.too_slow.lock().take().map(Err)),
            }
        }
    }
}
