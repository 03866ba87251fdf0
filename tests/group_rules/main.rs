//! Group video call transmission control, rule by rule, on virtual time (issue 12): one file per
//! rule, each driving a [`TransmissionControlServer`] with the wire messages a client sends and reading back the
//! messages the server sends, byte for byte through the parser.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // the tests' own epoch

mod harness;

mod c9_cap;
mod cx2_two_transmitters;
mod emergency;
mod idle_retransmission;
mod late_joiner;
mod manual_reception;
mod preemption;
mod queueing;
mod receive_only;
mod send_only;
mod transmitter_leaves;
