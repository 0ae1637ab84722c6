//! What the two browser front ends share (the admin dashboard,
//! `admin::dashboard`, and members' pages on the public listener, `web`):
//! the one stylesheet, the one script and the icon, embedded in the
//! binary, the page shell (`shell`) and the markup of the token sections
//! both show (`tokens`).
//! Below both so that neither imports the other; it knows nothing of
//! sessions or the store.

pub mod shell;
pub mod tokens;

/// The script of every page (no inline script: the CSP allows only this).
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");
/// An SVG icon served as a file (no inline content in pages).
pub const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1d3557"/><path d="M3 4h10M3 8h10M5 4v9M8 4v9M11 4v9" stroke="#f1faee" stroke-width="1.5"/></svg>"##;
