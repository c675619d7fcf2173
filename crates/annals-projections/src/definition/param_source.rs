//! Where a statement parameter's value comes from: [`ParamSource`], parsed from the text a
//! definition's `params` list holds (`stream`, `created`, `data.lines[0].sku`, …).
//!
//! Parsing happens when the file is compiled, so a path that cannot be followed is an error
//! that names the projection and the field, never a NULL discovered at run time.

/// Where a statement parameter's value comes from.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ParamSource {
    Stream,
    Category,
    Revision,
    Position,
    EventType,
    EventId,
    /// Unix milliseconds.
    CreatedMs,
    /// RFC 3339, UTC, microseconds.
    CreatedRfc3339,
    /// A value in the event's data (the whole document for an empty path).
    Data(Vec<PathStep>),
    /// A value in the event's metadata (the whole document for an empty path).
    Metadata(Vec<PathStep>),
}

/// One step into a JSON document.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

impl ParamSource {
    /// Parses `data.lines[0].sku` and the other sources named in the module doc.
    pub fn parse(text: &str) -> Result<ParamSource, String> {
        let simple = match text {
            "stream" => Some(ParamSource::Stream),
            "category" => Some(ParamSource::Category),
            "revision" => Some(ParamSource::Revision),
            "position" => Some(ParamSource::Position),
            "event_type" => Some(ParamSource::EventType),
            "event_id" => Some(ParamSource::EventId),
            "created" => Some(ParamSource::CreatedMs),
            "created_rfc3339" => Some(ParamSource::CreatedRfc3339),
            _ => None,
        };
        if let Some(source) = simple {
            return Ok(source);
        }
        let bad_path = |why: String| format!("bad path `{text}`: {why}");
        if let Some(rest) = text.strip_prefix("metadata") {
            return parse_path(rest)
                .map(ParamSource::Metadata)
                .map_err(bad_path);
        }
        if let Some(rest) = text.strip_prefix("data") {
            return parse_path(rest).map(ParamSource::Data).map_err(bad_path);
        }
        Err(format!(
            "unknown parameter source `{text}` (expected stream, category, revision, position, \
             event_type, event_id, created, created_rfc3339, data, data.<path>, metadata or \
             metadata.<path>)"
        ))
    }
}

/// Parses `.a.b[0][1].c` (the part after `data`/`metadata`).
fn parse_path(mut rest: &str) -> Result<Vec<PathStep>, String> {
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let (key, tail) = after.split_at(end);
            if key.is_empty() {
                return Err("empty key".to_owned());
            }
            if key.contains(']') {
                return Err(format!("`]` without `[` in key `{key}`"));
            }
            steps.push(PathStep::Key(key.to_owned()));
            rest = tail;
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').ok_or("`[` without `]`")?;
            let (digits, tail) = after.split_at(close);
            let index = digits
                .parse::<usize>()
                .map_err(|_| format!("`[{digits}]` is not an array index"))?;
            steps.push(PathStep::Index(index));
            rest = tail.get(1..).unwrap_or("");
        } else {
            return Err("expected `.key` or `[n]`".to_owned());
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(ParamSource::parse("data"), Ok(ParamSource::Data(vec![])));
        assert_eq!(
            ParamSource::parse("data.lines[0].sku"),
            Ok(ParamSource::Data(vec![
                PathStep::Key("lines".into()),
                PathStep::Index(0),
                PathStep::Key("sku".into())
            ]))
        );
        assert_eq!(
            ParamSource::parse("metadata[2][1]"),
            Ok(ParamSource::Metadata(vec![
                PathStep::Index(2),
                PathStep::Index(1)
            ]))
        );
        for bad in [
            "data.", "data..a", "data[x]", "data[1", "dataset", "streams", "data.a]",
        ] {
            assert!(ParamSource::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
