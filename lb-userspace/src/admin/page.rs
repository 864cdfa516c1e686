//! The status page: one HTML file with its script and style inline, embedded in the binary,
//! so the admin API serves it without fetching anything from anywhere.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::server::respond;

/// The page's source (`page/index.html`).
pub const PAGE: &str = include_str!("page/index.html");

/// `GET /`: the page, which must not be framed (its buttons change the agent) and may talk
/// only to this origin.
pub fn page() -> Response<Full<Bytes>> {
    let mut response = respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_string());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "src=", "@import", "<link"] {
            assert!(!PAGE.contains(needle), "the page mentions {needle:?}");
        }
    }
}
