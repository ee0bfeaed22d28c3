//! Sessions, cookies and cross-site request protection.

pub mod keys;
pub mod password;
pub mod session;
pub mod throttle;
pub mod xsrf;
