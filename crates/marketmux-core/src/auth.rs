//! Who a request is from, as established by the gateway's authentication.

/// The user id (the token's `sub`) of an authenticated request. The gateway
/// inserts it as a request extension when authentication is on; handlers that
/// act for a user (alerts) must use it instead of a `user_id` the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthenticatedUser(pub i64);
