//! The jail id: it names a directory and cgroups, so it must be a single plain path component.

/// Longest id accepted (as Firecracker's jailer).
pub const MAX_ID_LEN: usize = 64;

/// Why an id was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("--id is empty; give 1 to {MAX_ID_LEN} characters from [A-Za-z0-9-]")]
    Empty,
    #[error("--id is {len} characters long; at most {MAX_ID_LEN} are allowed")]
    TooLong { len: usize },
    #[error(
        "--id {id:?} has {ch:?} at position {pos}; only ASCII letters, digits and '-' are allowed \
         (the id becomes a directory and cgroup name)"
    )]
    BadChar { id: String, ch: char, pos: usize },
}

/// Checks that `id` is 1..=64 characters of `[A-Za-z0-9-]`: no `/`, `.`, `..` or anything else
/// that could make `<base>/<exec>/<id>` point somewhere else.
pub fn validate(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    let len = id.chars().count();
    if len > MAX_ID_LEN {
        return Err(IdError::TooLong { len });
    }
    if let Some((pos, ch)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(IdError::BadChar {
            id: id.to_string(),
            ch,
            pos,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        assert_eq!(validate("a"), Ok(()));
        assert_eq!(validate("vm-0123-ABC"), Ok(()));
        assert_eq!(validate(&"x".repeat(MAX_ID_LEN)), Ok(()));
    }

    #[test]
    fn refuses_path_tricks_and_bad_lengths() {
        assert_eq!(validate(""), Err(IdError::Empty));
        assert_eq!(
            validate(&"x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong {
                len: MAX_ID_LEN + 1
            })
        );
        for bad in ["../x", "..", ".", "a/b", "a b", "a\0b", "é", "a_b"] {
            assert!(
                matches!(validate(bad), Err(IdError::BadChar { .. })),
                "{bad:?} accepted"
            );
        }
        let err = validate("../x").unwrap_err().to_string();
        assert!(err.contains("'.'") && err.contains("\"../x\""), "{err}");
    }
}
