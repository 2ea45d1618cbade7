//! What can be asked from Slack with the slash command, as values: the subcommands
//! that read (never change) a process — `status`, `tail`, `why` — by the names the
//! settings (`[actions] allowed`, `open_to_channel`) and the command use. The
//! command itself is [`crate::interact::command`].

use std::fmt;
use std::str::FromStr;

/// A subcommand of `/supervisor` that may be allowed or not (`help` always is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ask {
    /// Every matching process: host, state, since when, pid.
    Status,
    /// The last lines of a process's log: logs can hold secrets.
    Tail,
    /// The last crash of a process, as its failure reply recorded it.
    Why,
}

impl Ask {
    /// Every subcommand, in the order help lists them.
    pub const ALL: [Ask; 3] = [Ask::Status, Ask::Tail, Ask::Why];

    /// The name in settings and in the command.
    pub fn name(self) -> &'static str {
        match self {
            Ask::Status => "status",
            Ask::Tail => "tail",
            Ask::Why => "why",
        }
    }

    /// Who may by default, beyond `allow_users` / `allow_groups`: `status` is open
    /// to the members of the listener's channels; `tail` and `why` show log lines,
    /// which can hold secrets.
    pub fn open_by_default(self) -> bool {
        self == Ask::Status
    }
}

impl fmt::Display for Ask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Ask {
    type Err = ();
    fn from_str(s: &str) -> Result<Ask, ()> {
        Ask::ALL.into_iter().find(|a| a.name() == s).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_only_status_is_open_by_default() {
        for a in Ask::ALL {
            assert_eq!(a.name().parse::<Ask>(), Ok(a));
        }
        assert!("restart".parse::<Ask>().is_err());
        let open: Vec<Ask> = Ask::ALL.into_iter().filter(|a| a.open_by_default()).collect();
        assert_eq!(open, [Ask::Status]);
    }
}
