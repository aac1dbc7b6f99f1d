//! The BGP-4 wire codec: message types, and their decoding (nom) and encoding (bytes).
//!
//! Everything here is pure: bytes in, values out, and back. The model types live in
//! [`message`], [`attrs`] and [`family`]; the codec for each message type lives in its own module.

pub mod attrs;
pub mod family;
pub mod message;

pub use attrs::*;
pub use family::*;
pub use message::*;
