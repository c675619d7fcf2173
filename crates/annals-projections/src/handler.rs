//! The handler contract: how an event becomes SQL statements and declared side effects.
//!
//! A [`Handler`] sees one event at a time, in per-stream order, and tells its
//! [`HandlerContext`] which statements to run and which effects to perform. The runtime runs the
//! statements in the partition's next transaction; it performs the effects only after that
//! transaction committed and only in [`Mode::Live`], so a rebuild or replay never calls a
//! webhook twice. Both declarative (SQL per event type) and Rust projections are handlers.
//!
//! Statement SQL names the projection's objects in braces (`{orders}`); the context resolves
//! them to the generation being written (`orders__g3`) with a cache, so a handler can pass the
//! same template for every event.

use std::collections::HashMap;
use std::sync::Arc;

use annals_core::EventRecord;

use crate::target::{Statement, Value, generation_object};

/// Whether the events a handler sees are new or history seen before.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// First time through: effects run after commit.
    Live,
    /// A rebuild, reset or replay: effects are suppressed.
    Replay,
}

/// A side effect a handler declares. Performed by an [`EffectSink`] after the batch commits,
/// in [`Mode::Live`] only.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Effect {
    /// An HTTP request (a webhook).
    Http {
        method: String,
        url: String,
        content_type: String,
        body: Vec<u8>,
    },
    /// An outgoing message to a broker subject or queue.
    Message { subject: String, payload: Vec<u8> },
}

/// Performs effects. The server provides one that makes HTTP calls; tests record.
pub trait EffectSink: Send + Sync + std::fmt::Debug {
    fn deliver(&self, projection: &str, effect: &Effect) -> Result<(), String>;
}

/// A handler refused or failed an event; the projection's error policy decides what follows.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// Turns `{name}` into `name__g{generation}` for every `name` in `objects`; other braces (JSON
/// literals, say) are left alone.
pub fn resolve_objects(sql: &str, objects: &[String], generation: u32) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        let (before, from_brace) = rest.split_at(open);
        out.push_str(before);
        let replaced = from_brace.find('}').and_then(|close| {
            let name = from_brace.get(1..close)?;
            objects
                .iter()
                .any(|o| o == name)
                .then(|| (generation_object(name, generation), close + 1))
        });
        match replaced {
            Some((real, used)) => {
                out.push_str(&real);
                rest = from_brace.get(used..).unwrap_or("");
            }
            None => {
                out.push('{');
                rest = from_brace.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

/// Resolves statement templates for one generation, once per distinct template.
#[derive(Debug)]
pub struct Resolver {
    objects: Arc<[String]>,
    generation: u32,
    cache: HashMap<Arc<str>, Arc<str>>,
}

/// Most distinct templates a resolver caches before it starts over (a handler that builds SQL
/// text per event would otherwise grow it without end).
pub const RESOLVER_CACHE_MAX: usize = 1_024;

impl Resolver {
    pub fn new(objects: Arc<[String]>, generation: u32) -> Self {
        Self {
            objects,
            generation,
            cache: HashMap::new(),
        }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn resolve(&mut self, template: &str) -> Arc<str> {
        if let Some(sql) = self.cache.get(template) {
            return sql.clone();
        }
        if self.cache.len() >= RESOLVER_CACHE_MAX {
            self.cache.clear();
        }
        let sql: Arc<str> = resolve_objects(template, &self.objects, self.generation).into();
        self.cache.insert(template.into(), sql.clone());
        sql
    }
}

/// What a handler may do with one event.
#[derive(Debug)]
pub struct HandlerContext<'a> {
    mode: Mode,
    resolver: &'a mut Resolver,
    statements: &'a mut Vec<Statement>,
    effects: &'a mut Vec<Effect>,
}

impl<'a> HandlerContext<'a> {
    pub fn new(
        mode: Mode,
        resolver: &'a mut Resolver,
        statements: &'a mut Vec<Statement>,
        effects: &'a mut Vec<Effect>,
    ) -> Self {
        Self {
            mode,
            resolver,
            statements,
            effects,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The generation this context writes (for handlers that name objects themselves).
    pub fn generation(&self) -> u32 {
        self.resolver.generation()
    }

    /// Runs `sql` (with `{object}` placeholders, `$1`… parameters) in this event's transaction.
    pub fn execute(&mut self, sql: &str, params: Vec<Value>) {
        let sql = self.resolver.resolve(sql);
        self.statements.push(Statement { sql, params });
    }

    /// Declares an effect; it runs after commit, and only in [`Mode::Live`].
    pub fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }
}

/// Turns events into statements. One instance per partition, so a handler may keep state; if it
/// does, [`Handler::snapshot`] and [`Handler::restore`] let the runtime save that state with the
/// checkpoint and resume from it.
pub trait Handler: Send {
    fn handle(
        &mut self,
        event: &EventRecord,
        ctx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError>;

    /// The handler's state to save with the checkpoint, if it keeps any.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Restores state saved by [`Handler::snapshot`] before resuming after it.
    fn restore(&mut self, _state: &[u8]) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_only_declared_objects() {
        let objects = vec!["orders".to_owned(), "orders_by_customer".to_owned()];
        let sql = "INSERT INTO {orders} (doc) VALUES ('{\"a\":1}') -- {other} {orders_by_customer}";
        assert_eq!(
            resolve_objects(sql, &objects, 3),
            "INSERT INTO orders__g3 (doc) VALUES ('{\"a\":1}') -- {other} orders_by_customer__g3"
        );
        assert_eq!(resolve_objects("{", &objects, 1), "{");
        assert_eq!(resolve_objects("{orders", &objects, 1), "{orders");
    }
}
