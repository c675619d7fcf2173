//! The UI's static files, compiled into the binary: our script and style sheet, and uPlot (one
//! pinned file with its licence, `assets/vendor/`). Nothing is fetched from elsewhere, at build
//! time or at run time.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// uPlot's version, in the file names so a new one is never taken from a browser's cache.
pub(crate) const UPLOT_VERSION: &str = "1.6.32";

/// (name, content type, bytes) of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
    (
        "uplot-1.6.32.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/vendor/uplot-1.6.32.min.js"),
    ),
    (
        "uplot-1.6.32.min.css",
        "text/css; charset=utf-8",
        include_str!("../assets/vendor/uplot-1.6.32.min.css"),
    ),
    (
        "uplot-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_str!("../assets/vendor/uplot-LICENSE"),
    ),
];

/// `GET /ui/assets/{file}`
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => {
            let mut response = (*body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_uplot_is_the_one_named() {
        let (_, _, js) = ASSETS
            .iter()
            .find(|(n, _, _)| n.starts_with("uplot") && n.ends_with(".js"))
            .unwrap();
        assert!(js.contains(&format!("(v{UPLOT_VERSION})")));
    }
}
