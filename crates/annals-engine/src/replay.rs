//! The fast replay of `$all`: borrowed event views handed to a visitor, read through one reused
//! buffer, with nothing allocated per event. Projections rebuilding from zero and other bulk
//! readers use it; [`Engine::read_all`] stays the owning, paged API.

use std::ops::ControlFlow;

use annals_core::{EventView, Position};
use annals_index::Index;
use annals_log::LogError;
use annals_log::codec::visit_events;

use crate::engine::Engine;
use crate::error::EngineError;

impl Engine {
    /// Calls `visit` with every event of `$all` from `from` (inclusive) to the head as it is now,
    /// in order, until `visit` breaks. Returns the position after the last event visited.
    pub fn replay_all(
        &self,
        from: Position,
        mut visit: impl FnMut(&EventView<'_>) -> ControlFlow<()>,
    ) -> Result<Position, EngineError> {
        let shared = &self.inner.shared;
        let head = shared.head.get();
        let from = from.max(Position(1));
        if from > head {
            return Ok(from);
        }
        let start = match shared.index.seek(from)? {
            Some(p) => p.address,
            None => shared.log.start_address(),
        };
        let mut next = from;
        let mut failure: Option<EngineError> = None;
        shared.log.visit_records(
            start,
            shared.log.readable_end(),
            |address, header, frame| {
                let first = header.first_position;
                let last = header.last_position();
                if first > head {
                    return ControlFlow::Break(());
                }
                if last < next {
                    return ControlFlow::Continue(());
                }
                let hi = last.min(head);
                let mut visited_to = next;
                let flow = visit_events(frame, header, (next, hi), &mut |e| {
                    visited_to = e.position.next();
                    visit(e)
                });
                match flow {
                    Ok(ControlFlow::Continue(())) => {
                        next = hi.next();
                        if hi == head {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    }
                    Ok(ControlFlow::Break(())) => {
                        next = visited_to;
                        ControlFlow::Break(())
                    }
                    Err(e) => {
                        failure = Some(
                            LogError::Corrupt {
                                file: "log".to_owned(),
                                offset: address,
                                reason: e.to_string(),
                            }
                            .into(),
                        );
                        ControlFlow::Break(())
                    }
                }
            },
        )?;
        match failure {
            Some(e) => Err(e),
            None => Ok(next),
        }
    }
}
