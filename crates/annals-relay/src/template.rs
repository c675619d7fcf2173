//! Subject and routing-key templates: `events.{category}.{event_type}` filled in per event.
//! What is put in is escaped so a name can never add a token or a wildcard: `.`, `*`, `>`
//! (NATS), `#` (AMQP topics), whitespace, control characters and `%` itself become `%XX`, so
//! two different names never make the same subject.

/// The placeholders a template may use.
const PLACEHOLDERS: [&str; 3] = ["stream", "category", "event_type"];

/// Which broker's special characters are escaped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Escape {
    NatsSubject,
    AmqpKey,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Part {
    Text(String),
    Stream,
    Category,
    EventType,
}

/// A parsed template.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Template {
    parts: Vec<Part>,
    escape: Escape,
    text: String,
}

impl Template {
    pub fn parse(text: &str, escape: Escape) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the template is empty".to_owned());
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let (before, after) = rest.split_at(open);
            if !before.is_empty() {
                parts.push(Part::Text(before.to_owned()));
            }
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{text}`: a `{{` is not closed"))?;
            let name = after.get(1..close).unwrap_or_default();
            parts.push(match name {
                "stream" => Part::Stream,
                "category" => Part::Category,
                "event_type" => Part::EventType,
                other => {
                    return Err(format!(
                        "`{text}`: `{{{other}}}` is not one of {}",
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                    ));
                }
            });
            rest = after.get(close + 1..).unwrap_or_default();
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts
            .iter()
            .any(|p| matches!(p, Part::Text(t) if t.contains('}')))
        {
            return Err(format!("`{text}`: a `}}` without its `{{`"));
        }
        Ok(Self {
            parts,
            escape,
            text: text.to_owned(),
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The template filled in for one event.
    pub fn render(&self, stream: &str, event_type: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + stream.len() + event_type.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Stream => escape_into(&mut out, stream, self.escape),
                Part::Category => {
                    escape_into(&mut out, annals_core::category_of(stream), self.escape);
                }
                Part::EventType => escape_into(&mut out, event_type, self.escape),
            }
        }
        out
    }

    /// The template with every placeholder token a wildcard: the subjects it can make, as a
    /// JetStream stream's subject filter (`events.*.*`; `>` from the first token that only
    /// partly is a placeholder).
    pub fn nats_filter(&self) -> String {
        let mut tokens: Vec<String> = Vec::new();
        for token in self.token_parts() {
            match token {
                TokenKind::Literal(t) => tokens.push(t),
                TokenKind::Whole => tokens.push("*".to_owned()),
                TokenKind::Partial => {
                    tokens.push(">".to_owned());
                    break;
                }
            }
        }
        tokens.join(".")
    }

    fn token_parts(&self) -> Vec<TokenKind> {
        // Rebuild the template with a marker for placeholders, then look at each token.
        let mut marked = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => marked.push_str(t),
                _ => marked.push('\u{0}'),
            }
        }
        marked
            .split('.')
            .map(|t| {
                if t == "\u{0}" {
                    TokenKind::Whole
                } else if t.contains('\u{0}') {
                    TokenKind::Partial
                } else {
                    TokenKind::Literal(t.to_owned())
                }
            })
            .collect()
    }
}

enum TokenKind {
    Literal(String),
    Whole,
    Partial,
}

fn escape_into(out: &mut String, value: &str, escape: Escape) {
    if value.is_empty() {
        // An empty token is not a valid subject; `%00` never comes from a real name.
        out.push_str("%00");
        return;
    }
    for c in value.chars() {
        let special = match c {
            '.' | '%' | '*' => true,
            '>' => escape == Escape::NatsSubject,
            '#' => escape == Escape::AmqpKey,
            c => c.is_whitespace() || c.is_control(),
        };
        if special {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_add_tokens_or_wildcards() {
        let t = Template::parse("events.{category}.{event_type}", Escape::NatsSubject).unwrap();
        assert_eq!(t.render("order-1", "Placed"), "events.order.Placed");
        assert_eq!(
            t.render("a.b*c>d e%-1", "x.>"),
            "events.a%2Eb%2Ac%3Ed%20e%25.x%2E%3E"
        );
        assert_eq!(t.render("-1", ""), "events.%00.%00");
        let k = Template::parse("{stream}", Escape::AmqpKey).unwrap();
        assert_eq!(k.render("a#b.c", "t"), "a%23b%2Ec");
        assert_eq!(t.nats_filter(), "events.*.*");
        let p = Template::parse("ev.x{stream}.y", Escape::NatsSubject).unwrap();
        assert_eq!(p.nats_filter(), "ev.>");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("a.{nope}", Escape::NatsSubject).is_err());
        assert!(Template::parse("a.{stream", Escape::NatsSubject).is_err());
        assert!(Template::parse("a.stream}", Escape::NatsSubject).is_err());
        assert!(Template::parse("", Escape::NatsSubject).is_err());
    }
}
