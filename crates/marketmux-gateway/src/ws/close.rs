//! The WebSocket close code and reason each [`CloseCause`] is sent with:
//! the one place they are decided. Metrics count closes by the cause itself
//! ([`crate::metrics::CloseCounters`]), never by these texts.

use std::borrow::Cow;

use bytes::Bytes;
use marketmux_hub::{CloseCause, ProtocolViolation};

use super::frame;

/// The close code `cause` is sent with (1006, never on the wire by RFC
/// 6455, names a connection already gone).
pub fn code(cause: &CloseCause) -> u16 {
    match cause {
        CloseCause::Normal => 1000,
        CloseCause::ClientClosed { code } => frame::close_reply(*code),
        CloseCause::IdleTimeout => 1001,
        CloseCause::Protocol(violation) => violation_code(violation),
        CloseCause::TokenExpired
        | CloseCause::RateLimited
        | CloseCause::SlowConsumer { .. }
        | CloseCause::ControlBacklog => 1008,
        CloseCause::Restart => 1012,
        CloseCause::ConnectionLost | CloseCause::CloseTimedOut | CloseCause::WriteFailed => 1006,
    }
}

/// The close reason `cause` is sent with, for people.
pub fn reason(cause: &CloseCause) -> Cow<'static, str> {
    Cow::Borrowed(match cause {
        CloseCause::Normal | CloseCause::ClientClosed { .. } => "",
        CloseCause::IdleTimeout => "idle timeout: no pong",
        CloseCause::Protocol(violation) => violation_reason(violation),
        CloseCause::TokenExpired => "token expired",
        CloseCause::RateLimited => "rate limit exceeded",
        CloseCause::SlowConsumer { max_lag } => {
            return Cow::Owned(format!(
                "slow consumer: behind by more than {}s",
                max_lag.as_secs_f32()
            ))
        }
        CloseCause::ControlBacklog => "slow consumer: too many unread replies",
        CloseCause::Restart => "service restart",
        CloseCause::ConnectionLost => "connection lost",
        CloseCause::CloseTimedOut => "close timed out",
        CloseCause::WriteFailed => "write failed",
    })
}

/// The close frame for `cause`.
pub fn close_frame(cause: &CloseCause) -> Bytes {
    frame::close_frame(code(cause), &reason(cause))
}

fn violation_code(violation: &ProtocolViolation) -> u16 {
    use ProtocolViolation::*;
    match violation {
        ReservedBits | UnknownOpcode | MisplacedCompression | Unmasked | OversizedControl
        | MalformedClose | UnfinishedMessage | StrayContinuation => 1002,
        FrameTooLarge | MessageTooLarge | InflatedTooLarge => 1009,
        CorruptDeflate | InvalidUtf8 => 1007,
    }
}

fn violation_reason(violation: &ProtocolViolation) -> &'static str {
    use ProtocolViolation::*;
    match violation {
        ReservedBits => "reserved bits set",
        UnknownOpcode => "unknown opcode",
        MisplacedCompression => "RSV1 is only for the first frame of a data message",
        Unmasked => "client frames must be masked",
        OversizedControl => "control frames must be whole and at most 125 bytes",
        MalformedClose => "malformed close frame",
        UnfinishedMessage => "new message before the last one ended",
        StrayContinuation => "continuation without a message",
        FrameTooLarge => "frame too large",
        MessageTooLarge => "message too large",
        InflatedTooLarge => "message too large once inflated",
        CorruptDeflate => "compressed message is not valid DEFLATE data",
        InvalidUtf8 => "text frame is not valid UTF-8",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn wire(cause: CloseCause) -> (u16, String) {
        (code(&cause), reason(&cause).into_owned())
    }

    #[test]
    fn causes_keep_their_wire_codes_and_reasons() {
        let cases = [
            (CloseCause::Normal, 1000, ""),
            (CloseCause::ClientClosed { code: 1005 }, 1000, ""),
            (CloseCause::ClientClosed { code: 4001 }, 4001, ""),
            (CloseCause::ClientClosed { code: 1006 }, 1002, ""),
            (CloseCause::IdleTimeout, 1001, "idle timeout: no pong"),
            (CloseCause::TokenExpired, 1008, "token expired"),
            (CloseCause::RateLimited, 1008, "rate limit exceeded"),
            (
                CloseCause::SlowConsumer {
                    max_lag: Duration::from_millis(1500),
                },
                1008,
                "slow consumer: behind by more than 1.5s",
            ),
            (
                CloseCause::ControlBacklog,
                1008,
                "slow consumer: too many unread replies",
            ),
            (CloseCause::Restart, 1012, "service restart"),
            (CloseCause::ConnectionLost, 1006, "connection lost"),
            (
                CloseCause::Protocol(ProtocolViolation::FrameTooLarge),
                1009,
                "frame too large",
            ),
            (
                CloseCause::Protocol(ProtocolViolation::InvalidUtf8),
                1007,
                "text frame is not valid UTF-8",
            ),
            (
                CloseCause::Protocol(ProtocolViolation::Unmasked),
                1002,
                "client frames must be masked",
            ),
        ];
        for (cause, c, r) in cases {
            assert_eq!(wire(cause), (c, r.to_string()), "{cause:?}");
        }
        let f = close_frame(&CloseCause::Restart);
        assert_eq!(&f[..], b"\x88\x11\x03\xf4service restart");
    }
}
