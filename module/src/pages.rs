//! The built-in error pages: the files of `html/`, compiled into the module so that a miss or
//! an unavailable table gets a clean page even without `error_page`.

const NOT_FOUND: &[u8] = include_bytes!("../../html/404.html");
const BAD_GATEWAY: &[u8] = include_bytes!("../../html/502.html");
const UNAVAILABLE: &[u8] = include_bytes!("../../html/503.html");
const GATEWAY_TIMEOUT: &[u8] = include_bytes!("../../html/504.html");

/// The page for `status`, if the module ships one.
pub fn page(status: u16) -> Option<&'static [u8]> {
    match status {
        404 => Some(NOT_FOUND),
        502 => Some(BAD_GATEWAY),
        503 => Some(UNAVAILABLE),
        504 => Some(GATEWAY_TIMEOUT),
        _ => None,
    }
}
