//! margayctl's library: talking to the daemons over their unix sockets, and rendering what they
//! say the way operators know it from calicoctl.

pub mod connect;
pub mod status;
