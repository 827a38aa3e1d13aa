//! WebSocket: the upgrade, RFC 6455 framing, and one task pair per socket.
//!
//! - [`handshake`]: validates the upgrade request and computes the accept key.
//! - [`frame`]: decodes client frames, encodes server frames.
//! - [`close`]: the close code and reason each way a session ends is sent with.
//! - [`deflate`]: permessage-deflate: the offer's answer, compressed server frames
//!   (made once per tick by the hub), inflation of client messages under the bound.
//! - [`reader`]: reassembles client messages under the size bound.
//! - [`connection`]: the per-socket reader (requests, limits) and writer (batched writes).
//! - [`recovery`]: how a subscribe opens each stream: the reply's positions, a replay
//!   from the client's `since` or the latest tick, with no gap or duplicate at the seam.
//! - [`socket`]: a TCP write half shared by the writer and the hub's direct writes.
//! - [`registry`]: every open socket, for pings, user pushes and the drain.
//! - [`upgrade`]: the axum handler for `GET /ws`.

pub mod close;
pub mod connection;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod reader;
pub mod recovery;
pub mod registry;
pub mod socket;
pub mod upgrade;
