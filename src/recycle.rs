//! Why servers stop, in words for their users.

use std::fmt;

/// The reason a server was recycled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Idle { minutes: u64 },
    MaxAge { hours: u64 },
    Logout,
    Expired,
    Admin,
    OutOfMemory { limit: String },
    Crashed { exit_code: i64 },
    Restart,
    PasswordChange,
    Gone,
    Drain,
}

impl Reason {
    /// Short machine name, for logs and metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Idle { .. } => "idle",
            Reason::MaxAge { .. } => "max_age",
            Reason::Logout => "logout",
            Reason::Expired => "expired",
            Reason::Admin => "admin",
            Reason::OutOfMemory { .. } => "oom",
            Reason::Crashed { .. } => "crashed",
            Reason::Restart => "restart",
            Reason::PasswordChange => "password_change",
            Reason::Gone => "gone",
            Reason::Drain => "drain",
        }
    }

    /// Whether the user should be told on the next visit.
    pub fn worth_telling(&self) -> bool {
        !matches!(self, Reason::Logout | Reason::Restart | Reason::PasswordChange)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Idle { minutes } => {
                write!(f, "after {minutes} minute{} idle", if *minutes == 1 { "" } else { "s" })
            }
            Reason::MaxAge { hours } => write!(
                f,
                "after running for {hours} hour{}, the longest a server may run",
                if *hours == 1 { "" } else { "s" }
            ),
            Reason::Logout => f.write_str("when you logged out"),
            Reason::Expired => f.write_str("because your account expired"),
            Reason::Admin => f.write_str("by an organizer"),
            Reason::OutOfMemory { limit } => write!(f, "because it used all of its {limit} memory"),
            Reason::Crashed { exit_code } => write!(f, "because it crashed (exit code {exit_code})"),
            Reason::Restart => f.write_str("for a restart"),
            Reason::PasswordChange => f.write_str("for a password change"),
            Reason::Gone => f.write_str("because its container disappeared"),
            Reason::Drain => f.write_str("for an update by the organizers"),
        }
    }
}

/// "Your server stopped at 14:02 after 10 minutes idle."
pub fn sentence(reason: &str, stopped_at: i64) -> String {
    let when = chrono::DateTime::from_timestamp(stopped_at, 0)
        .map(|d| d.format("%H:%M UTC").to_string())
        .unwrap_or_default();
    format!("Your server stopped at {when} {reason}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_well() {
        assert_eq!(Reason::Idle { minutes: 10 }.to_string(), "after 10 minutes idle");
        assert_eq!(
            Reason::OutOfMemory { limit: "512m".into() }.to_string(),
            "because it used all of its 512m memory"
        );
        assert_eq!(
            sentence("after 1 minute idle", 0),
            "Your server stopped at 00:00 UTC after 1 minute idle."
        );
    }
}
