//! Which of a database's connections ran a statement, or is awaited.

/// Which connection ran a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// One of the read-only reader connections.
    Reader,
    /// The database's single writer connection.
    Writer,
}

impl Role {
    /// `"reader"` or `"writer"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
        }
    }
}
