//! [`CloseCause`]: every way the server ends a client's session, as a typed
//! value.
//!
//! The hub closes a client for its own reasons (it fell behind, its replies
//! piled up) and the gateway for the others (the client closed, broke the
//! protocol, timed out, lost its connection, the node drains). The queue
//! carries the cause to the client's writer, and metrics count by it. Which
//! WebSocket close code and reason text a cause is sent with is decided in one
//! place, by the gateway; nothing classifies a close by its text.

use std::time::Duration;

/// Why the server ends a client's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The session ended without a fault (the server stops reading it).
    Normal,
    /// The client sent a close frame with `code` (1005: none); the server
    /// answers it.
    ClientClosed {
        /// The code of the client's close frame.
        code: u16,
    },
    /// The client answered no ping within the idle timeout.
    IdleTimeout,
    /// The client broke the WebSocket protocol.
    Protocol(ProtocolViolation),
    /// The token the socket was opened with expired.
    TokenExpired,
    /// The client kept sending past its message rate limit.
    RateLimited,
    /// The client's oldest unsent frame is older than `max_lag`.
    SlowConsumer {
        /// The lag bound it passed.
        max_lag: Duration,
    },
    /// Unsent control replies piled up past their bound.
    ControlBacklog,
    /// The node is shutting down and drains its sockets.
    Restart,
    /// Reading from the socket failed, or the client went away.
    ConnectionLost,
    /// The client did not take the close frame within the close linger.
    CloseTimedOut,
    /// Writing to the socket failed.
    WriteFailed,
}

/// How a client broke the WebSocket protocol (RFC 6455, RFC 7692).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolViolation {
    /// A frame with reserved bits set that no extension gives a meaning.
    ReservedBits,
    /// A frame with an opcode RFC 6455 does not define.
    UnknownOpcode,
    /// RSV1 (compressed) on a frame other than a data message's first.
    MisplacedCompression,
    /// A client frame without a mask.
    Unmasked,
    /// A control frame that is fragmented or longer than 125 bytes.
    OversizedControl,
    /// A close frame whose payload is one byte.
    MalformedClose,
    /// A data frame starting a message before the previous one ended.
    UnfinishedMessage,
    /// A continuation frame with no message to continue.
    StrayContinuation,
    /// One frame longer than the node's message bound.
    FrameTooLarge,
    /// A message, reassembled from its frames, longer than the bound.
    MessageTooLarge,
    /// A compressed message that inflates past the bound.
    InflatedTooLarge,
    /// A compressed message that is not valid DEFLATE data.
    CorruptDeflate,
    /// A text message that is not valid UTF-8.
    InvalidUtf8,
}
