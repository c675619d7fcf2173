//! Secrets kept out of what a relay shows: URLs lose their user and password before they reach
//! status, logs or metrics.

/// `url` without its credentials (`amqp://user:secret@host/` → `amqp://host/`); unparsable
/// text is shown as `(invalid url)`.
pub(crate) fn url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(invalid url)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_dropped() {
        assert_eq!(
            super::url("amqp://guest:hunter2@127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(
            super::url("nats://tok@127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(super::url("::"), "(invalid url)");
    }
}
